"""The attacks' per-sample losses, one function each (registered in ``ATTACK_LOSSES``).

Each ``<name>_loss(temperature)`` returns ``(y, logits) -> (B,)``: the loss of every sample
of a batch, from one-hot labels ``y`` and logits, with the softmax at temperature ``T``
(eq. 4). Attacks ascend it (untargeted) or descend it (targeted).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from keras_advseg.attacks.registry import ATTACK_LOSSES
from keras_advseg.losses import soft_dice_loss, voxel_cross_entropy


def attack_loss(loss, temperature: float = 1.0) -> Callable:
    """The per-sample loss ``(y, logits) -> (B,)`` of a registered name or a callable.

    Args:
        loss: A name of :data:`~keras_advseg.attacks.registry.ATTACK_LOSSES`, or a callable
            ``(y, logits) -> per-sample (B,) or scalar loss`` (a scalar batch loss is spread
            over the samples so that its sum is unchanged).
        temperature: Softmax temperature of the loss.

    Raises:
        InputError: an unknown name.
    """
    if callable(loss):

        def custom(y, logits):
            value = tf.cast(loss(y, logits), tf.float32)
            if value.shape.rank == 0:  # a batch loss: spread it so that the sum is unchanged
                batch = tf.shape(logits)[0]
                value = tf.fill([batch], value) / tf.cast(batch, tf.float32)
            return value

        return custom
    return ATTACK_LOSSES.get(loss).load()(temperature)


def _per_sample_mean(voxelwise):
    return tf.reduce_mean(tf.reshape(voxelwise, [tf.shape(voxelwise)[0], -1]), 1)


def dice_loss(temperature: float = 1.0) -> Callable:
    """``1 - soft Dice`` of ``softmax(z / T)`` per sample (eq. 5-7)."""
    return lambda y, logits: soft_dice_loss(y, logits, temperature=temperature)


def ce_loss(temperature: float = 1.0) -> Callable:
    """Mean voxel cross-entropy of ``softmax(z / T)`` per sample."""
    return lambda y, logits: _per_sample_mean(voxel_cross_entropy(y, logits, temperature))


def _correct(y, logits, temperature):
    """1 where the (tempered) arg-max equals the label, else 0; no gradient."""
    scaled = tf.cast(logits, tf.float32) / temperature
    hit = tf.equal(tf.argmax(scaled, -1), tf.argmax(y, -1))
    return tf.stop_gradient(tf.cast(hit, tf.float32))


def masked_ce_loss(temperature: float = 1.0) -> Callable:
    """CE summed over the voxels still classified correctly (the mask recomputed each step),
    divided by all voxels."""

    def loss(y, logits):
        y = tf.cast(y, tf.float32)
        masked = _correct(y, logits, temperature) * voxel_cross_entropy(y, logits, temperature)
        return _per_sample_mean(masked)

    return loss


def balanced_masked_ce_loss(temperature: float = 1.0) -> Callable:
    """Masked CE with each voxel weighted by ``1 / N_c``, ``N_c`` the voxels of its class in the
    volume: aimed at Dice rather than voxel accuracy."""

    def loss(y, logits):
        y = tf.cast(y, tf.float32)
        batch = tf.shape(logits)[0]
        per_class = tf.reshape(y, [batch, -1, tf.shape(y)[-1]])
        counts = tf.reduce_sum(per_class, axis=1, keepdims=True)  # (B, 1, K)
        weights = tf.reduce_sum(per_class / tf.maximum(counts, 1.0), -1)  # 1 / N_c per voxel
        masked = _correct(y, logits, temperature) * voxel_cross_entropy(y, logits, temperature)
        return tf.reduce_sum(tf.reshape(masked, [batch, -1]) * weights, 1)

    return loss


def js_loss(temperature: float = 1.0) -> Callable:
    """Jensen-Shannon divergence between ``softmax(z / T)`` and the one-hot label, averaged over
    voxels."""

    def loss(y, logits):
        y = tf.cast(y, tf.float32)
        p = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
        m = 0.5 * (p + y)
        kl_p = tf.reduce_sum(p * (tf.math.log(p + 1e-12) - tf.math.log(m + 1e-12)), -1)
        kl_y = tf.reduce_sum(y * (tf.math.log(y + 1e-12) - tf.math.log(m + 1e-12)), -1)
        return _per_sample_mean(0.5 * (kl_p + kl_y))

    return loss
