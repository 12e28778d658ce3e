"""The training checkpoint: the sole owner of ``OUT/checkpoint/state.json``.

``checkpoint/last.weights.h5`` holds the last finished epoch's full training
state (weights and optimiser), ``state.json`` the epoch, the MLflow run, the
best validation score and the configuration. Both are written atomically.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from keras_advseg import keras_private
from keras_advseg.config import TrainConfig
from keras_advseg.io import (
    FileFormatError,
    atomic_path,
    check_free_space,
    model_bytes,
    read_json,
    write_json_atomic,
)

STATE_FILE = "state.json"
WEIGHTS_FILE = "last.weights.h5"


def checkpoint_dir(out: str | Path) -> Path:
    """``OUT/checkpoint``."""
    return Path(out) / "checkpoint"


def read_state(out: str | Path) -> dict | None:
    """The checkpoint state of the training folder ``out``, or None when it has none.

    Raises:
        FileFormatError: ``state.json`` is unreadable or lacks its fields.
    """
    path = checkpoint_dir(out) / STATE_FILE
    if not path.is_file():
        return None
    state = read_json(path, "checkpoint state")
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or epoch < 0 or not isinstance(state.get("config"), dict):
        raise FileFormatError(
            f"{path}: unreadable checkpoint state (expected 'epoch' >= 0 and 'config')"
        )
    return state


def state_config(state: dict, path: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint state.

    Raises:
        FileFormatError: the stored configuration is not a valid one.
    """
    try:
        return TrainConfig.from_stored(state["config"])
    except (TypeError, ValueError) as exc:
        raise FileFormatError(
            f"{checkpoint_dir(path) / STATE_FILE}: invalid stored configuration ({exc})"
        ) from None


def start_epoch(state: dict | None) -> int:
    """The epoch a run starts from: 0, or the last checkpoint's epoch when resuming."""
    return 0 if state is None else int(state["epoch"])


def save_model_atomic(model: keras.Model, path: Path, preprocessing=None) -> Path:
    """``model.save(path)`` through a temporary file, with the training preprocessing inside."""
    from keras_advseg.export import save_model

    return save_model(model, path, preprocessing)


class Checkpoint(keras.callbacks.Callback):
    """Saves the last epoch's full training state and the best deployable model, atomically.

    Args:
        out: Training folder.
        config: The run's configuration (stored for ``resume``).
        run_id: The MLflow run to continue on resume.
        deployed: The deployable model, saved as ``best.keras`` when validation improves.
        best: ``{"score", "epoch"}`` so far (restored on resume).
        preprocessing: Stored in every saved model (see :func:`keras_advseg.export.save_model`).
    """

    def __init__(
        self, out: Path, config: TrainConfig, run_id: str, deployed, best: dict, preprocessing=None
    ):
        super().__init__()
        self.preprocessing = preprocessing
        self.dir = checkpoint_dir(out)
        self.out, self.config, self.run_id, self.deployed, self.best = (
            out,
            config,
            run_id,
            deployed,
            best,
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not np.isfinite(float(logs.get("loss", 0.0))) or logs.get("collapsed"):
            return  # keep the last good checkpoint (non-finite loss, catastrophic overfitting)
        self.dir.mkdir(parents=True, exist_ok=True)
        # weights, the optimiser's two moments, and a deployable copy: checked before writing
        check_free_space(self.dir, model_bytes(self.model, copies=4), "the checkpoint")
        score = logs.get("val_dice_mean", -float(logs.get("loss", 0.0)))
        if score > self.best["score"]:
            self.best = {"score": float(score), "epoch": epoch + 1}
            save_model_atomic(self.deployed, self.out / "best.keras", self.preprocessing)
        keras_private.cache_saving_skipsets()
        with atomic_path(self.dir / WEIGHTS_FILE) as tmp:
            self.model.save_weights(tmp)
        self._write_state(epoch + 1, finished=False)

    def restore(self, model: keras.Model) -> None:
        """Loads the checkpoint's weights and optimiser state into ``model``."""
        keras_private.cache_saving_skipsets()
        model.load_weights(self.dir / WEIGHTS_FILE)

    def finish(self):
        """Marks the run finished (a finished run cannot be resumed)."""
        self._write_state(self.config.epochs, finished=True)

    def _write_state(self, epoch: int, finished: bool):
        self.dir.mkdir(parents=True, exist_ok=True)
        best = self.best["score"]
        state = {
            "epoch": epoch,
            "run_id": self.run_id,
            "best_score": best if math.isfinite(best) else None,
            "best_epoch": self.best["epoch"],
            "finished": finished,
            "config": asdict(self.config),
        }
        write_json_atomic(self.dir / STATE_FILE, state)


def mark_finished(out: str | Path) -> None:
    """Marks the run in ``out`` finished (its checkpoint state, rewritten atomically): what a
    caller of ``fit(..., finish=False)`` does once the run's outputs are all recorded."""
    state = read_state(out)
    if state is None:
        raise FileFormatError(f"{out}: no checkpoint state to mark finished")
    epochs = state["config"].get("epochs", state["epoch"])  # as Checkpoint.finish writes it
    write_json_atomic(
        checkpoint_dir(out) / STATE_FILE, {**state, "epoch": epochs, "finished": True}
    )


def restored_best(state: dict | None) -> dict:
    """``{"score", "epoch"}`` of the best epoch so far: from the checkpoint, or nothing yet."""
    if state is None or state.get("best_score") is None:
        return {"score": -math.inf, "epoch": None}
    return {"score": float(state["best_score"]), "epoch": state.get("best_epoch")}
