"""Auto-PGD (Croce & Hein 2020) with losses for segmentation.

APGD needs no step size: it starts at ``2 * eps``, moves with momentum 0.75,
and at checkpoints ``w_j`` (``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the iterations) halves the
step and restarts from the best point when fewer than ``rho = 0.75`` of the
steps since the last checkpoint raised the loss, or when neither the step nor
the best loss changed. For segmentation the returned iterate is, per sample,
the one with the **lowest mean Dice** (WT, TC, ET) seen, not the highest loss.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import (
    as_tensor,
    check_arguments,
    logits_function,
    per_sample_scale,
)
from keras_advseg.losses import soft_dice_loss

APGD_LOSSES = ("ce", "dice", "masked-ce", "balanced-masked-ce", "js")
_REGION_INDICES = ((1, 2, 3), (1, 3), (3,))  # WT, TC, ET as one-hot indices
_CACHE: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoint iterations (Croce & Hein 2020, sec. 3.2), in whole iterations as the
    authors' implementation counts them: first ``0.22 N``, then windows shrinking by ``0.03 N``
    down to at least ``0.06 N``."""
    window = max(int(0.22 * steps), 1)
    shrink, least = int(0.03 * steps), max(int(0.06 * steps), 1)
    marks, k = [0], window
    while k <= steps:
        marks.append(k)
        window = max(window - shrink, least)
        k += window
    return marks


def segmentation_loss(name: str, temperature: float = 1.0) -> Callable:
    """A per-sample attack loss ``(y, logits) -> (B,)`` for segmentation.

    ``ce``: mean voxel cross-entropy; ``dice``: soft Dice loss (eq. 5-7);
    ``masked-ce``: CE summed over voxels still classified correctly (the mask
    recomputed each step), divided by all voxels; ``balanced-masked-ce``: masked
    CE with each class weighted by ``1 / N_c`` (its voxels in the volume), aimed at
    Dice rather than voxel accuracy; ``js``: Jensen-Shannon divergence between the
    softmax and the one-hot label, averaged over voxels.

    Raises:
        ValueError: unknown loss.
    """
    if name not in APGD_LOSSES:
        raise ValueError(f"loss must be one of {APGD_LOSSES}. Received: loss={name!r}")

    def loss(y, logits):
        logits = tf.cast(logits, tf.float32) / temperature
        y = tf.cast(y, tf.float32)
        batch = tf.shape(logits)[0]
        if name == "dice":
            return soft_dice_loss(y, logits * temperature, temperature=temperature)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        if name == "js":
            p = tf.nn.softmax(logits, axis=-1)
            m = 0.5 * (p + y)
            kl_p = tf.reduce_sum(p * (tf.math.log(p + 1e-12) - tf.math.log(m + 1e-12)), -1)
            kl_y = tf.reduce_sum(y * (tf.math.log(y + 1e-12) - tf.math.log(m + 1e-12)), -1)
            return tf.reduce_mean(tf.reshape(0.5 * (kl_p + kl_y), [batch, -1]), 1)
        voxel_ce = -tf.reduce_sum(y * log_probs, axis=-1)
        if name == "ce":
            return tf.reduce_mean(tf.reshape(voxel_ce, [batch, -1]), 1)
        correct = tf.stop_gradient(
            tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32)
        )
        if name == "masked-ce":
            return tf.reduce_mean(tf.reshape(correct * voxel_ce, [batch, -1]), 1)
        per_class = tf.reshape(y, [batch, -1, tf.shape(y)[-1]])
        counts = tf.reduce_sum(per_class, axis=1, keepdims=True)  # (B, 1, K)
        weights = tf.reduce_sum(
            per_class / tf.maximum(counts, 1.0), -1
        )  # 1 / N_c of each voxel's class
        masked = tf.reshape(correct * voxel_ce, [batch, -1]) * weights
        return tf.reduce_sum(masked, 1)

    return loss


def mean_region_dice(y, logits):
    """Per sample, the mean hard Dice of WT, TC and ET (an empty region in both counts 1).

    Returns:
        float32 ``(B,)``.
    """
    depth = tf.shape(logits)[-1]
    predicted = tf.one_hot(tf.argmax(logits, -1), depth)
    batch = tf.shape(logits)[0]
    scores = []
    for indices in _REGION_INDICES:
        t = tf.reshape(
            tf.reduce_sum(tf.gather(tf.cast(y, tf.float32), indices, axis=-1), -1), [batch, -1]
        )
        p = tf.reshape(tf.reduce_sum(tf.gather(predicted, indices, axis=-1), -1), [batch, -1])
        total = tf.reduce_sum(t, 1) + tf.reduce_sum(p, 1)
        scores.append(
            tf.where(total > 0, 2 * tf.reduce_sum(t * p, 1) / tf.maximum(total, 1.0), 1.0)
        )
    return tf.add_n(scores) / len(scores)


def apgd_loop(
    loss_grad_score,
    x,
    eps,
    steps: int,
    *,
    start=None,
    stop_score: float | None = None,
    momentum: float = 0.75,
    rho: float = 0.75,
):
    """APGD's iteration on any differentiable per-sample loss (the algorithm, separate from models).

    Args:
        loss_grad_score: ``x -> (loss (B,), gradient like x, score (B,))``; the loss is
            ascended, and the iterate with the lowest score is returned.
        x: Centre of the ball ``(B, ...)``.
        eps: Per-sample budget broadcastable to ``x``.
        steps: Iterations (gradient evaluations).
        start: Starting point (default ``x``).
        stop_score: Stop a sample once its score is at most this (no further steps for it;
            the loop ends when every sample stopped).
        momentum, rho: The paper's 0.75 and 0.75.

    Returns:
        ``(x_best, info)``: the lowest-score iterate per sample and ``{"gradients": count,
        "step_sizes": [per-iteration step sizes (B,)], "halvings": [iterations where a step halved]}``.
    """
    x = as_tensor(x)
    eps = tf.cast(eps, tf.float32)
    lo, hi = x - eps, x + eps
    shape = [-1] + [1] * (len(x.shape) - 1)
    x_k = tf.clip_by_value(as_tensor(start) if start is not None else x, lo, hi)
    eta = 2.0 * eps * tf.ones_like(eps)
    loss, grad, score = loss_grad_score(x_k)
    gradients = 1
    x_max, f_max = x_k, loss
    x_best, best_score = x_k, score
    x_prev = x_k
    marks = checkpoints(steps)
    last_mark, improvements = 0, tf.zeros_like(loss)
    eta_at_mark, f_max_at_mark = eta, f_max
    info = {"step_sizes": [], "halvings": []}
    stopped = (score <= stop_score) if stop_score is not None else tf.zeros_like(score, tf.bool)
    for k in range(steps - 1):
        if bool(tf.reduce_all(stopped)):
            break
        z = tf.clip_by_value(x_k + eta * tf.sign(grad), lo, hi)
        if k == 0:
            x_next = z
        else:
            x_next = tf.clip_by_value(
                x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_prev), lo, hi
            )
        keep = tf.reshape(stopped, shape)
        x_next = tf.where(keep, x_k, x_next)
        new_loss, new_grad, new_score = loss_grad_score(x_next)
        gradients += 1
        improvements += tf.cast(new_loss > loss, tf.float32)
        better = new_loss > f_max
        x_max = tf.where(tf.reshape(better, shape), x_next, x_max)
        f_max = tf.where(better, new_loss, f_max)
        lower = new_score < best_score
        x_best = tf.where(tf.reshape(lower, shape), x_next, x_best)
        best_score = tf.minimum(best_score, new_score)
        if stop_score is not None:
            stopped = stopped | (best_score <= stop_score)
        x_prev, x_k, loss, grad = x_k, x_next, new_loss, new_grad
        info["step_sizes"].append(np.asarray(tf.reshape(eta, [-1])))
        if (k + 1) in marks[1:]:
            window = (k + 1) - last_mark
            few = improvements < rho * window
            stuck = tf.logical_and(_same(eta_at_mark, eta), tf.equal(f_max_at_mark, f_max))
            halve = tf.logical_or(few, stuck)
            if bool(tf.reduce_any(halve)):
                info["halvings"].append(k + 1)
            mask = tf.reshape(halve, shape)
            eta_at_mark, f_max_at_mark = eta, f_max
            eta = tf.where(mask, eta / 2.0, eta)
            restart = tf.where(mask, x_max, x_k)
            if bool(tf.reduce_any(halve)):
                x_k = restart
                x_prev = restart
                loss_r, grad_r, _ = loss_grad_score(x_k)
                gradients += 1
                loss, grad = loss_r, grad_r
            last_mark, improvements = k + 1, tf.zeros_like(loss)
    info["gradients"] = gradients
    return x_best, info


def _same(a, b):
    """Per sample: whether two per-sample step sizes (broadcast shape) are equal."""
    flat_a = tf.reshape(a, [tf.shape(a)[0], -1])
    flat_b = tf.reshape(b, [tf.shape(b)[0], -1])
    return tf.reduce_all(tf.equal(flat_a, flat_b), axis=1)


def apgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 100,
    loss: str = "masked-ce",
    seed: int | None = None,
    stop_dice: float | None = 0.0,
    start=None,
    relative: bool = True,
    temperature: float = 1.0,
    info: dict | None = None,
) -> tf.Tensor:
    """APGD with a segmentation loss; per sample, the iterate with the lowest mean Dice (WT, TC, ET).

    Args:
        model, x, y, relative, temperature: as :func:`~keras_advseg.attacks.fgsm`.
        eps: Budget of the L-inf ball.
        steps: Iterations (gradient evaluations; the paper's default 100).
        loss: One of :data:`APGD_LOSSES` (see :func:`segmentation_loss`).
        seed: Start from a uniform random point in the ball drawn from ``seed``; None: ``x``.
        stop_dice: Early stopping: a sample whose mean Dice reaches this takes no more
            steps (None: never); the returned iterate is the same.
        start: Starting point (projected onto the ball), e.g. a previous stage's result;
            overrides ``seed``.
        info: A dict that receives the loop's record (``gradients``, ``step_sizes``,
            ``halvings``; see :func:`apgd_loop`).

    Returns:
        The adversarial batch.

    Raises:
        ValueError: invalid arguments.
    """
    check_arguments(eps=eps, steps=steps, temperature=temperature)
    x, y = as_tensor(x), as_tensor(y)
    if eps == 0:
        return x
    step = _compiled(model, loss, float(temperature))
    eps_t = per_sample_scale(x, eps, relative)
    if start is not None:
        start = as_tensor(start)
    elif seed is not None:
        start = x + eps_t * tf.random.stateless_uniform(
            tf.shape(x), seed=[seed, 1], minval=-1.0, maxval=1.0
        )
    x_best, record = apgd_loop(
        lambda v: step(v, y), x, eps_t, steps, start=start, stop_score=stop_dice
    )
    if info is not None:
        info.update(record)
    return x_best


def _compiled(model, loss_name: str, temperature: float):
    per_model = _CACHE.setdefault(model, {})
    key = (loss_name, temperature)
    if key not in per_model:
        loss_fn = segmentation_loss(loss_name, temperature)
        forward = logits_function(model)  # shared with the other attacks; no reference to model

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = forward(x)
                per_sample = loss_fn(y, logits)
                total = tf.reduce_sum(per_sample)
            return per_sample, tape.gradient(total, x), mean_region_dice(y, logits)

        per_model[key] = step
    return per_model[key]
