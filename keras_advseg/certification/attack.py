"""An attack on the smoothed model, to check a certificate empirically.

A certificate is a proof about the smoothed model, not the network: the attack that can test
it attacks the smoothed model, with the gradient's expectation over the noise (EOT), in the l2
ball the certificate covers.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import compiled, logits_function
from keras_advseg.attacks.losses import ce_loss
from keras_advseg.errors import InputError
from keras_advseg.vocabulary import REGION_CLASS_INDICES, REGIONS


def smoothed_pgd_l2(
    model,
    x,
    target,
    *,
    eps: float,
    sigma: float,
    steps: int = 10,
    samples: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """l2 PGD against the smoothed model's labels: each step follows the gradient of the
    cross-entropy of ``target`` averaged over ``samples`` noisy copies (the attacks' ``ce``
    loss), normalised and projected onto the ball ``||delta||_2 <= eps`` (the attacks' l2
    step, as :meth:`~keras_advseg.attacks.core.Compiled.iterate` with ``norm="l2"``). ``eps``
    and ``sigma`` are in the model's input units, as
    :func:`~keras_advseg.certification.certify`'s radius and sigma (never relative to the
    input's range).

    Args:
        model: Logits model.
        x: One volume ``(X, Y, Z, C)``.
        target: ``(X, Y, Z)`` class indices (0-3) to move away from (the smoothed labels), or
            ``{"wt", "tc", "et"} -> (X, Y, Z)`` sides (1 inside, 0 outside) to move away from:
            then the loss is each region's binary cross-entropy of ``P(inside)`` (the sum of
            its classes' softmax), averaged over the regions given.
        eps: l2 radius.
        sigma: The smoothing noise.
        steps: PGD steps (step length ``2.5 * eps / steps``).
        samples: Noisy copies per gradient.
        seed: Seed of the noise.

    Returns:
        The adversarial volume ``(X, Y, Z, C)``.

    Raises:
        InputError: a negative ``eps``, a non-positive ``sigma``, or an unknown region.
    """
    if not (math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a number >= 0. Received: eps={eps!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number. Received: sigma={sigma!r}")
    logits = logits_function(model)
    l2_step = compiled(model, loss="ce").l2_step  # the attacks' step: normalise, project
    x = tf.constant(np.asarray(x, np.float32)[None])
    step_length = tf.constant(2.5 * eps / steps, tf.float32)
    radius, ascend = tf.constant(eps, tf.float32), tf.constant(1.0, tf.float32)
    loss_of = _loss(target, samples)

    @tf.function
    def gradient(x_k, step):
        noise = tf.random.stateless_normal(
            tf.concat([[samples], tf.shape(x_k)[1:]], 0), seed=tf.stack([seed, step])
        )
        with tf.GradientTape() as tape:
            tape.watch(x_k)
            loss = loss_of(logits(x_k + sigma * noise, training=False))
        return tape.gradient(loss, x_k)

    x_k = x
    for k in range(steps):
        g = gradient(x_k, tf.constant(k, tf.int32))
        x_k = l2_step(x_k, x, g, step_length, radius, ascend)
    return x_k.numpy()[0]


def _loss(target, samples: int):
    """The loss of a batch of noisy logits that the attack raises."""
    if not isinstance(target, dict):
        onehot = tf.repeat(tf.one_hot(np.asarray(target)[None], 4), samples, 0)
        cross_entropy = ce_loss()  # the attacks' CE: each noisy copy's mean over its voxels
        return lambda z: tf.reduce_mean(cross_entropy(onehot, z))
    unknown = sorted(set(target) - set(REGIONS))
    if unknown or not target:
        raise InputError(f"target's regions must be among {REGIONS}. Received: {sorted(target)}")
    sides = {r: tf.constant(np.asarray(v, np.float32)[None]) for r, v in target.items()}

    def loss(z):
        total = tf.math.reduce_logsumexp(z, axis=-1)
        losses = []
        for region, side in sides.items():
            inside = list(REGION_CLASS_INDICES[region])
            outside = [c for c in range(4) if c not in inside]
            log_in = tf.math.reduce_logsumexp(tf.gather(z, inside, axis=-1), axis=-1) - total
            log_out = tf.math.reduce_logsumexp(tf.gather(z, outside, axis=-1), axis=-1) - total
            losses.append(-tf.reduce_mean(side * log_in + (1 - side) * log_out))
        return tf.add_n(losses) / len(losses)

    return loss
