"""`train --defense corruptions`: corrupted training volumes, drawn from the seed, and its
options."""

from __future__ import annotations

import numpy as np
import pytest

from keras_advseg.config import TrainConfig
from keras_advseg.data.corrupted import CorruptionAugmentation, prepared_spacing
from keras_advseg.data.pipeline import volume_dataset
from keras_advseg.data.prepare import load_prepared
from keras_advseg.errors import InputError


def images(prepared, corruptions, seed=0):
    data = volume_dataset(
        prepared,
        "train",
        batch_size=1,
        shuffle=False,
        augment_data=False,
        seed=seed,
        corruptions=corruptions,
    )
    return [x.numpy()[0] for x, _ in data]


def test_training_volumes_are_corrupted_at_the_rate_and_reproducibly(prepared_dir):
    prepared = load_prepared(prepared_dir)
    spacing = prepared_spacing(prepared)
    # the phantom is 4 mm; the prepared 16^3 grid covers the brain's box, so coarser voxels
    assert all(s > 4 for s in spacing)
    clean = images(prepared, None)
    always = CorruptionAugmentation(("bias-field", "rician-noise"), 1.0, spacing)
    corrupted = images(prepared, always)
    assert all(not np.allclose(a, b) for a, b in zip(clean, corrupted))
    np.testing.assert_array_equal(np.stack(corrupted), np.stack(images(prepared, always)))
    assert not np.array_equal(np.stack(corrupted), np.stack(images(prepared, always, seed=1)))
    never = CorruptionAugmentation(("bias-field",), 0.0, spacing)
    np.testing.assert_array_equal(np.stack(clean), np.stack(images(prepared, never)))
    for a, b in zip(clean, corrupted):  # the brain mask is the cache's: 0 stays 0 outside
        assert (b[np.all(a == 0, axis=-1)] == 0).all()


def test_the_defense_and_its_options():
    assert TrainConfig(defense="corruptions").corrupted_share == 0.5
    assert TrainConfig(defense="adversarial").corrupted_share == 0.0
    combined = TrainConfig(defense="adversarial", corruption_rate=0.3, corruptions="operator")
    assert combined.corrupted_share == 0.3
    assert combined.corruptions == "missing-sequence,swapped-sequences,misregistration"
    with pytest.raises(InputError, match="corruption must be one of"):
        TrainConfig(defense="corruptions", corruptions="motoin")
    with pytest.raises(InputError, match="needs corruption_rate > 0"):
        TrainConfig(defense="corruptions", corruption_rate=0.0)
    with pytest.raises(InputError, match="corruption_rate"):
        TrainConfig(corruption_rate=1.5)
    # a configuration stored by the last release (a checkpoint's) reads under the new names
    stored = {"defense": "artifacts", "artifacts": "operator", "artifact_rate": 0.3}
    assert TrainConfig.from_stored(stored) == TrainConfig(
        defense="corruptions", corruptions="operator", corruption_rate=0.3
    )
