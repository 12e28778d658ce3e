"""Projected gradient descent with random restarts (Madry et al. 2018)."""

from __future__ import annotations

import tensorflow as tf

from keras_advseg.attacks.core import check_arguments, check_inputs, compiled, per_sample_scale


def pgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    seed: int = 0,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
    norm: str = "linf",
) -> tf.Tensor:
    """PGD: i-FGSM from a uniform random start in the eps-ball, best of ``restarts``.

    The stronger attack the paper calls for in its limitations. Each restart
    starts from ``x + U(-eps, eps)`` (stateless, from ``seed`` and the restart
    index), takes ``steps`` projected signed-gradient steps, and per sample
    the restart with the highest final loss is kept.

    With ``norm="l2"`` the ball is ``||delta||_2 <= eps`` (``eps`` times the input's
    intensity range when ``relative``: the unit of a randomized-smoothing certificate's radius,
    :mod:`keras_advseg.certification`); the steps follow the normalised gradient and the
    random start is a Gaussian direction scaled to a uniform fraction of the radius.

    Args:
        alpha: Step size; default ``2.5 * eps / steps`` (Madry et al.).
        norm: ``"linf"`` (the paper's ball) or ``"l2"``.
        random_start: Start from a random point in the ball (else from ``x``).
        restarts: Number of restarts (>= 1).
        seed: Seed of the random starts.
        Others: as :func:`~keras_advseg.attacks.iterative.ifgsm`.

    Returns:
        The adversarial batch.

    Raises:
        ValueError: invalid arguments, or ``restarts < 1``.
    """
    check_arguments(
        eps=eps, steps=steps, alpha=alpha, clip=clip, loss=loss, temperature=temperature
    )
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1. Received: restarts={restarts}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2'. Received: norm={norm!r}")
    x, y = check_inputs(x, y)
    if eps == 0:
        return x
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    eps_t = per_sample_scale(x, eps, relative)
    alpha_t = per_sample_scale(x, 2.5 * eps / steps if alpha is None else alpha, relative)
    best, best_loss = None, None
    for restart in range(restarts):
        start = x
        if random_start and norm == "linf":
            noise = tf.random.stateless_uniform(
                tf.shape(x), seed=[seed, restart], minval=-1.0, maxval=1.0
            )
            start = x + eps_t * noise
        elif random_start:
            direction = tf.random.stateless_normal(tf.shape(x), seed=[seed, restart])
            axes = list(range(1, len(x.shape)))
            length = tf.sqrt(tf.reduce_sum(tf.square(direction), axis=axes, keepdims=True))
            fraction = tf.random.stateless_uniform(
                tf.shape(length), seed=[seed + 1, restart], minval=0.0, maxval=1.0
            )
            start = x + eps_t * fraction * direction / tf.maximum(length, 1e-12)
        if random_start and clip is not None:
            start = tf.clip_by_value(start, clip[0], clip[1])
        x_adv = fns.iterate(x, start, y, eps_t, alpha_t, steps, 1.0, norm=norm)
        _, final_loss = fns.forward(x_adv, y)
        if best is None:
            best, best_loss = x_adv, final_loss
        else:
            better = final_loss > best_loss
            mask = tf.reshape(better, [-1] + [1] * (len(x.shape) - 1))
            best = tf.where(mask, x_adv, best)
            best_loss = tf.where(better, final_loss, best_loss)
    return best


def run_pgd(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int,
    seed: int = 0,
    restarts: int = 1,
    temperature: float = 1.0,
    loss="dice",
    norm: str = "linf",
    **_,
):
    """The registry's runner of ``pgd-dice`` and ``pgd-l2`` (see
    :func:`keras_advseg.attacks.run_attack`)."""
    return pgd(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        seed=seed,
        restarts=restarts,
        temperature=temperature,
        loss=loss,
        norm=norm,
    )
