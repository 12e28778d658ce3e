"""Soft Dice loss properties, BraTS Dice by hand, image-quality metrics against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import one_hot

from keras_advseg.losses import SoftDiceLoss, soft_dice


def test_perfect_soft_prediction_gives_zero_loss():
    y = one_hot(np.random.default_rng(0).integers(0, 4, size=(2, 6, 6, 6)))
    logits = (y * 40.0 - 20.0).astype("float32")
    assert float(SoftDiceLoss()(y, logits)) == pytest.approx(0.0, abs=1e-5)
    assert float(SoftDiceLoss()(y, -logits)) > 0.9


def test_background_is_ignored():
    y = one_hot(np.random.default_rng(1).integers(0, 4, size=(1, 6, 6, 6)))
    logits = (y * 40.0 - 20.0).astype("float32")
    fg = soft_dice(y, logits)
    # background decisions don't enter: change background logits where it is not the argmax winner
    bumped = logits.copy()
    bumped[..., 0] = np.where(y[..., 0] == 1, 20.0, -25.0)
    np.testing.assert_allclose(soft_dice(y, bumped), fg, atol=1e-6)
    assert float(soft_dice(y, logits, include_background=True)[0]) == pytest.approx(1.0, abs=1e-5)


def test_hand_computed_soft_dice_with_soft_targets():
    probs = np.zeros((1, 2, 1, 1, 4), np.float32)
    probs[0, 0, 0, 0] = [0.1, 0.6, 0.2, 0.1]
    probs[0, 1, 0, 0] = [0.7, 0.1, 0.1, 0.1]
    target = np.zeros_like(probs)
    target[0, 0, 0, 0] = [0.0, 1.0, 0.0, 0.0]
    target[0, 1, 0, 0] = [0.5, 0.0, 0.5, 0.0]  # soft target (eq. 7)
    smooth = 1e-5
    per_class = []
    for c in (1, 2, 3):
        inter = (probs[..., c] * target[..., c]).sum()
        per_class.append(
            (2 * inter + smooth) / (probs[..., c].sum() + target[..., c].sum() + smooth)
        )
    got = soft_dice(target, probs, from_logits=False, smooth=smooth)
    assert float(got[0]) == pytest.approx(np.mean(per_class), rel=1e-6)


def test_gradient_flows_to_input_and_temperature_scales_it():
    x = tf.random.stateless_normal((1, 4, 4, 4, 4), seed=[0, 0])
    y = one_hot(np.random.default_rng(2).integers(0, 4, size=(1, 4, 4, 4)))
    grads = {}
    for t in (1.0, 100.0):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = SoftDiceLoss(temperature=t)(y, x * 3.0)
        grads[t] = tape.gradient(loss, x).numpy()
        assert np.abs(grads[t]).max() > 0
    ratio = np.abs(grads[1.0]).mean() / np.abs(grads[100.0]).mean()
    assert ratio > 10  # T rescales the gradient, it does not remove it


def test_loss_is_float32_under_mixed_precision():
    y = one_hot(np.zeros((1, 4, 4, 4), int))
    loss = SoftDiceLoss()(y, tf.zeros((1, 4, 4, 4, 4), tf.float16))
    assert loss.dtype == tf.float32
    assert SoftDiceLoss.from_config(SoftDiceLoss(temperature=5).get_config()).temperature == 5
    with pytest.raises(ValueError, match="temperature must be positive"):
        SoftDiceLoss(temperature=0)
