"""APGD: the paper's checkpoints and step control on a 1-D toy loss, segmentation losses, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import linf, span

from keras_advseg.attacks.auto_pgd import apgd, apgd_loop, checkpoints
from keras_advseg.attacks.core import mean_region_dice
from keras_advseg.attacks.losses import attack_loss as segmentation_loss
from keras_advseg.attacks.registry import ATTACK_LOSSES

APGD_LOSSES = ATTACK_LOSSES.names()


def test_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_step_halving_and_restart_on_a_toy_loss():
    """Ascend f(x) = -(x - 0.3)^2 in [-1, 1]: the step starts at 2 eps, oscillates, halves at
    checkpoints where too few steps improved, and the best point approaches the maximum."""
    calls = []

    def toy(x):
        calls.append(float(x[0, 0]))
        loss = -tf.square(x[:, 0] - 0.3)
        return loss, -2.0 * (x - 0.3), -loss  # score: lowest is best

    best, info = apgd_loop(toy, tf.zeros((1, 1)), tf.ones((1, 1)), steps=100)
    sizes = [float(s[0]) for s in info["step_sizes"]]
    assert sizes[0] == 2.0 and all(b <= a for a, b in zip(sizes, sizes[1:]))
    assert set(sizes) <= {2.0 / 2**k for k in range(30)}  # only halvings
    assert info["halvings"] and set(info["halvings"]) <= set(checkpoints(100))
    assert abs(float(best[0, 0]) - 0.3) < 0.02
    # one gradient per step: a step-size restart resumes with the gradient it stored at the
    # best point instead of computing it again
    assert info["gradients"] == len(calls) == 100


@pytest.mark.parametrize("name", APGD_LOSSES)
def test_losses_are_per_sample_and_differentiable(name):
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(2, 4, 4, 4, 4)).astype("float32"))
    y = tf.constant(np.eye(4, dtype="float32")[rng.integers(0, 4, size=(2, 4, 4, 4))])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = segmentation_loss(name)(y, logits)
        total = tf.reduce_sum(value)
    assert value.shape == (2,) and np.all(np.isfinite(value.numpy()))
    assert np.any(tape.gradient(total, logits).numpy() != 0)
    with pytest.raises(ValueError, match="loss must be one of"):
        segmentation_loss("hinge")


def test_masked_ce_ignores_wrong_voxels_and_balanced_weights_classes():
    y = tf.one_hot([[0, 0, 0, 1]], 4)  # three background voxels, one tumour voxel
    logits = tf.one_hot([[0, 0, 1, 1]], 4) * 5.0  # voxel 2 already wrong
    ce = -tf.reduce_sum(y * tf.nn.log_softmax(logits), -1).numpy()[0]
    masked = segmentation_loss("masked-ce")(y, logits).numpy()[0]
    assert masked == pytest.approx((ce[0] + ce[1] + ce[3]) / 4)
    balanced = segmentation_loss("balanced-masked-ce")(y, logits).numpy()[0]
    assert balanced == pytest.approx((ce[0] + ce[1]) / 3 + ce[3] / 1)


def test_mean_region_dice():
    y = tf.one_hot([[[0, 1, 2, 3]]], 4)
    assert mean_region_dice(y, y * 10.0).numpy() == pytest.approx([1.0])
    assert mean_region_dice(y, tf.one_hot([[[0, 0, 0, 0]]], 4)).numpy() == pytest.approx([0.0])


def test_apgd_stays_in_the_ball_lowers_dice_and_stops_early(fitted_unet, prepared_dir):
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    images, labels = zip(*(prepared.load(i) for i in prepared.ids("test")))
    x, y = np.stack(images), one_hot_labels(np.stack(labels)).numpy()
    clean = mean_region_dice(y, fitted_unet(x)).numpy()
    adv = apgd(fitted_unet, x, y, eps=0.05, steps=10, stop_dice=None)
    assert np.all(linf(adv, x) <= 0.05 * span(x) * (1 + 1e-6))
    attacked = mean_region_dice(y, fitted_unet(adv)).numpy()
    assert np.all(attacked <= clean) and attacked.mean() < clean.mean() - 0.05
    # a generous threshold: the samples stop as soon as they reach it, taking fewer gradients
    from keras_advseg.attacks.auto_pgd import _compiled

    step = _compiled(fitted_unet, "masked-ce", 1.0)
    counts = {}
    for threshold in (None, float(clean.max()) + 0.01):
        _, info = apgd_loop(
            lambda v: step(v, tf.constant(y)),
            tf.constant(x),
            0.05 * span(x)[:, None, None, None, None],
            10,
            stop_score=threshold,
        )
        counts[threshold] = info["gradients"]
    assert counts[float(clean.max()) + 0.01] < counts[None]
