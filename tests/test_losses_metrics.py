"""Soft Dice loss properties, BraTS Dice by hand, image-quality metrics against scikit-image."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from keras_advseg.losses import SoftDiceLoss, soft_dice
from keras_advseg.metrics import BraTSDice, brats_dice, image_quality, probabilities_to_labels


def one_hot(labels):
    return keras.ops.convert_to_numpy(keras.ops.one_hot(labels, 4))


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
        per_class.append((2 * inter + smooth) / (probs[..., c].sum() + target[..., c].sum() + smooth))
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


def test_brats_dice_hand_computed_and_empty_convention():
    true = np.zeros((2, 4, 4, 4), np.uint8)
    pred = np.zeros_like(true)
    true[0, :2] = 2          # 32 oedema voxels
    true[0, 0, 0, :2] = 4    # 2 of them enhancing
    pred[0, :1] = 2          # 16 voxels, all inside WT
    pred[0, 0, 0, 0] = 1
    scores = brats_dice(true, pred)
    assert scores["wt"][0] == pytest.approx(2 * 16 / (32 + 16))
    assert scores["tc"][0] == pytest.approx(2 * 1 / (2 + 1))  # TC: true 2 voxels, pred 1 voxel inside
    assert scores["et"][0] == pytest.approx(0.0)
    assert scores["wt"][1] == 1.0                       # both empty
    assert np.isnan(brats_dice(true, pred, empty=float("nan"))["et"][1])
    single = brats_dice(true[0], true[0])
    assert single["wt"] == 1.0 and single["et"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        brats_dice(true, pred[:1])


def test_keras_metric_matches_numpy_dice():
    rng = np.random.default_rng(3)
    true = rng.choice([0, 1, 2, 4], size=(3, 6, 6, 6))
    pred = rng.choice([0, 1, 2, 4], size=(3, 6, 6, 6))
    index = {0: 0, 1: 1, 2: 2, 4: 3}
    to_one_hot = lambda l: one_hot(np.vectorize(index.get)(l))
    expected = brats_dice(true, pred)
    for region in ("wt", "tc", "et"):
        metric = BraTSDice(region)
        metric.update_state(to_one_hot(true), to_one_hot(pred) * 5.0)
        assert float(metric.result()) == pytest.approx(expected[region].mean(), rel=1e-5)
    labels = probabilities_to_labels(to_one_hot(pred))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(labels), pred)


def test_image_quality_against_scikit_image():
    rng = np.random.default_rng(4)
    clean = rng.normal(size=(12, 12, 12, 4))
    noisy = clean + rng.uniform(-0.05, 0.05, size=clean.shape)
    got = image_quality(clean, noisy)
    data_range = clean.max() - clean.min()
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=data_range))
    assert got["ssim"] == pytest.approx(structural_similarity(clean, noisy, data_range=data_range, channel_axis=-1))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((clean - noisy) ** 2)))
    assert image_quality(clean, clean)["psnr"] == float("inf")
    with pytest.raises(ValueError, match="constant"):
        image_quality(np.zeros((4, 4, 4, 1)), np.zeros((4, 4, 4, 1)))
