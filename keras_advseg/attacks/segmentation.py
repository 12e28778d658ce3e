"""Attacks designed for segmentation: SegPGD (Gu et al. 2022) and CosPGD (Agnihotri et al. 2024).

Both are PGD with a per-voxel weighted cross-entropy. Plain CE is dominated
by voxels that are already wrong; these weightings move the effort to the
voxels that are still right, which drives Dice down with fewer steps.
"""

from __future__ import annotations

import tensorflow as tf

from keras_advseg.attacks.core import (
    cached,
    check_arguments,
    check_inputs,
    logits_function,
    per_sample_scale,
)
from keras_advseg.losses import voxel_cross_entropy


def segpgd_lambda(step: int, steps: int) -> float:
    """SegPGD's schedule, the paper's ``lambda_t = (t - 1) / (2 T)`` for iteration ``t`` (1-based)
    of ``T``: rising linearly towards 1/2 (a public implementation uses ``t / (2 T)``)."""
    return (step - 1) / (2 * steps)


def segpgd_weights(logits, y, lam):
    """SegPGD's per-voxel CE weights: ``1 - lambda`` on voxels still classified correctly,
    ``lambda`` on wrong ones (:func:`segpgd_lambda`).

    Returns:
        float32 weights ``(B, X, Y, Z)``.
    """
    lam = tf.cast(lam, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32)
    return correct * (1.0 - lam) + (1.0 - correct) * lam


def cospgd_weights(logits, y, temperature: float = 1.0, targeted: bool = False):
    """CosPGD's per-voxel CE weights: cosine similarity of ``softmax(z / T)`` and the one-hot
    label (``1 - cos`` when targeted), without gradient.

    Returns:
        float32 weights ``(B, X, Y, Z)``.
    """
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
    y = tf.cast(y, tf.float32)
    cosine = tf.reduce_sum(probabilities * y, -1) / (
        tf.norm(probabilities, axis=-1) * tf.norm(y, axis=-1) + 1e-12
    )
    return tf.stop_gradient(1.0 - cosine if targeted else cosine)


def segpgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    seed: int | None = None,
    relative: bool = True,
    clip=None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """SegPGD: PGD ascending the SegPGD-weighted cross-entropy (:func:`segpgd_weights`).

    Args:
        model, x, y, relative, clip, temperature: as
            :func:`~keras_advseg.attacks.fast_gradient.fgsm`.
        eps: Budget of the L-inf ball.
        steps: Iterations T.
        alpha: Step size; default ``2.5 * eps / steps``.
        seed: Start from a uniform random point in the ball drawn from ``seed``; None starts at ``x``.

    Returns:
        The adversarial batch.

    Raises:
        ValueError: invalid arguments.
    """
    return _weighted_pgd(
        model, x, y, "segpgd", eps, steps, alpha, seed, relative, clip, temperature
    )


def cospgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    targeted: bool = False,
    seed: int | None = None,
    relative: bool = True,
    clip=None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """CosPGD: PGD on the cosine-weighted cross-entropy (:func:`cospgd_weights`).

    Untargeted, it ascends the loss w.r.t. the labels ``y``; ``targeted`` descends it
    towards the target ``y`` with weights ``1 - cos``.

    Args and Returns: as :func:`segpgd`.

    Raises:
        ValueError: invalid arguments.
    """
    kind = "cospgd-targeted" if targeted else "cospgd"
    return _weighted_pgd(model, x, y, kind, eps, steps, alpha, seed, relative, clip, temperature)


def _weighted_pgd(model, x, y, kind, eps, steps, alpha, seed, relative, clip, temperature):
    check_arguments(eps=eps, steps=steps, alpha=alpha, clip=clip, temperature=temperature)
    x, y = check_inputs(x, y, what="target" if kind == "cospgd-targeted" else "labels")
    if eps == 0:
        return x
    step_fn = _compiled(model, kind, float(temperature))
    eps_t = per_sample_scale(x, eps, relative)
    alpha_t = per_sample_scale(x, 2.5 * eps / steps if alpha is None else alpha, relative)
    x_k = x
    if seed is not None:
        x_k = x + eps_t * tf.random.stateless_uniform(
            tf.shape(x), seed=[seed, 0], minval=-1.0, maxval=1.0
        )
    direction = -1.0 if kind == "cospgd-targeted" else 1.0
    for t in range(1, steps + 1):
        lam = tf.constant(segpgd_lambda(t, steps), tf.float32)
        x_k = step_fn(x_k, x, y, eps_t, alpha_t, lam, tf.constant(direction, tf.float32))
        if clip is not None:
            x_k = tf.clip_by_value(x_k, clip[0], clip[1])
    return x_k


def run_segpgd(model, x, y, *, eps: float, steps: int, seed=0, temperature: float = 1.0, **_):
    """The registry's runner of ``segpgd``: from a random start drawn from ``seed``."""
    return segpgd(model, x, y, eps=eps, steps=steps, seed=seed, temperature=temperature)


def run_cospgd(model, x, y, *, eps: float, steps: int, seed=0, temperature: float = 1.0, **_):
    """The registry's runner of ``cospgd`` (untargeted): from a random start drawn from ``seed``."""
    return cospgd(model, x, y, eps=eps, steps=steps, seed=seed, temperature=temperature)


def _compiled(model, kind: str, temperature: float):
    """One compiled projected step per model and loss: budgets and the SegPGD lambda are tensors."""

    def build():
        forward = logits_function(model)  # shared with the other attacks; no reference to model

        @tf.function
        def step(x_k, x, y, eps, alpha, lam, direction):
            with tf.GradientTape() as tape:
                tape.watch(x_k)
                logits = tf.cast(forward(x_k), tf.float32)
                voxel_ce = voxel_cross_entropy(y, logits, temperature)
                if kind == "segpgd":
                    weights = segpgd_weights(logits, y, lam)
                else:
                    weights = cospgd_weights(
                        logits, y, temperature, targeted=kind == "cospgd-targeted"
                    )
                loss = tf.reduce_sum(
                    tf.reduce_mean(tf.reshape(weights * voxel_ce, [tf.shape(x)[0], -1]), 1)
                )
            grad = tape.gradient(loss, x_k)
            x_next = x_k + direction * alpha * tf.sign(grad)
            return tf.clip_by_value(x_next, x - eps, x + eps)

        return step

    return cached(model, (kind, temperature), build)
