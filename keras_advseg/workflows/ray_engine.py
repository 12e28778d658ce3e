"""Runs a study's steps as Ray tasks (``advseg reproduce --engine ray``): on a local Ray cluster
started on this machine, or on a running cluster the study joins.

The plan, its dependencies and ``progress.json`` stay the study's own: this process (the
driver) submits each step once the steps it reads have finished, records each finished step
and says which node ran it. Ray only places the tasks: a step that runs a model asks for a
GPU (or a share of one) on a cluster with GPUs and for a CPU core otherwise; synthesis and
preparation ask for the cores their processes use. A step that holds a GPU runs in a fresh
worker process (``max_calls=1``: TensorFlow does not give GPU memory back); the others reuse
Ray's workers as the local engine reuses its processes (a fresh process would import
TensorFlow again, some 7 s of CPU per step). What a step computes does not depend on where it
ran; its output goes to ``OUT/logs/<step>.log``.

A task whose worker dies (killed, out of memory, its node lost) is submitted again, at most
:attr:`RayEngine.max_retries` times, each retry said; the MLflow runs it left RUNNING are marked
FAILED and its temporaries removed. A step that raises stops the study with its error, as under
the local engine. Ctrl-C cancels the running tasks, which end their MLflow runs and remove
their temporaries as an interrupted command does.

Network: a local cluster, and a cluster joined at a loopback address, keep every port on the
loopback interface. Ray replaces a loopback node address by the machine's own address unless
its single-machine switch ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set (Ray's default on
macOS and Windows); the engine sets it, while it is connected, for those cases only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from keras_advseg.errors import ClusterError, InputError
from keras_advseg.interrupts import SignalRecord, ignored, interrupt_on_error
from keras_advseg.workflows.scheduler import STOP_WAIT_S

SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch between a node address reachable from other machines (``1``, Linux's default)
and the loopback address (``0``)."""


CHECK_WAIT_S = 120.0
"""How long the start waits for each node to answer the shared-folder check."""

FORWARDED_PREFIXES = ("MLFLOW_", "TF_", "KERAS_")
"""Environment variables of the driver that every step gets on any cluster: the tracking
server's credentials and TensorFlow's and Keras's settings (a local cluster's workers inherit
the whole environment anyway)."""

INSTALL_HINT = 'pip install "keras-advseg[cluster]"'


def require_ray():
    """Ray, imported.

    Raises:
        InputError: Ray is not installed (one line that says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise InputError(
            f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (None: a local cluster; ``auto``; ``HOST:PORT``) stays on this
    machine's loopback interface. ``auto`` is read from the address Ray recorded for the
    cluster running on this machine."""
    if address is None:
        return True
    if address == "auto":
        address = _recorded_address()
        if address is None:
            return False
    return _is_loopback_host(address.rsplit(":", 1)[0].strip("[]"))


def _is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _recorded_address() -> str | None:
    """The ``HOST:PORT`` of the cluster ``ray start`` last started on this machine, if any."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # another Ray layout: treat the cluster as remote
        return None
    return read_ray_address()


@contextlib.contextmanager
def on_loopback():
    """Keeps the Ray nodes this process starts, and the workers they start, on 127.0.0.1
    while it lasts; restores the switch afterwards.

    Ray reads its switch when it is imported: in a process that imported Ray before, the
    switch's value is set in Ray's constants as well (the one place this module reaches into
    Ray's private modules).
    """
    before = os.environ.get(SINGLE_MACHINE_SWITCH)
    constants = sys.modules.get("ray._private.ray_constants")
    had = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_MACHINE_SWITCH] = "0"
    if had is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SINGLE_MACHINE_SWITCH, None)
        else:
            os.environ[SINGLE_MACHINE_SWITCH] = before
        if had is not None:
            constants.ENABLE_RAY_CLUSTER = had


def step_log_name(step: str) -> str:
    """The file name of a step's log: its name with every run of other characters as ``-``."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", step).strip("-") + ".log"


def is_machine_local_store(uri: str) -> bool:
    """Whether ``uri`` is a tracking store only this machine can use: a local file (SQLite, a
    file store), or a server or database at a loopback address."""
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return True
    return _is_loopback_host(urlparse(uri).hostname)


@dataclass(frozen=True)
class RayEngine:
    """Where and how the study's steps run on Ray.

    Attributes:
        address: None starts a local cluster on this machine (every port on 127.0.0.1);
            ``auto`` joins the cluster started on this machine (``ray start --head``);
            ``HOST:PORT`` joins that cluster's head (the driver runs on one of its nodes;
            Ray Client's ``ray://`` addresses are refused).
        gpus_per_step: The GPUs each model step asks for on a cluster with GPUs (0.5 packs
            two steps on one GPU; 0: every step on CPUs); None: 1.
        max_retries: Times a step whose worker died is submitted again (``--retries``).
    """

    address: str | None = None
    gpus_per_step: float | None = None
    max_retries: int = 2

    def __post_init__(self):
        require_ray()  # before any work of the study
        if self.address is not None and self.address.startswith("ray://"):
            raise InputError(
                f"--ray-address {self.address}: run the study on a node of the cluster and pass "
                "the head's HOST:PORT (or auto); Ray Client (ray://) is not supported"
            )
        if self.gpus_per_step is not None and not 0 <= self.gpus_per_step <= 1:
            raise InputError(f"--gpus-per-step must be in [0, 1]. Received: {self.gpus_per_step}")
        if self.max_retries < 0:
            raise InputError(f"--retries must be >= 0. Received: {self.max_retries}")

    @contextlib.contextmanager
    def connected(self, out: Path, tracking_uri: str, experiment: str):
        """Starts or joins the cluster, checks it can run the study in ``out`` (its runs in
        ``experiment`` of the store ``tracking_uri``), and yields the
        :class:`RayCluster` that runs its steps; leaves the cluster (a local one stops).

        Raises:
            InputError: a tracking store only this machine can use, on a cluster of several
                nodes.
            ClusterError: the cluster cannot be started or joined, or a node cannot see
                ``out``.
        """
        ray = require_ray()
        with on_loopback() if is_loopback(self.address) else contextlib.nullcontext():
            options = dict(
                logging_level="WARNING",
                log_to_driver=False,  # each step's output is in its own log
                namespace="advseg",
            )
            if self.address is None:
                options.update(
                    address="local", _node_ip_address="127.0.0.1", include_dashboard=None
                )
            else:
                options.update(address=self.address)
            try:
                context = ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                where = "a local Ray cluster" if self.address is None else self.address
                option = "--engine ray" if self.address is None else "--ray-address"
                raise ClusterError(
                    f"{option}: cannot start or join {where} ({_first_line(exc)})"
                ) from None
            try:
                cluster = RayCluster(self, ray, Path(out), tracking_uri, experiment)
                dashboard = getattr(context, "dashboard_url", None)
                line = cluster.describe() + (
                    f"; dashboard: http://{dashboard}" if dashboard else ""
                )
                _say(line)
                yield cluster
            finally:
                ray.shutdown()


class RayCluster:
    """A cluster the study runs on: its nodes checked, and the runner of its steps."""

    def __init__(self, engine: RayEngine, ray, out: Path, tracking_uri: str, experiment: str):
        self.engine, self.ray, self.out = engine, ray, out
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.nodes = [node for node in ray.nodes() if node.get("Alive")]
        resources = [node.get("Resources", {}) for node in self.nodes]
        self.gpus = sum(r.get("GPU", 0) for r in resources)
        self.largest_cpus = max((int(r.get("CPU", 1)) for r in resources), default=1)
        # a step holding a GPU must fit the cores of a node with a GPU
        with_gpus = [int(r.get("CPU", 1)) for r in resources if r.get("GPU", 0) > 0]
        self.largest_gpu_node_cpus = max(with_gpus, default=self.largest_cpus)
        if len(self.nodes) > 1 and is_machine_local_store(tracking_uri):
            raise InputError(
                f"--tracking-uri {tracking_uri}: a store on this machine cannot be shared by "
                f"the {len(self.nodes)} nodes of this cluster; start a tracking server with a "
                "database (mlflow server --backend-store-uri postgresql://... --host 0.0.0.0 "
                "--port 5000) and pass --tracking-uri http://SERVER:5000"
            )
        forwarded = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(FORWARDED_PREFIXES) and key != "TF_CONFIG"  # no multi-worker role
        }
        # steps with and without a GPU get different environments, so that Ray never hands a
        # worker that imported TensorFlow without a GPU to a step that holds one
        self.environments = {
            True: {**forwarded, "TF_FORCE_GPU_ALLOW_GROWTH": "true"},  # steps sharing a GPU
            False: {**forwarded, "CUDA_VISIBLE_DEVICES": ""} if self.gpus else forwarded,
        }
        self._check_shared_folder()

    def describe(self) -> str:
        cpus = sum(int(n.get("Resources", {}).get("CPU", 0)) for n in self.nodes)
        gpus = f", {self.gpus:g} GPUs" if self.gpus else ", no GPU"
        plural = "s" if len(self.nodes) != 1 else ""
        return f"Ray cluster: {len(self.nodes)} node{plural}, {cpus} CPUs{gpus}"

    def _check_shared_folder(self) -> None:
        """Every node must see the study's folder: a file written here is read on each.

        Raises:
            ClusterError: naming the first node that cannot (or does not answer), and the
                folder.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(8)
        marker = _write_marker(self.out, token)
        try:
            check = self.ray.remote(_sees)
            refs = {
                check.options(
                    num_cpus=0,
                    max_retries=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                ).remote(str(self.out / marker.name), token): node
                for node in self.nodes
            }
            for ref, node in refs.items():
                name = _node_name(node["NodeManagerAddress"], node["NodeID"])
                try:
                    seen = self.ray.get(ref, timeout=CHECK_WAIT_S)
                except self.ray.exceptions.GetTimeoutError:
                    raise ClusterError(
                        f"node {name} did not answer within {CHECK_WAIT_S:.0f} s"
                    ) from None
                except self.ray.exceptions.RayError as exc:
                    raise ClusterError(
                        f"node {name} cannot run the study's steps ({_first_line(exc)}); "
                        "keras-advseg must be installed on every node"
                    ) from None
                if not seen:
                    raise ClusterError(
                        f"node {name} cannot see the study folder {self.out}: it must be on "
                        "storage every node mounts at the same path"
                    )
        finally:
            marker.unlink(missing_ok=True)

    def _options(self, step) -> dict:
        """The resources ``step`` asks for (:class:`~keras_advseg.workflows.scheduler.Step`)."""
        gpus = self.engine.gpus_per_step
        gpus = 1.0 if gpus is None else gpus
        accelerated = step.accelerated and self.gpus > 0 and gpus > 0
        largest = self.largest_gpu_node_cpus if accelerated else self.largest_cpus
        return dict(
            num_cpus=max(1, min(step.cpus, largest)),
            num_gpus=gpus if accelerated else 0,
            max_retries=0,  # the driver retries a dead worker itself, and says so
            name=step.name,
            runtime_env={"env_vars": self.environments[accelerated]},
        )

    def run_steps(self, steps: list, progress) -> None:
        """Runs every step not done before as a Ray task, each after the steps it reads.

        Args:
            steps: In plan order (:class:`~keras_advseg.workflows.scheduler.Step`).
            progress: The study's progress record (``is_done``, ``skipped``, ``begin``,
                ``end``).

        Raises:
            ValueError: a step names a step that is not before it.
            ClusterError: a step's worker died more than ``max_retries`` times (naming the
                step and its log).
            Exception: what a step raised (the running steps are waited for first; none is
                started after it). An interrupt cancels the running steps and is re-raised.
        """
        from keras_advseg.workflows.scheduler import check_order, take_ready

        check_order(steps)
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        # a step holding a GPU runs in a fresh worker process (TensorFlow keeps the GPU memory
        # it took until its process ends); the others reuse workers, as the local engine's
        # processes do, and import TensorFlow once per worker instead of once per step
        tasks = {True: self.ray.remote(max_calls=1)(run_step), False: self.ray.remote(run_step)}
        finished: set[str] = set()
        pending, running = list(steps), {}
        failure = None
        # Ray's waits can drop the KeyboardInterrupt of a Ctrl-C or SIGTERM: the record keeps
        # it, and the loop raises it again
        with SignalRecord() as interrupt:
            try:
                while pending or running:
                    for step in take_ready(pending, finished, progress, len(steps), failure):
                        progress.begin(step.name, "submitted")
                        running[self._submit(tasks, step, logs, 1)] = (step, 1)
                    if not running:
                        break
                    ready, _ = self.ray.wait(list(running), num_returns=1, timeout=1.0)
                    for ref in ready:
                        step, attempt = running.pop(ref)
                        outcome = self._outcome(ref, step, attempt, logs, failure is None)
                        if isinstance(outcome, BaseException):
                            failure = failure or outcome
                        elif outcome is None:  # its worker died: once more
                            running[self._submit(tasks, step, logs, attempt + 1)] = (
                                step,
                                attempt + 1,
                            )
                        else:
                            where = _node_name(outcome["node"], outcome["node_id"])
                            progress.end(step.name, time.time() - outcome["seconds"], where=where)
                            finished.add(step.name)
                    interrupt.check()  # after recording what finished in this wait
                interrupt.check()
            except BaseException:
                self._cancel(running)
                raise
        if failure is not None:
            raise failure

    def _submit(self, tasks: dict, step, logs: Path, attempt: int):
        log = logs / step_log_name(step.name)
        options = self._options(step)
        return (
            tasks[options["num_gpus"] > 0]
            .options(**options)
            .remote(
                step.run,
                step.arguments(),
                name=step.name,
                study=str(self.out),
                log=str(log),
                reads=[str(self.out / "study.json"), *map(str, step.reads)],
                attempt=attempt,
            )
        )

    def _outcome(self, ref, step, attempt: int, logs: Path, may_retry: bool):
        """What the task of ``ref`` returned; None: its worker died and it runs again; an
        exception: the step failed."""
        exceptions = self.ray.exceptions
        log = logs / step_log_name(step.name)
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:  # the step raised: as under the local engine
            _say(f"    {step.name}: failed; its log: {log}")
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, BaseException) else exc
        except exceptions.TaskCancelledError as exc:
            return exc
        except exceptions.RayError as exc:  # the worker or its node died
            self._clean_up_after(step)
            if may_retry and attempt <= self.engine.max_retries:
                _say(
                    f"    {step.name}: its worker died ({_first_line(exc)}); "
                    f"retry {attempt} of {self.engine.max_retries} (log: {log})"
                )
                return None
            return ClusterError(
                f"step {step.name!r} failed {attempt} times, its worker lost each time "
                f"({type(exc).__name__}); its log: {log}"
            )

    def _clean_up_after(self, step) -> None:
        """What a dead worker left: its MLflow runs RUNNING (marked FAILED) and the
        temporaries of the files it was writing in the step's own output folder."""
        from keras_advseg.io import remove_temporaries
        from keras_advseg.tracking import end_orphaned_runs

        for key in ("out", "model_dir"):  # a step's own folder; shared caches are left alone
            if isinstance(step.kwargs.get(key), (str, Path)):
                remove_temporaries(step.kwargs[key])
        try:
            ended = end_orphaned_runs(self.tracking_uri, self.experiment, step.name, str(self.out))
        except Exception as exc:  # the store failed too: the study goes on, the runs stay
            _say(f"    {step.name}: its runs could not be ended ({type(exc).__name__})")
            return
        if ended:
            plural = "s" if ended != 1 else ""
            _say(f"    {step.name}: {ended} run{plural} it left running marked FAILED")

    def _cancel(self, running: dict) -> None:
        """Cancels the running steps (a KeyboardInterrupt in each: it ends its MLflow run as
        KILLED and removes its temporaries), waits for them, then kills what is left and
        cleans up after it. A second Ctrl-C (or SIGTERM) does not cut this short."""
        refs = list(running)
        if not refs:
            return
        with ignored():
            plural = "s" if len(refs) != 1 else ""
            _say(f"stopping {len(refs)} running step{plural} (at most {STOP_WAIT_S:.0f} s)")
            for ref in refs:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=False)
            deadline = time.monotonic() + STOP_WAIT_S
            waiting = refs
            while waiting and time.monotonic() < deadline:
                _, waiting = self.ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
            for ref in waiting:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
            for ref in waiting:
                self._clean_up_after(running[ref][0])


def run_step(
    run, kwargs: dict, *, name: str, study: str, log: str, reads: list[str], attempt: int
) -> dict:
    """One step, in a Ray worker: its output (and a traceback if it fails) to ``log``; the
    paths it ``reads`` checked first; its MLflow runs tagged with the study and the step.

    Returns:
        ``node`` (its address), ``node_id``, ``pid`` and ``seconds`` (its run time).

    Raises:
        ClusterError: this node cannot see a path of ``reads`` (naming the node and the path).
        Exception: what the step raised.
    """
    import traceback

    import ray

    from keras_advseg.tracking import STUDY_DIR_VARIABLE, STUDY_STEP_VARIABLE

    started = time.time()
    os.environ[STUDY_STEP_VARIABLE], os.environ[STUDY_DIR_VARIABLE] = name, study
    node = ray.util.get_node_ip_address()
    node_id = ray.get_runtime_context().get_node_id()
    _to_log(log)
    print(
        f"== {name}: attempt {attempt} on node {_node_name(node, node_id)}, pid {os.getpid()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
        flush=True,
    )
    for path in reads:
        if not Path(path).exists():
            raise ClusterError(
                f"node {_node_name(node, node_id)} cannot see {path}: the study folder must be "
                "on storage every node mounts at the same path"
            )
    import keras_advseg

    if "tensorflow" not in sys.modules and not keras_advseg.TF_LOG_LEVEL_SET_BY_USER:
        keras_advseg.quiet_tensorflow_import()
    try:
        # Ray cancels a task with a simulated SIGINT: what the step raises after it is the
        # interruption, whatever a library made of it on the way
        with SignalRecord((signal.SIGINT,), once=True), interrupt_on_error():
            run(**kwargs)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        raise
    print(f"== {name}: done in {time.time() - started:.0f} s", flush=True)
    return {"node": node, "node_id": node_id, "pid": os.getpid(), "seconds": time.time() - started}


def _to_log(path: str) -> None:
    """Sends this process's standard output and error (TensorFlow's C++ logs too) to ``path``,
    appended: a retried step's attempts follow each other."""
    sys.stdout.flush()
    sys.stderr.flush()
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)


def _write_marker(folder: Path, token: str) -> Path:
    """A file in ``folder`` holding ``token``, which every node must read."""
    marker = folder / f".advseg-shared-{token}"
    marker.write_text(token)
    return marker


def _sees(marker: str, token: str) -> bool:
    """Whether this node reads ``token`` in ``marker``."""
    try:
        return Path(marker).read_text() == token
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _node_name(address: str, node_id: str) -> str:
    return f"{address} ({node_id[:8]})"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
