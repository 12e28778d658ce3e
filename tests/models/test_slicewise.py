"""UNet structure, the slice-wise wrapper, saving and SavedModel export."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_advseg.models import SliceWise, unet2d


def test_slicewise_equals_per_slice_and_is_differentiable():
    inner = unet2d((16, 16, 4), base_filters=2, depth=3)
    model = SliceWise(inner)
    volume = tf.random.stateless_normal((2, 16, 16, 5, 4), seed=[0, 1])
    out = model(volume)
    assert out.shape == (2, 16, 16, 5, 4)
    # one slice alone or in a batch of slices: other kernels, equal to float rounding
    np.testing.assert_allclose(
        out[1, :, :, 3], inner(volume[1:2, :, :, 3])[0], rtol=1e-4, atol=1e-4
    )
    with tf.GradientTape() as tape:
        tape.watch(volume)
        loss = tf.reduce_sum(model(volume)[..., 1])
    grad = tape.gradient(loss, volume)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
