"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advseg.models import unet3d

TOL = 1e-6  # float32 rounding of x + eps * sign


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return unet3d((16, 16, 16, 4), base_filters=2, depth=3)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype("float32")
    x[1] *= 3.0  # a second sample with another intensity scale
    y = tf.one_hot(rng.integers(0, 4, size=(2, 16, 16, 16)), 4).numpy()
    return x, y
