"""`train --defense artifacts`: corrupted training volumes, drawn from the seed, and its options."""

from __future__ import annotations

import numpy as np
import pytest

from keras_advseg.config import TrainConfig
from keras_advseg.data.corrupted import ArtifactAugmentation, prepared_spacing
from keras_advseg.data.pipeline import volume_dataset
from keras_advseg.data.prepare import load_prepared
from keras_advseg.errors import InputError


def images(prepared, artifacts, seed=0):
    data = volume_dataset(
        prepared,
        "train",
        batch_size=1,
        shuffle=False,
        augment_data=False,
        seed=seed,
        artifacts=artifacts,
    )
    return [x.numpy()[0] for x, _ in data]


def test_training_volumes_are_corrupted_at_the_rate_and_reproducibly(prepared_dir):
    prepared = load_prepared(prepared_dir)
    spacing = prepared_spacing(prepared)
    # the phantom is 4 mm; the prepared 16^3 grid covers the brain's box, so coarser voxels
    assert all(s > 4 for s in spacing)
    clean = images(prepared, None)
    always = ArtifactAugmentation(("bias-field", "rician-noise"), 1.0, spacing)
    corrupted = images(prepared, always)
    assert all(not np.allclose(a, b) for a, b in zip(clean, corrupted))
    np.testing.assert_array_equal(np.stack(corrupted), np.stack(images(prepared, always)))
    assert not np.array_equal(np.stack(corrupted), np.stack(images(prepared, always, seed=1)))
    never = ArtifactAugmentation(("bias-field",), 0.0, spacing)
    np.testing.assert_array_equal(np.stack(clean), np.stack(images(prepared, never)))
    for a, b in zip(clean, corrupted):  # the brain mask is the cache's: 0 stays 0 outside
        assert (b[np.all(a == 0, axis=-1)] == 0).all()


def test_the_defense_and_its_options():
    assert TrainConfig(defense="artifacts").corruption_rate == 0.5
    assert TrainConfig(defense="adversarial").corruption_rate == 0.0
    combined = TrainConfig(defense="adversarial", artifact_rate=0.3, artifacts="operator")
    assert combined.corruption_rate == 0.3
    assert combined.artifacts == "missing-sequence,swapped-sequences,misregistration"
    with pytest.raises(InputError, match="corruption must be one of"):
        TrainConfig(defense="artifacts", artifacts="motoin")
    with pytest.raises(InputError, match="needs artifact_rate > 0"):
        TrainConfig(defense="artifacts", artifact_rate=0.0)
    with pytest.raises(InputError, match="artifact_rate"):
        TrainConfig(artifact_rate=1.5)
