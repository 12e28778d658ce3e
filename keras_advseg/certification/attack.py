"""An attack on the smoothed model, to check a certificate empirically.

A certificate is a proof about the smoothed model, not the network: the attack that can test
it attacks the smoothed model, with the gradient's expectation over the noise (EOT), in the l2
ball the certificate covers.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


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
    cross-entropy of ``target`` averaged over ``samples`` noisy copies, normalised, projected
    onto the ball ``||delta||_2 <= eps`` (both ``eps`` and ``sigma`` relative to the input's
    intensity range, as :func:`~keras_advseg.certification.certify`'s radius).

    Args:
        model: Logits model.
        x: One volume ``(X, Y, Z, C)``.
        target: ``(X, Y, Z)`` class indices (0-3) to move away from (the smoothed labels).
        eps: l2 radius.
        sigma: The smoothing noise.
        steps: PGD steps (step length ``2.5 * eps / steps``).
        samples: Noisy copies per gradient.
        seed: Seed of the noise.

    Returns:
        The adversarial volume ``(X, Y, Z, C)``.
    """
    from keras_advseg.attacks.core import logits_function

    logits = logits_function(model)
    x = tf.constant(np.asarray(x, np.float32)[None])
    span = float(tf.reduce_max(x) - tf.reduce_min(x))
    radius, noise_std = eps * span, sigma * span
    step_length = 2.5 * radius / steps
    onehot = tf.one_hot(np.asarray(target)[None], 4)

    @tf.function
    def gradient(x_k, step):
        noise = tf.random.stateless_normal(
            tf.concat([[samples], tf.shape(x_k)[1:]], 0), seed=tf.stack([seed, step])
        )
        with tf.GradientTape() as tape:
            tape.watch(x_k)
            z = logits(x_k + noise_std * noise, training=False)
            loss = tf.reduce_mean(
                tf.nn.softmax_cross_entropy_with_logits(tf.repeat(onehot, samples, 0), z)
            )
        return tape.gradient(loss, x_k)

    x_k = x
    for k in range(steps):
        g = gradient(x_k, tf.constant(k, tf.int32))
        x_k = x_k + step_length * g / tf.maximum(tf.norm(g), 1e-12)
        delta = x_k - x
        x_k = x + delta * tf.minimum(1.0, radius / tf.maximum(tf.norm(delta), 1e-12))
    return x_k.numpy()[0]
