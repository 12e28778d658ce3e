"""Runs a 2-D model over volumes by folding the axial axis into the batch."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_advseg")
class SliceWise(keras.Model):
    """Applies a 2-D slice model to every axial slice of ``(B, X, Y, Z, C)`` volumes.

    The axial axis (2) is folded into the batch, the slice model runs on
    ``(B * Z, X, Y, C)``, and the result is unfolded to ``(B, X, Y, Z, K)``.
    Differentiable end to end, so attacks and evaluation written for 3-D
    models work unchanged on the paper's 2-D UNet, which the paper evaluates
    per assembled volume.

    Args:
        slice_model: A model mapping ``(N, X, Y, C)`` to ``(N, X, Y, K)``.
    """

    def __init__(self, slice_model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.slice_model = slice_model

    def call(self, volumes, training=False):
        batch, x, y, z, channels = (ops.shape(volumes)[i] for i in range(5))
        slices = ops.reshape(ops.transpose(volumes, (0, 3, 1, 2, 4)), (-1, x, y, channels))
        out = self.slice_model(slices, training=training)
        out = ops.reshape(out, (batch, z, x, y, out.shape[-1]))
        return ops.transpose(out, (0, 2, 3, 1, 4))

    def get_config(self):
        config = super().get_config()
        config["slice_model"] = keras.saving.serialize_keras_object(self.slice_model)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["slice_model"] = keras.saving.deserialize_keras_object(config["slice_model"])
        return cls(**config)
