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

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import (
    as_tensor,
    cached,
    check_arguments,
    check_inputs,
    logits_function,
    mean_region_dice,
    per_sample_scale,
)
from keras_advseg.attacks.losses import attack_loss
from keras_advseg.attacks.registry import ATTACK_LOSSES


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
    # the highest-loss point with its loss and gradient: a step-size restart resumes there
    # with the gradient it already has, as the authors' implementation does
    x_max, f_max, g_max = x_k, loss, grad
    x_best, best_score = x_k, score
    x_prev = x_k
    marks = checkpoints(steps)
    last_mark, improvements = 0, tf.zeros_like(loss)
    eta_at_mark, f_max_at_mark = eta, f_max
    step_sizes, halved = [], []  # tensors, read once the loop is done
    stopped = (score <= stop_score) if stop_score is not None else tf.zeros_like(score, tf.bool)
    for k in range(steps - 1):
        # the one read of a device value per step, and only with early stopping
        if stop_score is not None and bool(tf.reduce_all(stopped)):
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
        better_mask = tf.reshape(better, shape)
        x_max = tf.where(better_mask, x_next, x_max)
        g_max = tf.where(better_mask, new_grad, g_max)
        f_max = tf.where(better, new_loss, f_max)
        lower = new_score < best_score
        x_best = tf.where(tf.reshape(lower, shape), x_next, x_best)
        best_score = tf.minimum(best_score, new_score)
        if stop_score is not None:
            stopped = stopped | (best_score <= stop_score)
        x_prev, x_k, loss, grad = x_k, x_next, new_loss, new_grad
        step_sizes.append(tf.reshape(eta, [-1]))
        if (k + 1) in marks[1:]:
            window = (k + 1) - last_mark
            few = improvements < rho * window
            stuck = tf.logical_and(_same(eta_at_mark, eta), tf.equal(f_max_at_mark, f_max))
            halve = tf.logical_or(few, stuck)
            any_halved = tf.reduce_any(halve)
            halved.append((k + 1, any_halved))
            mask = tf.reshape(halve, shape)
            eta_at_mark, f_max_at_mark = eta, f_max
            eta = tf.where(mask, eta / 2.0, eta)
            x_k = tf.where(mask, x_max, x_k)
            x_prev = tf.where(any_halved, x_k, x_prev)  # a halving restarts every momentum
            loss = tf.where(halve, f_max, loss)
            grad = tf.where(mask, g_max, grad)
            last_mark, improvements = k + 1, tf.zeros_like(loss)
    info = {
        "gradients": gradients,
        "step_sizes": [np.asarray(size) for size in step_sizes],
        "halvings": [mark for mark, any_halved in halved if bool(any_halved)],
    }
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
        model, x, y, relative, temperature: as :func:`~keras_advseg.attacks.fast_gradient.fgsm`.
        eps: Budget of the L-inf ball.
        steps: Iterations (gradient evaluations; the paper's default 100).
        loss: A name from :data:`~keras_advseg.attacks.registry.ATTACK_LOSSES` (see
            :mod:`keras_advseg.attacks.losses`).
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
    check_arguments(eps=eps, steps=steps, temperature=temperature, loss=loss)
    x, y = check_inputs(x, y)
    if eps == 0:  # nothing to search: no gradient taken
        if info is not None:
            info.update({"gradients": 0, "step_sizes": [], "halvings": []})
        return x
    step = _compiled(model, ATTACK_LOSSES.canonical(loss), float(temperature))
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


def run_apgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int,
    loss: str,
    temperature: float = 1.0,
    stop_dice: float | None = 0.0,
    start=None,
    info: dict | None = None,
    **_,
):
    """The registry's runner of ``apgd-<loss>``: deterministic from ``x`` (no ``seed``), as in
    the ensemble; ``info["gradients"]`` counts the gradients of all samples."""
    record = {}
    x_adv = apgd(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        loss=loss,
        temperature=temperature,
        stop_dice=stop_dice,
        start=start,
        info=record,
    )
    if info is not None:  # early stopping changes the count
        info["gradients"] = record["gradients"] * int(x.shape[0])
    return x_adv


def _compiled(model, loss_name: str, temperature: float):
    """APGD's compiled step of ``model``: per-sample loss, input gradient and mean Dice."""

    def build():
        loss_fn = attack_loss(loss_name, temperature)
        forward = logits_function(model)  # shared with the other attacks; no reference to model

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = forward(x)
                per_sample = loss_fn(y, logits)
                total = tf.reduce_sum(per_sample)
            return per_sample, tape.gradient(total, x), mean_region_dice(y, logits)

        return step

    return cached(model, ("apgd", loss_name, temperature), build)
