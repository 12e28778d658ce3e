"""Runs a study's steps in order, or several at once in worker processes as their inputs finish
(the local engine; :mod:`~keras_advseg.workflows.ray_engine` runs the same steps as Ray tasks).

TensorFlow keeps about one of two CPU cores busy while it trains or attacks a 32^3 UNet at batch
1 (user time / wall time 1.1-1.2 on the development machine), so independent steps (another
model's training, evaluation, certificates) run side by side in ``workers`` processes. Each
worker is a fresh (spawned) interpreter; a step is a picklable function and its keyword
arguments. A step's result is the files it writes, so running it in a worker changes nothing
it computes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from keras_advseg.data.parallel import die_with_parent

STOP_WAIT_S = 60.0
"""How long an interrupted study waits for its running steps to end their runs before killing
them."""


def _start_worker(quiet: bool) -> None:
    """A worker's set-up: it dies with the study, and imports TensorFlow as quietly as the study
    does (it inherits the log level the study set, which would otherwise read as the user's).
    Between steps it ignores Ctrl-C (a terminal sends it to every process of the study; the
    study stops its workers itself) and SIGTERM (an idle worker has nothing to stop)."""
    import signal
    import sys

    import keras_advseg

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if quiet and "tensorflow" not in sys.modules:
        keras_advseg.quiet_tensorflow_import()


def _run_in_worker(run: Callable, kwargs: dict):
    """A step in a worker. The SIGTERM that stops it (the study interrupted) ends it as an
    interrupt: its MLflow run KILLED, its temporaries removed, also where a library turned the
    KeyboardInterrupt into another error; a second SIGTERM does not cut that short."""
    import signal

    from keras_advseg.interrupts import SignalRecord, interrupt_on_error

    with SignalRecord((signal.SIGTERM,), once=True), interrupt_on_error():
        return run(**kwargs)


@dataclass
class Step:
    """One step of a plan.

    Attributes:
        name: Its name in the plan (and in ``progress.json``).
        run: A picklable function (module level), called as ``run(**kwargs)``; None: nothing
            to run (a step that only marks a point of the plan).
        kwargs: Its arguments (picklable).
        after: Names of the steps whose output it reads.
        inline: Runs in the study's own process under the local engine, even with several
            workers (it starts its own processes, as synthesis and preparation do, or writes
            a report of the study's progress).
        cpus: The CPU cores it keeps busy (its own processes), which a Ray cluster reserves.
        accelerated: It runs a model (training, attacks, certificates): on a Ray cluster with
            GPUs it asks for a share of one.
        late: Called by the study's process when the step starts, for arguments known only
            then (the timings of the steps before it); merged into ``kwargs``.
        reads: Files it reads that the study wrote before it: a Ray worker that cannot see
            one fails at once, naming its node and the path.
    """

    name: str
    run: Callable | None
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    inline: bool = False
    cpus: int = 1
    accelerated: bool = False
    late: Callable[[], dict] | None = None
    reads: tuple = ()

    def arguments(self) -> dict:
        """Its keyword arguments, with those :attr:`late` gives now."""
        return {**self.kwargs, **(self.late() if self.late is not None else {})}


def check_order(steps: list[Step]) -> None:
    """Each step may only name earlier steps in ``after``.

    Raises:
        ValueError: a step names a step that is not before it.
    """
    seen: set[str] = set()
    for step in steps:
        unknown = [a for a in step.after if a not in seen]
        if unknown:
            raise ValueError(f"step {step.name!r} comes after {unknown}, not before it")
        seen.add(step.name)


def run_steps(steps: list[Step], progress, workers: int = 1) -> None:
    """Runs every step not done before, each after the steps it reads.

    Args:
        steps: In plan order; a step may only name earlier steps in ``after``.
        progress: The study's progress record (``is_done``, ``begin``, ``end``).
        workers: 1 runs the steps here, one after the other, in plan order; more runs up to
            that many at once in spawned processes, the earliest ready step of the plan first.

    Raises:
        ValueError: a step names a step that is not before it.
        Exception: what a step raised (the steps still running are waited for first; none is
            started after it). An interrupt (KeyboardInterrupt, or SIGTERM where the command
            turns it into one) terminates the running steps' processes and is re-raised.
    """
    check_order(steps)
    if workers <= 1:
        for step in steps:
            if progress.is_done(step.name):
                progress.skipped(step.name)
                continue
            started = progress.begin(step.name)
            if step.run is not None:
                step.run(**step.arguments())
            progress.end(step.name, started)
        return
    import keras_advseg

    context = multiprocessing.get_context("spawn")
    quiet = not keras_advseg.TF_LOG_LEVEL_SET_BY_USER
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(quiet,)
    )
    running: dict = {}
    try:
        _schedule(steps, progress, workers, pool, running)
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): stop the running steps now rather than wait for them;
        # finished steps are recorded and a re-run continues from there
        from keras_advseg.interrupts import ignored

        with ignored():  # a second Ctrl-C does not cut the clean-up short
            _stop(pool, running)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor, running: dict) -> None:
    """Stops the running steps: each worker takes a SIGTERM as an interrupt (its MLflow run
    ends KILLED, its temporaries go; an idle worker ignores it); the workers are killed if a
    step has not ended within :data:`STOP_WAIT_S`."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    wait(list(running), timeout=STOP_WAIT_S)
    if not all(future.done() for future in running):
        for process in processes:
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _schedule(
    steps: list[Step], progress, workers: int, pool: ProcessPoolExecutor, running: dict
) -> None:
    """Submits each step once the steps it reads have finished, ``workers`` at a time, keeping
    the futures of those running in ``running``; an inline step runs here, in its turn."""
    from keras_advseg.interrupts import interrupt_on_error

    finished: set[str] = set()
    pending = list(steps)
    failure = None
    while pending or running:
        ran_here = False
        for step in take_ready(pending, finished, progress, workers - len(running), failure):
            started = progress.begin(step.name)
            if not step.inline:
                future = pool.submit(_run_in_worker, step.run, step.arguments())
                running[future] = (step, started)
                continue
            try:
                with interrupt_on_error():  # an interrupt stops the running steps at once
                    step.run(**step.arguments())
            except Exception as exc:  # as a worker's failure: the running steps finish first
                failure = exc
                break
            progress.end(step.name, started)
            finished.add(step.name)
            ran_here = True
        if not running:
            if ran_here and failure is None:  # what it made ready starts now
                continue
            break  # nothing left to start, or a step failed
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            step, started = running.pop(future)
            error = future.exception()
            if error is not None:
                failure = failure or error
                continue
            progress.end(step.name, started)
            finished.add(step.name)
    if failure is not None:
        raise failure


def take_ready(
    pending: list[Step], finished: set[str], progress, room: int, failure=None
) -> list[Step]:
    """Takes from ``pending``, in plan order, the steps whose inputs have all finished: a step
    done before is recorded as skipped and one with nothing to run as done (both join
    ``finished``, which may make later steps ready in the same pass); returns the others, at
    most ``room`` (none once ``failure`` is set), for the caller to begin and run."""
    taken: list[Step] = []
    for step in list(pending):
        if failure is not None or len(taken) >= room:
            break
        if not all(a in finished for a in step.after):
            continue
        pending.remove(step)
        if progress.is_done(step.name):
            progress.skipped(step.name)
            finished.add(step.name)
            continue
        if step.run is None:
            progress.end(step.name, progress.begin(step.name))
            finished.add(step.name)
            continue
        taken.append(step)
    return taken
