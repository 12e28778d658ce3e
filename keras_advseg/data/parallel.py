"""Runs independent work items with a progress bar, in processes when asked."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm


def die_with_parent() -> None:
    """Asks the kernel to kill this worker process when its parent dies (Linux), whatever signal
    the parent got: a SIGKILLed parent cannot shut its pool down, and orphans would keep working."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the request took effect
            os._exit(1)


def _clean_start():
    """Worker processes that do not inherit this process's threads: started afresh (``spawn``),
    as children of this process, so that they still die with it. A plain fork copies the state
    of thread pools without their threads (OpenMP's, which FINUFFT uses for motion), and the
    first parallel region in the child then waits for them forever; a ``forkserver``'s workers
    are the server's children and outlive a killed parent."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


def capped_workers(asked: int, items: int) -> tuple[int, str | None]:
    """The processes worth starting for ``items`` work items: at most one per item and one per
    CPU core this process may use, and at least 1.

    Returns:
        The number, and a line saying why it is fewer than ``asked`` (None when it is not).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    used = max(1, min(asked, items, cores))
    if used >= asked:
        return used, None
    return used, (
        f"{used} worker process{'es' if used != 1 else ''}, not {asked}: "
        f"{items} item{'s' if items != 1 else ''} to do on {cores} CPU core{'s' if cores != 1 else ''}"
    )


def progress_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int = 1,
    desc: str = "",
    disable: bool | None = None,
) -> Iterator[Any]:
    """Applies ``fn`` to every item and yields the results as they finish.

    Args:
        fn: A picklable function of one argument (the workers start afresh and import it).
        items: Work items.
        workers: Processes to use, at most one per item and per CPU core
            (:func:`capped_workers`, said on stderr when fewer); 1 runs in this process.
        desc: Progress-bar label.
        disable: Hide the progress bar (None: hide when not on a terminal).

    Returns:
        An iterator of results, in completion order for ``workers > 1``.

    Raises:
        ValueError: ``workers < 1``.
        Exception: whatever ``fn`` raises, re-raised in the caller.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1. Received: workers={workers}")
    items = list(items)
    workers, note = capped_workers(workers, len(items))
    if note and disable is not True:
        tqdm.write(f"{desc or 'workers'}: {note}", file=sys.stderr)
    with tqdm(total=len(items), desc=desc, unit="subject", disable=disable) as bar:
        if workers == 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        with ProcessPoolExecutor(
            max_workers=workers, initializer=die_with_parent, mp_context=_clean_start()
        ) as pool:
            futures = [pool.submit(fn, item) for item in items]
            try:
                for future in as_completed(futures):
                    yield future.result()
                    bar.update()
            finally:
                for future in futures:
                    future.cancel()
