"""The training workflow (``advseg train``): a tracked, resumable, distributable run.

Opens the data, resolves model references (files, MLflow run ids), wraps
:func:`keras_advseg.training.fit` in an MLflow run and logs its parameters,
per-epoch metrics and artifacts.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import keras
import tensorflow as tf

from keras_advseg.config import TrainConfig
from keras_advseg.data.prepare import open_prepared
from keras_advseg.export import load_model
from keras_advseg.io import ensure_writable_folder, refuse_inputs_in_output
from keras_advseg.training import (
    CheckpointExists,
    TrainingError,
    TrainResult,
    fit,
    make_strategy,
    read_state,
    worker_role,
)
from keras_advseg.training.checkpoint import mark_finished, state_config


def train(
    config: TrainConfig,
    data: str | Path,
    out: str | Path,
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    resume: bool = False,
    verbose: int = 2,
) -> TrainResult:
    """Trains ``config`` on ``data`` into ``out`` inside an MLflow run.

    Outputs in ``out``: ``model.keras`` (best by mean validation Dice),
    ``last.keras``, ``checkpoint/`` (last epoch's weights and state), and for
    distillation ``teacher.keras`` and ``soft_labels/``.

    Args:
        config: The run (ignored when resuming: the checkpoint's own is used).
        data: A prepared cache, or a raw dataset (prepared into ``out/prepared``).
        out: Output folder.
        tracking_uri, experiment: Where the MLflow run goes.
        run_name: MLflow run name.
        resume: Continue the interrupted run in ``out``.
        verbose: Keras ``fit`` verbosity.

    Returns:
        A :class:`~keras_advseg.training.TrainResult`.

    Raises:
        DataError: bad data. TrainingError: non-finite loss or a bad resume.
        TrackingError: the tracking store is unreachable (before training).
    """
    import mlflow
    from keras_advseg.tracking import check_reachable, git_commit, tracked_run

    out = Path(out)
    inputs = {"data": data, "--init model": config.init, "--teacher model": config.teacher}
    refuse_inputs_in_output(out, inputs)  # every worker, with the --out it was given
    state = read_state(out)
    if state is not None and not resume:
        raise CheckpointExists(out)
    if resume and state is None:
        raise TrainingError(
            f"{out}: no checkpoint to resume (expected {out / 'checkpoint' / 'state.json'})"
        )
    if resume and state.get("finished"):
        raise TrainingError(f"{out}: that run already finished")
    if resume:
        config = state_config(state, out)
    strategy = make_strategy(
        config.strategy
    )  # before any other TensorFlow work (multi-worker needs it)
    chief, role = worker_role(config.strategy)
    if not chief:  # other workers keep their files and runs apart from the chief's
        out = out / "workers" / role
        out.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    check_reachable(tracking_uri)  # before any work, and before anything is written
    ensure_writable_folder(out)
    prepared = open_prepared(data, out / "prepared", config.shape, seed=config.seed)
    tags = config.tags()
    commit = git_commit(Path(__file__).parent)
    if commit:
        tags["git_commit"] = commit
    with tracked_run(
        tracking_uri, experiment, run_name=run_name, run_id=state and state.get("run_id"), tags=tags
    ) as run:
        if not resume:
            mlflow.log_params(
                {**asdict(config), "data_hash": prepared.data_hash, "data_root": str(prepared.root)}
            )
        result = fit(
            config,
            prepared,
            out,
            run_id=run.info.run_id,
            state=state,
            log_epoch=EpochMetrics(tracking_uri, run.info.run_id),
            load=model_loader(tracking_uri),
            verbose=verbose,
            strategy=strategy,
            finish=False,
        )
        if result.stopped:
            mlflow.set_tag("stopped", result.stopped)
            print(result.stopped, file=sys.stderr, flush=True)
        mlflow.log_artifact(str(result.model_path))
        mlflow.log_artifact(str(result.last_path))
        _log_model(result.model_path)
        # finished only now: an interruption after the last epoch but before the run recorded
        # its model leaves a run that --resume completes (it trains no epoch again)
        mark_finished(out)
        return result


def model_loader(tracking_uri: str):
    """Loads a model reference: a ``.keras`` file, an MLflow run id or a ``runs:/`` URI."""
    from keras_advseg.tracking import resolve_model_path

    def load(reference: str) -> keras.Model:
        return load_model(resolve_model_path(reference, tracking_uri))

    return load


class EpochMetrics:
    """Logs an epoch's metrics to the MLflow run, each (metric, epoch) once.

    A run interrupted after an epoch's metrics were logged but before its
    checkpoint was committed repeats that epoch on resume (with the same
    values: training is deterministic); the metrics already in the run's
    history are not logged twice.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._last: dict[str, int] = {}

    def last_step(self, key: str) -> int:
        """The last epoch logged for ``key`` (0: none)."""
        if key not in self._last:
            from mlflow.tracking import MlflowClient

            history = MlflowClient(self.tracking_uri).get_metric_history(self.run_id, key)
            self._last[key] = max((m.step for m in history), default=0)
        return self._last[key]

    def __call__(self, metrics: dict, step: int) -> None:
        import mlflow

        fresh = {k: v for k, v in metrics.items() if step > self.last_step(k)}
        if fresh:
            mlflow.log_metrics(fresh, step=step, run_id=self.run_id)
            self._last.update(dict.fromkeys(fresh, step))


def _log_model(path: Path) -> None:
    """Logs the model in MLflow's Keras flavour (loadable with ``mlflow.keras.load_model``), with its signature."""
    import mlflow

    model = load_model(path)
    mlflow.keras.log_model(
        model,
        name="model",
        signature=model_signature(model),
        pip_requirements=[
            "keras-advseg",
            f"keras=={keras.__version__}",
            f"tensorflow=={tf.__version__}",
        ],
    )


def model_signature(model: keras.Model):
    """MLflow's signature of a deployable model: a float32 batch of volumes in, logits out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from keras_advseg.export import input_shape

    per_sample = input_shape(model)  # a slice-wise 2-D model takes volumes of any depth
    inner = getattr(model, "slice_model", model)
    inputs = (-1,) + tuple(-1 if d is None else int(d) for d in per_sample)
    outputs = inputs[:-1] + (int(inner.output_shape[-1]),)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), inputs, "image")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), outputs, "logits")]),
    )
