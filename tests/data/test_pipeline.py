"""tf.data pipelines and joint augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_advseg.data.pipeline import augment, one_hot_labels, slice_dataset, volume_dataset
from keras_advseg.data.prepare import load_prepared


def test_one_hot_maps_label_4_to_index_3():
    out = one_hot_labels(tf.constant([0, 1, 2, 4], tf.uint8)).numpy()
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32))


@pytest.mark.parametrize("shape", [(6, 6, 4), (6, 8, 4)])
def test_augment_keeps_image_and_labels_aligned(shape):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=shape).astype(np.int32)
    image = np.stack([labels * 10.0 + c for c in range(4)], axis=-1).astype(np.float32)
    seen = set()
    for s in range(24):
        img, lab = augment(tf.constant(image), tf.constant(labels), tf.constant([s, 7]))
        img, lab = img.numpy(), lab.numpy()
        np.testing.assert_array_equal(img[..., 0], lab * 10.0)
        np.testing.assert_array_equal(img[..., 3], lab * 10.0 + 3)
        assert img.shape == image.shape
        assert sorted(img.ravel()) == sorted(image.ravel())  # a permutation of voxels
        seen.add(img.tobytes())
    assert len(seen) > 4  # it does transform


def test_augment_is_deterministic_for_a_seed():
    x = tf.random.stateless_uniform((6, 6, 4, 4), seed=[1, 2])
    y = tf.random.stateless_uniform((6, 6, 4), seed=[3, 4])
    a = augment(x, y, tf.constant([5, 9]))
    b = augment(x, y, tf.constant([5, 9]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())


def test_volume_dataset_shapes_and_reproducibility(prepared_dir):
    prepared = load_prepared(prepared_dir)
    ds = volume_dataset(prepared, "train", batch_size=2, seed=3)
    batches = list(ds)
    assert len(batches) == -(-len(prepared.train_ids) // 2)
    x, y = batches[0]
    assert x.shape[1:] == (16, 16, 16, 4) and y.shape[1:] == (16, 16, 16, 4)
    np.testing.assert_allclose(tf.reduce_sum(y, axis=-1).numpy(), 1.0)
    again = next(iter(volume_dataset(prepared, "train", batch_size=2, seed=3)))
    np.testing.assert_array_equal(x.numpy(), again[0].numpy())


def test_slice_dataset_cuts_axial_slices(prepared_dir):
    prepared = load_prepared(prepared_dir)
    ds = slice_dataset(prepared, "test", batch_size=8, shuffle=False, augment_data=False)
    x, y = next(iter(ds))
    assert x.shape == (8, 16, 16, 4) and y.shape == (8, 16, 16, 4)
    image, labels = prepared.load(prepared.test_ids[0])
    np.testing.assert_array_equal(x[3].numpy(), image[:, :, 3])
    total = sum(int(b[0].shape[0]) for b in ds)
    assert total == 16 * len(prepared.test_ids)


def test_empty_split_and_bad_batch(prepared_dir):
    prepared = load_prepared(prepared_dir)
    with pytest.raises(ValueError, match="no subjects in split 'unlabelled'"):
        volume_dataset(prepared, "unlabelled")
    with pytest.raises(ValueError, match="batch_size must be >= 1. Received: batch_size=0"):
        volume_dataset(prepared, "train", batch_size=0)


def test_epochs_share_one_trace_of_the_augmentation_and_draw_what_it_draws(
    prepared_dir, monkeypatch
):
    from keras_advseg.data import pipeline

    prepared = load_prepared(prepared_dir)
    epochs = {seed: list(volume_dataset(prepared, "train", seed=seed)) for seed in (0, 1, 2)}
    assert pipeline._AUGMENT
    assert all(f.experimental_get_tracing_count() == 1 for f in pipeline._AUGMENT.values())
    # the same volumes as augment traced anew inside each dataset's map function
    monkeypatch.setattr(pipeline, "_traced_augment", lambda *specs: augment)
    for seed, epoch in epochs.items():
        for (x, y), (x0, y0) in zip(
            epoch, volume_dataset(prepared, "train", seed=seed), strict=True
        ):
            np.testing.assert_array_equal(x.numpy(), x0.numpy())
            np.testing.assert_array_equal(y.numpy(), y0.numpy())
    assert not np.array_equal(epochs[0][0][0].numpy(), epochs[1][0][0].numpy())
