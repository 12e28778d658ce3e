"""The frame of every scored workflow: one MLflow run around the work, its files written atomically.

``advseg evaluate``, ``evaluate --corruptions``, ``certify``, ``audit`` and ``card`` each score a
model and record the score the same way: check early that the output folder is writable and the
tracking store answers, open a run nested under the model's training run where this store has
it (copying its comparison tags), log the settings, write each output under a temporary name
and rename it into place, log the outputs and the metrics, and close the run FINISHED, or
FAILED on an error and KILLED on an interrupt (then no output is logged)::

    out = ready(out, tracking_uri)                    # before any expensive work
    source, parent = lineage(model_ref, model_path, tracking_uri)
    with scored_run(tracking_uri, experiment, run_name="certify",
                    tags={"certification": "true", **parent}, params={"n": 100}) as run:
        rows = ...                                   # the work
        run.write_text(out / "certified.csv", csv_text)
        run.write_json(out / "certify_summary.json", summary)
        run.keep(figures.certified_figure(..., out / "fig_certified.png"))
        run.log_metrics({"certified_dice_wt_sigma0.25": 0.71})
    # here every kept file is logged as an artifact and the run is FINISHED
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from keras_advseg.config import TRAINING_TAGS
from keras_advseg.io import (
    FileFormatError,
    ensure_writable_folder,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "Lineage",
    "ScoredRun",
    "lineage",
    "ready",
    "scored_run",
    "source_run_id",
    "summary_head",
]


def ready(out, tracking_uri: str, inputs: dict | None = None) -> Path:
    """Fails fast, before any work: ``out`` holds no input and lies in no input folder, is
    created and writable, and the store answers.

    Args:
        out: The output folder.
        tracking_uri: The MLflow store.
        inputs: The command's inputs, ``{what: path}`` (the model, the data, a reference).

    Returns:
        ``out`` as a path.

    Raises:
        InputError: ``out`` holds an input. OSError: naming the folder. TrackingError: the
        store is unreachable.
    """
    from keras_advseg.tracking import check_reachable

    out = ensure_writable_folder(out, inputs)
    check_reachable(tracking_uri)
    return out


@dataclass
class ScoredRun:
    """The open run of a scored workflow (what :func:`scored_run` yields).

    Attributes:
        run: The active ``mlflow.ActiveRun``.
        tags: The tags it was opened with (the workflow's and its lineage's).
        written: The files kept so far, logged as artifacts when the block succeeds.
    """

    run: object
    tags: dict
    written: list[Path] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def keep(self, path) -> Path:
        """Records a file already written (a figure) to be logged; returns it as a path."""
        path = Path(path)
        self.written.append(path)
        return path

    def write_text(self, path, text: str) -> Path:
        """Writes ``text`` to ``path`` atomically and keeps it."""
        return self.keep(write_text_atomic(path, text))

    def write_json(self, path, value, **kwargs) -> Path:
        """Writes ``value`` as indented JSON to ``path`` atomically and keeps it (``kwargs``: as
        :func:`json.dumps`, e.g. ``default=float``)."""
        return self.keep(write_json_atomic(path, value, **kwargs))

    def log_params(self, params: dict) -> None:
        import mlflow

        mlflow.log_params(params)

    def log_metrics(self, metrics: dict) -> None:
        import mlflow

        mlflow.log_metrics(metrics)

    def log_series(self, series: dict) -> None:
        """Logs ``{name: [(step, value), ...]}`` as stepped metrics."""
        import mlflow

        for name, points in series.items():
            for step, value in points:
                mlflow.log_metric(name, value, step=step)

    def set_tags(self, tags: dict) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_folder(self, folder, artifact_path: str) -> None:
        """Logs every file of ``folder`` under ``artifact_path`` now."""
        import mlflow

        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


@contextlib.contextmanager
def scored_run(
    tracking_uri: str,
    experiment: str,
    *,
    run_name: str,
    tags: dict,
    params: dict | None = None,
) -> Iterator[ScoredRun]:
    """Opens the workflow's MLflow run, logs ``params``; on success logs the kept files and
    closes it FINISHED, on an error FAILED, on an interrupt KILLED (nothing is logged then).

    Args:
        tracking_uri, experiment, run_name: Where the run goes and its name.
        tags: Its tags; with :func:`lineage`'s ``mlflow.parentRunId`` it nests under the
            model's training run.
        params: Logged as the run opens.

    Yields:
        The :class:`ScoredRun`.

    Raises:
        TrackingError: the store is unreachable or fails during the work.
    """
    import mlflow
    from keras_advseg.tracking import tracked_run

    with tracked_run(tracking_uri, experiment, run_name=run_name, tags=tags) as run:
        scored = ScoredRun(run, dict(tags))
        if params:
            scored.log_params(params)
        yield scored
        for path in scored.written:
            mlflow.log_artifact(str(path))


def summary_head(model_ref, source: str | None, run: ScoredRun, split: str) -> dict:
    """The keys an evaluation's summary starts with, in this order: the model, the training run
    it came from (or None), this run and the split scored."""
    return {
        "model": str(model_ref),
        "source_run_id": source,
        "evaluation_run_id": run.run_id,
        "split": split,
    }


class Lineage(NamedTuple):
    """The training run a model came from, and the tags that nest a run under it."""

    source: str | None
    tags: dict


def lineage(model_ref, model_path, tracking_uri: str) -> Lineage:
    """The training run a model came from and the tags that nest a run under it.

    Returns:
        ``(source run id or None, tags)``: ``source_run_id`` and the training run's own tags,
        and ``mlflow.parentRunId`` only when the run is in this tracking store (a model trained
        against another store keeps its run id, and MLflow refuses a parent it cannot find).
    """
    source = source_run_id(str(model_ref), Path(model_path))
    if not source:
        return Lineage(None, {})
    copied = source_tags(source, tracking_uri)
    tags = {"source_run_id": source, **copied}
    if copied or _run_exists(source, tracking_uri):
        tags["mlflow.parentRunId"] = source
    return Lineage(source, tags)


def source_run_id(reference: str, path: Path) -> str | None:
    """The training run a model came from: the run id in the reference, or its training folder's checkpoint."""
    from keras_advseg.tracking import RUN_ID_PATTERN, is_run_id
    from keras_advseg.training import read_state

    match = RUN_ID_PATTERN.search(reference) if not Path(reference).is_file() else None
    if match:
        return match.group(0)
    try:
        state = read_state(path.parent)
    except FileFormatError:
        return None
    run_id = state and state.get("run_id")
    return run_id if isinstance(run_id, str) and is_run_id(run_id) else None


def source_tags(run_id: str, tracking_uri: str) -> dict:
    """Copies the training run's comparison tags (defense, model, temperature, adv_eps) when it exists."""
    from mlflow.tracking import MlflowClient

    try:
        tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    except Exception:  # the training run may live in another store
        return {}
    return {k: tags[k] for k in TRAINING_TAGS if k in tags}


def _run_exists(run_id: str, tracking_uri: str) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception:  # not in this store (or the store cannot say)
        return False
    return True
