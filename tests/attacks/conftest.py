"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import small_segmenter

TOL = 1e-6  # float32 rounding of x + eps * sign


@pytest.fixture(scope="module")
def tiny():
    """An untrained segmentation network for the attacks' properties (bounds, shapes,
    determinism, traces): any network will do, and a small one traces in a fraction of a
    UNet's time. The trained UNet (``fitted_unet``) is where attacks must lower Dice."""
    return small_segmenter(0)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype("float32")
    x[1] *= 3.0  # a second sample with another intensity scale
    y = tf.one_hot(rng.integers(0, 4, size=(2, 16, 16, 16)), 4).numpy()
    return x, y
