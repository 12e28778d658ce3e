"""Preprocessing steps, the split, statistics and the prepared cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import OLD_SUFFIXES, SHAPE, label_volume, save_nifti

from keras_advseg.data import DataError
from keras_advseg.data.prepare import PrepareConfig, load_prepared, prepare_dataset, split_subjects
from keras_advseg.data.preprocess import crop_box, n4_correct, resize, zscore


def test_split_is_deterministic_order_free_and_sized():
    ids = [f"s{i:03d}" for i in range(50)]
    train, test = split_subjects(ids, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40 and not set(train) & set(test)
    assert split_subjects(list(reversed(ids)), 0.2, seed=3) == (train, test)
    assert split_subjects(ids, 0.2, seed=4)[1] != test
    assert split_subjects(["a", "b"], 0.2, seed=0)[1] != []  # at least one test subject


def test_resize_exact_shape_and_label_values():
    labels = np.zeros((30, 20, 10), np.uint8)
    labels[5:15, 5:10, 2:6] = 4
    labels[8:10, 6:8, 3:5] = 1
    out = resize(labels, (16, 16, 16), order=0)
    assert out.shape == (16, 16, 16) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1, 4}
    image = np.random.default_rng(0).random((30, 20, 10, 4)).astype(np.float32)
    resized = resize(image, (8, 12, 16), order=1)
    assert resized.shape == (8, 12, 16, 4)
    np.testing.assert_allclose(resized[0, 0, 0], image[0, 0, 0], rtol=1e-6)  # corners aligned
    np.testing.assert_allclose(resized[-1, -1, -1], image[-1, -1, -1], rtol=1e-6)


def test_crop_box_and_empty_mask():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:5, 3:7, 4:9] = True
    assert crop_box(mask) == (slice(2, 5), slice(3, 7), slice(4, 9))
    assert crop_box(mask, margin=3) == (slice(0, 8), slice(0, 10), slice(1, 10))
    with pytest.raises(DataError, match="empty brain mask"):
        crop_box(np.zeros((3, 3, 3), bool))


def test_n4_reduces_a_known_bias_field():
    shape = (40, 40, 40)
    grid = np.indices(shape, dtype=np.float32) / 39.0
    mask = ((grid - 0.5) ** 2).sum(axis=0) < 0.2
    tissue = np.where(grid[2] > 0.5, 1.0, 0.6).astype(np.float32) * 500  # two flat "tissues"
    bias = np.exp(0.4 * (grid[0] - 0.5) + 0.3 * (grid[1] - 0.5))
    observed = np.where(mask, tissue * bias, 0).astype(np.float32)
    corrected = n4_correct(observed, mask, shrink=2)

    def spread(volume):  # coefficient of variation inside one flat tissue
        region = mask & (grid[2] > 0.6)
        return volume[region].std() / volume[region].mean()

    assert spread(corrected) < 0.5 * spread(observed)
    assert np.all(corrected[~mask] == 0)


def test_zscore_inside_mask_only():
    image = np.stack([np.full((4, 4, 4), 3.0), np.full((4, 4, 4), 5.0)], axis=-1).astype(np.float32)
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3] = True
    out = zscore(image, mask, np.array([1.0, 1.0]), np.array([2.0, 4.0]))
    np.testing.assert_allclose(out[1, 1, 1], [1.0, 1.0])
    assert np.all(out[0] == 0)


def make_dataset(root, n=6, test_scale=None):
    """n subjects whose intensities scale with (i+1)^2 and the modality index."""
    for i in range(n):
        folder = root / f"case{i}"
        for c, suffix in enumerate(OLD_SUFFIXES):
            data = np.zeros(SHAPE, np.float32)
            data[2:10, 2:8, 2:6] = 100.0 * (i + 1) ** 2 * (c + 1)
            data[2:10, 2:8, 2:4] *= 1.5
            save_nifti(folder / f"case{i}_{suffix}.nii.gz", data)
        save_nifti(folder / f"case{i}_seg.nii.gz", label_volume((0, 1, 2, 4)))
    return root


def test_statistics_come_from_the_training_split_only(tmp_path):
    root = make_dataset(tmp_path / "raw")
    config = PrepareConfig(shape=(8, 8, 8), n4=False, test_fraction=0.34, margin=0)
    prepared = prepare_dataset(root, tmp_path / "out", config, progress=False)
    assert len(prepared.test_ids) == 2 and len(prepared.train_ids) == 4
    pooled = [np.load(tmp_path / "out" / "volumes" / f"{i}.npz") for i in prepared.train_ids]
    values = np.concatenate([p["image"][p["mask"].astype(bool)] for p in pooled])
    np.testing.assert_allclose(prepared.mean, values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(prepared.std, values.std(axis=0), rtol=1e-4)
    everything = [np.load(tmp_path / "out" / "volumes" / f"{i}.npz") for i in prepared.ids("all")]
    all_values = np.concatenate([p["image"][p["mask"].astype(bool)] for p in everything])
    assert not np.allclose(prepared.mean, all_values.mean(axis=0), rtol=1e-3)
    image, labels = prepared.load(prepared.train_ids[0])
    assert image.shape == (8, 8, 8, 4) and labels.shape == (8, 8, 8)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    manifest = json.loads((tmp_path / "out" / "prepared.json").read_text())
    assert manifest["statistics"]["split"] == "train"


def test_volume_normalisation_gives_unit_moments(tmp_path):
    root = make_dataset(tmp_path / "raw", n=3)
    prepared = prepare_dataset(
        root,
        tmp_path / "out",
        PrepareConfig(shape=(8, 8, 8), n4=False, normalization="volume"),
        progress=False,
    )
    image, _ = prepared.load(prepared.train_ids[0])
    inside = image[np.any(image != 0, axis=-1)]
    np.testing.assert_allclose(inside.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(inside.std(axis=0), 1, atol=1e-4)


def test_cache_resumes_and_reprepares_on_config_change(tmp_path):
    root = make_dataset(tmp_path / "raw", n=3)
    out = tmp_path / "out"
    config = PrepareConfig(shape=(8, 8, 8), n4=False)
    prepare_dataset(root, out, config, progress=False)
    volumes = out / "volumes"
    kept, removed = volumes / "case0.npz", volumes / "case1.npz"
    stamp = kept.stat().st_mtime_ns
    removed.unlink()
    (volumes / ".case2.npz.partial").write_bytes(b"half")  # a crashed write
    prepare_dataset(root, out, config, progress=False)
    assert kept.stat().st_mtime_ns == stamp and removed.is_file()
    prepared = prepare_dataset(root, out, PrepareConfig(shape=(16, 8, 8), n4=False), progress=False)
    assert np.load(kept)["image"].shape == (16, 8, 8, 4) and prepared.shape == (16, 8, 8)


def test_load_prepared_errors(tmp_path):
    with pytest.raises(DataError, match="not a prepared dataset"):
        load_prepared(tmp_path)
    (tmp_path / "prepared.json").write_text("{")
    with pytest.raises(DataError, match="malformed prepared.json"):
        load_prepared(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="normalization must be one of"):
        PrepareConfig(normalization="minmax")
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        PrepareConfig(test_fraction=1.0)
    assert PrepareConfig(shape=64).shape == (64, 64, 64)


def test_n4_of_a_partly_missing_sequence_keeps_the_contrast_of_its_surviving_slices(phantom_dir):
    """N4 fits each sequence over the voxels it measured: the zeroed slices of a partly missing
    sequence do not bend the field over the slices that arrived (up to N4's free global scale)."""
    from keras_advseg.corruptions import corrupt
    from keras_advseg.data import discover_subjects
    from keras_advseg.data.preprocess import brain_mask, crop_and_resize

    subject = discover_subjects(phantom_dir)[0]
    image, _ = subject.load()
    clean, _, _ = crop_and_resize(image, None, n4=True, n4_shrink=2, margin=0, name="clean")
    for severity in (1, 3):
        partial, drawn = corrupt(
            image, "missing-sequence", severity, subject="x", return_params=True
        )
        out, _, box = crop_and_resize(partial, None, n4=True, n4_shrink=2, margin=0, name="partial")
        c = ["t1", "t1gd", "t2", "flair"].index(drawn["sequence"])
        surviving = brain_mask(image)[box].copy()
        surviving[:, :, max(drawn["first_slice"] - box[2].start, 0) :] = False
        ratio = out[..., c][surviving] / clean[..., c][surviving]
        # the same contrast within 1 % (the field's shape is kept), whatever the global scale
        assert np.median(np.abs(ratio / np.median(ratio) - 1)) < 0.01, severity
        # the other sequences are prepared exactly as the clean scan's
        others = [k for k in range(4) if k != c]
        np.testing.assert_allclose(out[..., others], clean[..., others], rtol=1e-5, atol=1e-5)
