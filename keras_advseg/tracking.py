"""MLflow tracking: where runs go, failing early when the server is unreachable.

Default store: an embedded SQLite file in the working directory
(``sqlite:///mlflow.db``), overridable with ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` (any MLflow tracking server over HTTP works).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

from keras_advseg import interrupts
from keras_advseg.config import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI
from keras_advseg.errors import InputError, TrackingError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "TrackingError",
    "check_reachable",
    "environment_tags",
    "git_commit",
    "is_run_id",
    "resolve_model_path",
    "resolve_tracking_uri",
    "tracked_run",
]

RUN_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
"""An MLflow run id."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""One try, ten seconds at most: for a question the work does not wait on."""


def check_reachable(uri: str) -> None:
    """Fails fast, before any work, when the tracking store cannot be reached.

    Raises:
        TrackingError: the server does not answer or the store cannot be opened.
    """
    from mlflow.tracking import MlflowClient

    _check_sqlite_writable(uri)
    try:
        # creating and migrating a new SQLite store is not concurrency-safe
        with environ_values(QUICK_HTTP), store_lock(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a dead server
        reason = str(exc).splitlines()[0][:200]
        raise TrackingError(
            f"MLflow tracking store {uri} is unreachable ({type(exc).__name__}: {reason})"
        ) from None
    finally:
        # every later call of this process to the store waits a bounded time when it fails
        bound_http_waits()


@contextlib.contextmanager
def environ_values(values: dict[str, str]):
    """Environment variables set to ``values`` inside the block, as they were after it (an
    unset one unset again)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict | None = None,
):
    """Opens (or resumes, with ``run_id``) an MLflow run; a crash marks it FAILED.

    Inside a run the caller opened (``mlflow.models.evaluate`` running the ``advseg``
    evaluator, a notebook's ``with mlflow.start_run()``), the new run nests under that one
    instead of under the model's training run (``mlflow.parentRunId`` in ``tags``); the
    caller's run must then be in the same store and experiment, and the caller's experiment
    is left untagged.

    Yields:
        The active ``mlflow.ActiveRun``.

    Raises:
        TrackingError: the store fails, or a caller's run is active in another store or
            experiment.
    """
    from mlflow.exceptions import MlflowException

    import mlflow

    check_reachable(uri)
    bound_http_waits()
    outer = mlflow.active_run()
    nested = run_id is None and outer is not None
    if nested:
        _check_nesting(outer, uri, experiment)
    mlflow.set_tracking_uri(uri)
    try:
        if not nested:
            # two processes creating the same experiment at once would collide
            with store_lock(uri):
                found = mlflow.set_experiment(experiment)
                if EXPERIMENT_KIND_TAG not in found.tags:
                    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        tags = {**environment_tags(), **(tags or {})}
        if nested:
            tags.pop("mlflow.parentRunId", None)  # the caller's run is the parent
        run = mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else run_name,
            tags=tags,
            nested=nested,
            experiment_id=outer.info.experiment_id if nested else None,
        )
    except MlflowException as exc:
        raise _failed(uri, exc) from None
    try:
        yield run
    except KeyboardInterrupt:
        _end_run("KILLED")
        raise
    except BaseException as exc:
        if interrupts.received() is not None:  # what an interrupt became in a library
            _end_run("KILLED")
            raise
        _end_run("FAILED")
        if isinstance(exc, MlflowException):  # the store failed during the work
            raise _failed(uri, exc) from None
        raise
    else:
        try:
            mlflow.end_run(status="FINISHED")
        except MlflowException as exc:
            raise _failed(uri, exc) from None


HTTP_WAITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""Bounds on how long one call to a failing tracking server may wait: 3 retries after 1,
2 and 4 s (MLflow's defaults, 7 retries at factor 2 with 120 s timeouts, keep a command
silent for many minutes). A value the user set wins."""


def bound_http_waits() -> None:
    """Sets :data:`HTTP_WAITS` for this process, except what the user set."""
    for key, value in HTTP_WAITS.items():
        os.environ.setdefault(key, value)


def _check_nesting(outer, uri: str, experiment: str) -> None:
    """A run nests under the caller's active run ``outer`` only in the same store and
    experiment (MLflow would file it elsewhere, under a parent it cannot show).

    Raises:
        TrackingError: another store or experiment, in one line.
    """
    import mlflow

    current = resolve_tracking_uri(mlflow.get_tracking_uri())
    if resolve_tracking_uri(uri) != current:
        raise TrackingError(
            f"MLflow run {outer.info.run_id} is active in the tracking store {current}; a run "
            f"in {uri} cannot nest under it: end it, or use that store"
        )
    found = mlflow.get_experiment(outer.info.experiment_id)
    if found.name != experiment:
        raise TrackingError(
            f"MLflow run {outer.info.run_id} is active in experiment {found.name!r}; a run in "
            f"experiment {experiment!r} cannot nest under it: end it, or use that experiment"
        )


@contextlib.contextmanager
def no_active_model():
    """Inside the block, no MLflow logged model is active: metrics logged without a model id
    stay the run's (``mlflow.models.evaluate`` makes the evaluated model active, and MLflow
    would link every metric logged meanwhile to it); the caller's active model after it."""
    from mlflow.tracking import fluent

    import mlflow

    context = getattr(fluent, "_ACTIVE_MODEL_CONTEXT", None)
    saved = context.get() if context is not None else None
    mlflow.clear_active_model()
    try:
        yield
    finally:
        if saved is not None:
            context.set(saved)


def _end_run(status: str) -> None:
    """Ends the active run with ``status``; a store that fails now cannot hide the cause."""
    import mlflow

    try:
        mlflow.end_run(status=status)
    except Exception:  # the original exception is the one to report
        pass


def _failed(uri: str, exc: BaseException) -> TrackingError:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return TrackingError(f"MLflow tracking store {uri} failed: {reason}")


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's experiment kind for model training: the UI opens such experiments on the runs table."""


UI_HOST, UI_PORT = "127.0.0.1", 5000


def absolute_uri(uri: str) -> str:
    """A ``sqlite:///`` URI with an absolute path (a report may be read from any folder);
    other URIs unchanged."""
    path = sqlite_path(uri)
    return uri if path is None else f"sqlite:///{path.resolve()}"


def ui_command(uri: str, host: str = UI_HOST, port: int = UI_PORT) -> str:
    """The command that serves the MLflow UI on ``uri``'s store (a server is its own UI)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')} in a browser"
    return f"mlflow ui --backend-store-uri {absolute_uri(uri)} --host {host} --port {port}"


def experiment_address(
    uri: str, experiment: str, host: str = UI_HOST, port: int = UI_PORT
) -> str | None:
    """The address that opens ``experiment``'s runs table in the MLflow UI's model-training view.

    MLflow 3 opens an experiment in its GenAI view (traces) unless the address says
    ``workflowType=machine_learning``; the experiment's kind tag does not change that.

    Returns:
        ``http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning``
        (the tracking server's own address for an http(s) store), or None when the
        experiment does not exist.
    """
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://{host}:{port}"
    return f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


def ui_lines(uri: str, experiment: str) -> list[str]:
    """Two lines for a report or the CLI: how to start the UI and the address of the runs."""
    address = experiment_address(uri, experiment)
    lines = [f"MLflow experiment `{experiment}` in `{absolute_uri(uri)}`: `{ui_command(uri)}`"]
    if address is not None:
        lines.append(f"then open {address}")
    return lines


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock on the folder of a SQLite store (none for other stores).

    ``flock`` on the folder itself: no lock file is left behind, and the lock is
    released when the process dies.
    """
    path = sqlite_path(uri)
    if path is None or os.name != "posix":
        yield
        return
    import fcntl

    folder = path.parent if str(path.parent) else Path(".")
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _check_sqlite_writable(uri: str) -> None:
    """A SQLite store must be a writable file in a writable folder (MLflow writes beside it).

    Raises:
        TrackingError: naming the file or folder.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist")
    if path.exists() and (not path.is_file() or not os.access(path, os.R_OK | os.W_OK)):
        raise TrackingError(f"MLflow tracking store {uri}: {path} is not a writable file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable")


def environment_tags() -> dict[str, str]:
    """What a result depends on besides code, data and seed: the machine and its kernels.

    Op determinism makes one machine repeat itself bit for bit; another CPU, or oneDNN's
    kernels switched on or off (``TF_ENABLE_ONEDNN_OPTS``), gives other floating-point
    sums, so every run records these. TensorFlow's version and devices are recorded when
    the process has imported it (this function does not import it).
    """
    import platform
    import sys

    tags = {
        "env.cpu": cpu_model(),
        "env.cores": str(os.cpu_count()),
        "env.onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
        "env.python": platform.python_version(),
    }
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        tags["env.tensorflow"] = tf.__version__
        tags["env.gpus"] = str(len(tf.config.list_physical_devices("GPU")))
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "__version__"):
        tags["env.keras"] = keras.__version__
    step = os.environ.get(STUDY_STEP_VARIABLE)
    if step:  # a study's step on a Ray cluster: the driver finds its runs if the worker dies
        tags[STUDY_STEP_TAG] = step
        tags[STUDY_DIR_TAG] = os.environ.get(STUDY_DIR_VARIABLE, "")
        tags["env.node"] = platform.node()
    return tags


STUDY_STEP_VARIABLE = "ADVSEG_STUDY_STEP"
"""Set by :mod:`~keras_advseg.workflows.ray_engine` in the worker that runs a study's step."""

STUDY_STEP_TAG = "study.step"
"""The tag of every run a study's step opens on a Ray cluster (its name in the plan)."""

STUDY_DIR_VARIABLE, STUDY_DIR_TAG = "ADVSEG_STUDY_DIR", "study.dir"
"""The study's folder, beside the step: studies in one experiment have steps of one name."""


def end_orphaned_runs(uri: str, experiment: str, step: str, study: str) -> int:
    """Marks FAILED the runs the step ``step`` of the study in the folder ``study`` left RUNNING
    when its worker died (another study's runs in the experiment are left alone).

    Returns:
        How many runs it ended.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with environ_values(QUICK_HTTP):  # a store that does not answer fails at once
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return 0
        running = client.search_runs(
            [found.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )
        runs = [
            run
            for run in running
            if run.data.tags.get(STUDY_STEP_TAG) == step
            and run.data.tags.get(STUDY_DIR_TAG) == study
        ]
        for run in runs:
            client.set_terminated(run.info.run_id, "FAILED")
    return len(runs)


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_run_id(text: str | None) -> bool:
    """Whether ``text`` is an MLflow run id (32 hexadecimal digits)."""
    return bool(text) and RUN_ID_PATTERN.fullmatch(text) is not None


def git_commit(path: str | Path = ".") -> str | None:
    """The git commit of ``path``'s checkout, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolve_model_path(reference: str, tracking_uri: str | None = None) -> Path:
    """A local ``.keras`` file for a path, an MLflow run id, or a ``runs:/RUN_ID/PATH`` URI.

    A run id means that run's ``model.keras`` artifact (what ``advseg train`` logs).

    Raises:
        ValueError: the reference is neither an existing file nor a run/artifact
            the tracking store has.
    """
    path = Path(reference)
    if path.is_file():
        return path
    if is_run_id(reference):
        reference = f"runs:/{reference}/model.keras"
    if not reference.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        raise InputError(f"{reference}: no such model file, and not an MLflow run id or runs:/ URI")
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(reference))
    except Exception as exc:  # MLflow raises several types for missing runs/artifacts
        raise InputError(
            f"{reference}: cannot fetch the model from {uri} ({str(exc).splitlines()[0][:160]})"
        ) from None
