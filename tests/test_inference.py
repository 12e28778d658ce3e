"""Sliding-window inference: tiling, weighting, and agreement with the resize path."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_advseg.errors import InputError
from keras_advseg.inference import gaussian_importance, sliding_window, tile_starts


def voxelwise_model(tile=(8, 8, 8)):
    """A 1x1x1 convolution: each voxel's logits depend on that voxel alone (translation-equivariant)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(tile + (4,))
    return keras.Model(inputs, keras.layers.Conv3D(4, 1)(inputs))


def test_tiles_cover_the_volume_with_the_requested_overlap():
    assert tile_starts(8, 8, 0.5) == [0] and tile_starts(5, 8, 0.5) == [0]
    assert tile_starts(20, 8, 0.5) == [0, 4, 8, 12]
    assert tile_starts(21, 8, 0.5) == [0, 4, 8, 12, 13]  # the last tile ends at the border
    weights = gaussian_importance((8, 8, 8))
    assert weights.max() == 1.0 and weights[0, 0, 0] < weights[4, 4, 4]


@pytest.mark.parametrize("size", [(8, 8, 8), (13, 20, 9), (6, 10, 8)])
def test_sliding_window_equals_the_whole_volume_for_a_voxelwise_model(size):
    model = voxelwise_model()
    x = np.random.default_rng(1).normal(size=size + (4,)).astype("float32")
    tiled = sliding_window(model, x, (8, 8, 8), overlap=0.5)
    # the same 1x1x1 convolution applied to the whole volume at once
    whole = keras.Model(inputs := keras.Input(size + (4,)), model.layers[-1](inputs))
    expected = np.asarray(keras.ops.softmax(whole(x[None]), axis=-1))[0]
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    with pytest.raises(InputError, match="overlap must be in"):
        sliding_window(model, x, (8, 8, 8), overlap=1.0)
