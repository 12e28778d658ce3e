"""SegPGD and CosPGD: voxel weights against NumPy, the eps-ball, no retracing, their effect."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import linf, span

from keras_advseg.attacks import cospgd, segpgd
from keras_advseg.attacks.core import tracing_count
from keras_advseg.attacks.segmentation import (
    cospgd_weights,
    segpgd_lambda,
    segpgd_weights,
)

TOL = 1e-6


def test_segpgd_weights_and_schedule_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 4, 4)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=(2, 4, 4, 4))]
    assert [segpgd_lambda(t, 4) for t in (1, 2, 3, 4)] == [0.0, 0.125, 0.25, 0.375]
    lam = segpgd_lambda(3, 4)
    correct = logits.argmax(-1) == y.argmax(-1)
    np.testing.assert_allclose(
        segpgd_weights(logits, y, lam).numpy(), np.where(correct, 1 - lam, lam)
    )


@pytest.mark.parametrize("targeted", [False, True])
def test_cospgd_weights_match_numpy(targeted):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 3, 3, 3, 4)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=(1, 3, 3, 3))]
    p = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(-1, keepdims=True)
    cosine = (p * y).sum(-1) / np.linalg.norm(p, axis=-1)
    expected = 1 - cosine if targeted else cosine
    got = cospgd_weights(logits, y, temperature=2.0, targeted=targeted).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("attack", [segpgd, cospgd])
def test_eps_ball_clip_and_no_retracing(tiny, batch, attack):
    x, y = batch
    adv = attack(tiny, x, y, eps=0.05, steps=3, seed=0)
    assert np.all(linf(adv, x) <= 0.05 * span(x) * (1 + TOL)) and np.all(linf(adv, x) > 0)
    clipped = attack(tiny, x, y, eps=0.05, steps=2, clip=(-1.0, 1.0))
    assert float(tf.reduce_max(clipped)) <= 1.0 and float(tf.reduce_min(clipped)) >= -1.0
    traces = tracing_count(tiny)
    attack(tiny, x, y, eps=0.02, steps=4, alpha=0.01)
    assert tracing_count(tiny) == traces
    assert np.array_equal(np.asarray(attack(tiny, x, y, eps=0.0, steps=2)), x)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        attack(tiny, x, y, eps=0.05, steps=0)


def test_attacks_lower_the_dice_of_a_trained_model(fitted_unet, prepared_dir):
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.metrics import brats_dice, predict_labels

    prepared = load_prepared(prepared_dir)
    images, labels = zip(*(prepared.load(i) for i in prepared.ids("test")))
    x, labels = np.stack(images), np.stack(labels)
    y = one_hot_labels(labels).numpy()

    def mean_dice(inputs):
        dice = brats_dice(labels, predict_labels(fitted_unet, inputs))
        return float(np.mean([dice[r].mean() for r in ("wt", "tc", "et")]))

    clean = mean_dice(x)
    for attack in (segpgd, cospgd):
        assert mean_dice(attack(fitted_unet, x, y, eps=0.05, steps=5)) < clean - 0.05
    # targeted CosPGD towards "everything oedema" raises the oedema probability it descends on
    target = np.zeros_like(y)
    target[..., 2] = 1.0

    def oedema(inputs):
        return float(np.mean(tf.nn.softmax(fitted_unet(inputs))[..., 2]))

    attacked = cospgd(fitted_unet, x, target, eps=0.05, steps=5, targeted=True)
    assert oedema(attacked) > oedema(x)
