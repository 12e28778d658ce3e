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


def test_catastrophic_overfitting_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A stub robust-Dice signal that collapses at epoch 3: training stops there and the
    checkpoint stays at epoch 2."""
    import keras
    import numpy as np

    from keras_advseg.config import TrainConfig
    from keras_advseg.training.callbacks import CatastrophicOverfitting
    from keras_advseg.training.checkpoint import Checkpoint, read_state

    signal = iter([0.50, 0.55, 0.10, 0.60, 0.60])
    detector = CatastrophicOverfitting(lambda: next(signal), drop=0.2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    checkpoint = Checkpoint(tmp_path, TrainConfig(epochs=5), "run", model, {"score": -1e9})
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[detector, checkpoint])
    assert len(history.history["loss"]) == 3  # stopped at the collapse
    assert detector.collapse == (3, 0.10, 0.55)
    assert history.history["val_robust_dice"] == [0.50, 0.55, 0.10]
    assert read_state(tmp_path)["epoch"] == 2  # the collapsed epoch was not checkpointed
    steady = CatastrophicOverfitting(lambda: 0.4)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[steady])
    assert steady.collapse is None and steady.best == 0.4
