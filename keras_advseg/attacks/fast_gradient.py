"""FGSM (eq. 1) and the one-gradient FGSM sweep over eps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import tensorflow as tf

from keras_advseg.attacks.core import (
    check_arguments,
    check_inputs,
    compiled,
    per_sample_scale,
)


def fgsm(
    model,
    x,
    y,
    *,
    eps: float,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Fast gradient sign method, eq. 1: ``x + eps * sign(grad_x loss(x, y))``.

    Args:
        model: Keras model returning logits (3-D UNet, or a 2-D UNet wrapped in
            :class:`~keras_advseg.models.SliceWise`).
        x: Inputs ``(B, X, Y, Z, C)``.
        y: One-hot labels ``(B, X, Y, Z, K)``.
        eps: Budget; a fraction of each sample's intensity range (max - min) when ``relative``
            (paper: 0.05), else in intensity units.
        relative: Scale ``eps`` by each sample's intensity range.
        loss: A name from :data:`~keras_advseg.attacks.registry.ATTACK_LOSSES` (``"dice"``,
            the paper's soft Dice; ``"ce"``; ...) or a callable
            ``(y, logits) -> per-sample or scalar loss``.
        clip: Optional ``(lo, hi)`` range for the result.
        temperature: Softmax temperature of the attack's loss (attack distilled
            models at the logit level with ``T > 1``).

    Returns:
        The adversarial batch, float32, same shape as ``x``.

    Raises:
        ValueError: invalid arguments (see :func:`~keras_advseg.attacks.core.check_arguments`).
        InputError: ``x`` or ``y`` of the wrong shape (see
            :func:`~keras_advseg.attacks.core.check_inputs`).
    """
    check_arguments(eps=eps, clip=clip, loss=loss, temperature=temperature)
    x, y = check_inputs(x, y)
    if eps == 0:
        return x
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    _, grad = fns.gradient(x, y)
    return fgsm_step(x, grad, eps=eps, relative=relative, clip=clip)


def fgsm_step(x, grad, *, eps: float, relative: bool = True, clip=None) -> tf.Tensor:
    """Eq. 1 given the input gradient: ``x + eps * range(x) * sign(grad)``.

    The step that :func:`fgsm` takes, for callers that already hold the
    gradient (adversarial training takes it from its own backward pass).

    Args:
        x: Inputs ``(B, ...)``.
        grad: Gradient of the loss with respect to ``x``, same shape.
        eps, relative, clip: as :func:`fgsm`.

    Returns:
        The adversarial batch.
    """
    return _apply(x, tf.sign(grad), per_sample_scale(x, eps, relative), clip)


def fgsm_sweep(
    model,
    x,
    y,
    eps_values: Sequence[float],
    *,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
) -> Iterator[tuple[float, tf.Tensor, tf.Tensor]]:
    """FGSM at many budgets from ONE gradient: the sign of the gradient does not depend on eps.

    A sweep over 11 values costs one gradient and 11 forward passes, instead
    of 11 gradients and 11 forward passes.

    Args:
        model, x, y, relative, loss, clip, temperature: as :func:`fgsm`.
        eps_values: Budgets (paper: 0, 0.001, ..., 0.010).

    Yields:
        ``(eps, x_adv, logits)`` per budget, in the given order; ``x_adv`` is
        exactly what :func:`fgsm` returns for that ``eps``.

    Raises:
        ValueError: an eps is negative, or other invalid arguments.
    """
    for eps in eps_values:
        check_arguments(eps=eps, clip=clip, loss=loss, temperature=temperature)
    x, y = check_inputs(x, y)
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    unit = per_sample_scale(x, 1.0, relative)
    direction = None
    for eps in eps_values:
        if eps == 0:
            x_adv, (logits, _) = x, fns.forward(x, y)
        else:
            if direction is None:
                direction = tf.sign(fns.gradient(x, y)[1])
            x_adv, logits = fns.perturbed_forward(x, direction, unit * eps)
        yield float(eps), x_adv, logits


def run_fgsm(model, x, y, *, eps: float, temperature: float = 1.0, loss="dice", **_):
    """The registry's runner of ``fgsm`` (see :func:`keras_advseg.attacks.run_attack`)."""
    return fgsm(model, x, y, eps=eps, temperature=temperature, loss=loss)


def _apply(x, direction, scale, clip):
    x_adv = x + scale * direction
    if clip is not None:
        x_adv = tf.clip_by_value(x_adv, clip[0], clip[1])
    return x_adv
