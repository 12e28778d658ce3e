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
) -> tf.Tensor:
    """PGD: i-FGSM from a uniform random start in the eps-ball, best of ``restarts``.

    The stronger attack the paper calls for in its limitations. Each restart
    starts from ``x + U(-eps, eps)`` (stateless, from ``seed`` and the restart
    index), takes ``steps`` projected signed-gradient steps, and per sample
    the restart with the highest final loss is kept.

    Args:
        alpha: Step size; default ``2.5 * eps / steps`` (Madry et al.).
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
    x, y = check_inputs(x, y)
    if eps == 0:
        return x
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    eps_t = per_sample_scale(x, eps, relative)
    alpha_t = per_sample_scale(x, 2.5 * eps / steps if alpha is None else alpha, relative)
    best, best_loss = None, None
    for restart in range(restarts):
        start = x
        if random_start:
            noise = tf.random.stateless_uniform(
                tf.shape(x), seed=[seed, restart], minval=-1.0, maxval=1.0
            )
            start = x + eps_t * noise
            if clip is not None:
                start = tf.clip_by_value(start, clip[0], clip[1])
        x_adv = fns.iterate(x, start, y, eps_t, alpha_t, steps, 1.0)
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
    **_,
):
    """The registry's runner of ``pgd-dice`` (see :func:`keras_advseg.attacks.run_attack`)."""
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
    )
