"""Keras callbacks of a training run: epoch seeds, validation Dice, non-finite stop, epoch logging."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_advseg import keras_private
from keras_advseg.config import REGIONS
from keras_advseg.metrics import brats_dice, predict_labels, traced_inference


class EpochSeeds(keras.callbacks.Callback):
    """Resets every random state (dropout, noise) from ``(seed, epoch)`` at each epoch start.

    So that a run resumed at epoch e draws exactly what an uninterrupted run draws.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for index, variable in enumerate(keras_private.seed_state_variables(self.model)):
            variable.assign(np.array([self.seed * 7919 + index, epoch], dtype=variable.dtype))


class Validation(keras.callbacks.Callback):
    """Adds the BraTS Dice (``val_dice_wt/tc/et`` and ``val_dice_mean``) of the deployable model to the logs.

    Args:
        model: The deployable model (volumes in, logits out).
        prepared: The prepared dataset.
        ids: Validation subjects (none: nothing is added).
    """

    def __init__(self, model, prepared, ids):
        super().__init__()
        self.prepared, self.ids = prepared, ids
        self.forward = traced_inference(
            model
        )  # the eager call's logits, about 6x faster per volume

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.ids:
            return
        scores = {region: [] for region in REGIONS}
        for subject_id in self.ids:
            image, labels = self.prepared.load(subject_id)
            dice = brats_dice(labels, predict_labels(self.forward, image[None])[0])
            for region in scores:
                scores[region].append(float(dice[region]))
        for region, values in scores.items():
            logs[f"val_dice_{region}"] = float(np.mean(values))
        logs["val_dice_mean"] = float(np.mean([logs[f"val_dice_{r}"] for r in scores]))


class StopOnNonFinite(keras.callbacks.TerminateOnNaN):
    """Keras' ``TerminateOnNaN`` that also remembers where: ``where = (epoch, batch)``, 0-based.

    The training workflow names the epoch and batch in its error message,
    which ``TerminateOnNaN`` alone does not record.
    """

    def __init__(self):
        super().__init__()
        self.where = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if (
            loss is not None
            and not np.isfinite(float(np.asarray(loss).ravel()[0]))
            and self.where is None
        ):
            self.where = (self._epoch, batch)
        super().on_batch_end(batch, logs)


class EpochLogger(keras.callbacks.Callback):
    """Hands every epoch's finite scalar logs to ``log(metrics, step)``, names prefixed.

    The training workflow passes MLflow's ``log_metrics``; nothing here knows about MLflow.
    """

    def __init__(self, log: Callable[[dict, int], None], prefix: str = ""):
        super().__init__()
        self.log, self.prefix = log, prefix

    def on_epoch_end(self, epoch, logs=None):
        metrics = {
            k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0
        }
        self.log({self.prefix + k: v for k, v in metrics.items() if np.isfinite(v)}, epoch + 1)


class CatastrophicOverfitting(keras.callbacks.Callback):
    """Stops fast adversarial training when robust Dice collapses (Wong et al. 2020, section 5).

    FGSM training can suddenly overfit to its own attack: within an epoch, robust accuracy
    against PGD falls to near zero while clean accuracy holds. Each epoch ``measure()`` gives
    the robust Dice of a validation batch under a short PGD; when it falls more than ``drop``
    below the best seen so far, training stops, the epoch's logs get ``collapsed = 1`` (the
    checkpoint then keeps the last good epoch), and :attr:`collapse` records
    ``(epoch, robust Dice, best before)`` for the workflow's one-line message.

    Args:
        measure: ``() -> float``: the robust Dice of the current weights.
        drop: The fall from the best robust Dice that counts as a collapse.
    """

    def __init__(self, measure: Callable[[], float], drop: float = 0.2):
        super().__init__()
        self.measure, self.drop = measure, float(drop)
        self.best = None
        self.collapse = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        value = float(self.measure())
        logs["val_robust_dice"] = value
        if self.best is not None and value < self.best - self.drop:
            self.collapse = (epoch + 1, value, self.best)
            logs["collapsed"] = 1.0
            self.model.stop_training = True
            return
        self.best = value if self.best is None else max(self.best, value)
