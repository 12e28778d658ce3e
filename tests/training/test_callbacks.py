"""Training callbacks on a tiny Keras model."""

from __future__ import annotations

import keras
import numpy as np

from keras_advseg.training.callbacks import EpochLogger, EpochSeeds, StopOnNonFinite


class _ExplodeAt(keras.callbacks.Callback):
    """Makes the logged loss non-finite at one (epoch, batch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            logs["loss"] = float("nan")


def tiny():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    return model


def test_stop_on_non_finite_records_where_and_stops():
    stop = StopOnNonFinite()
    x, y = np.ones((8, 3)), np.zeros((8, 1))
    history = tiny().fit(
        x, y, batch_size=2, epochs=5, verbose=0, callbacks=[_ExplodeAt(1, 2), stop]
    )
    assert stop.where == (1, 2)
    assert len(history.history["loss"]) == 2  # stopped during the second epoch


def test_epoch_logger_hands_over_finite_scalars_with_prefix():
    seen = []
    logger = EpochLogger(lambda metrics, step: seen.append((metrics, step)), prefix="teacher_")
    logger.on_epoch_end(0, {"loss": 0.5, "val_dice_wt": float("nan"), "vector": np.ones(3)})
    logger.on_epoch_end(1, {"loss": np.float32(0.25)})
    assert seen == [({"teacher_loss": 0.5}, 1), ({"teacher_loss": 0.25}, 2)]


def test_epoch_seeds_make_dropout_depend_on_seed_and_epoch_only():
    model = tiny()
    seeds = EpochSeeds(seed=3)
    seeds.set_model(model)
    x = np.ones((4, 3), "float32")
    masks = []
    for epoch in (4, 4, 5):
        seeds.on_epoch_begin(epoch)
        masks.append(np.asarray(model.layers[0](x, training=True)))
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
