"""Soft Dice loss properties, BraTS Dice by hand, image-quality metrics against scikit-image."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from support import one_hot

from keras_advseg.metrics import BraTSDice, brats_dice, image_quality, probabilities_to_labels


def test_brats_dice_hand_computed_and_empty_convention():
    true = np.zeros((2, 4, 4, 4), np.uint8)
    pred = np.zeros_like(true)
    true[0, :2] = 2  # 32 oedema voxels
    true[0, 0, 0, :2] = 4  # 2 of them enhancing
    pred[0, :1] = 2  # 16 voxels, all inside WT
    pred[0, 0, 0, 0] = 1
    scores = brats_dice(true, pred)
    assert scores["wt"][0] == pytest.approx(2 * 16 / (32 + 16))
    assert scores["tc"][0] == pytest.approx(
        2 * 1 / (2 + 1)
    )  # TC: true 2 voxels, pred 1 voxel inside
    assert scores["et"][0] == pytest.approx(0.0)
    assert scores["wt"][1] == 1.0  # both empty
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
    to_one_hot = lambda labels: one_hot(np.vectorize(index.get)(labels))
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
    assert got["psnr"] == pytest.approx(
        peak_signal_noise_ratio(clean, noisy, data_range=data_range)
    )
    assert got["ssim"] == pytest.approx(
        structural_similarity(clean, noisy, data_range=data_range, channel_axis=-1)
    )
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((clean - noisy) ** 2)))
    assert image_quality(clean, clean)["psnr"] == float("inf")
    with pytest.raises(ValueError, match="constant"):
        image_quality(np.zeros((4, 4, 4, 1)), np.zeros((4, 4, 4, 1)))


def test_hausdorff95_matches_a_hand_computed_case_and_the_brats_empty_convention():
    from keras_advseg.metrics import hausdorff95, native_scores

    reference = np.zeros((12, 12, 12), bool)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6, 2:6] = True
    prediction[3:8, 2:6, 2:6] = True  # shifted and one voxel longer along x
    spacing = (2.0, 1.0, 0.5)

    def surface(mask):
        points = []
        for x, y, z in zip(*np.nonzero(mask)):
            for dx, dy, dz in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                if not mask[x + dx, y + dy, z + dz]:
                    points.append((x, y, z))
                    break
        return np.array(points, float) * spacing

    a, b = surface(reference), surface(prediction)
    pairwise = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    expected = np.percentile(np.concatenate([pairwise.min(1), pairwise.min(0)]), 95)
    assert hausdorff95(reference, prediction, spacing) == pytest.approx(expected)
    assert hausdorff95(reference, reference, spacing) == 0.0
    empty = np.zeros_like(reference)
    assert hausdorff95(empty, empty) == 0.0
    assert hausdorff95(reference, empty, spacing) == pytest.approx(np.sqrt(24**2 + 12**2 + 6**2))
    assert hausdorff95(
        np.zeros((240, 240, 155), bool), np.ones((240, 240, 155), bool)
    ) == pytest.approx(373.13, abs=0.01)
    labels = np.where(reference, 4, 0).astype(np.uint8)
    scores = native_scores(labels, labels, spacing)
    assert scores["dice_et"] == 1.0 and scores["hd95_wt"] == 0.0
