"""Iterative FGSM (eq. 2), targeted iterative FGSM (eq. 3) and the i-FGSM trajectory."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import (
    as_tensor,
    check_arguments,
    check_inputs,
    compiled,
    per_sample_scale,
)


def ifgsm(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Iterative FGSM, eq. 2: ``x_{k+1} = Proj_eps(x_k + alpha * sign(grad loss(x_k, y)))``.

    Args:
        model, x, y, relative, loss, clip, temperature: as
            :func:`~keras_advseg.attacks.fast_gradient.fgsm`.
        eps: Budget of the L-inf ball around ``x`` (relative to the input's intensity range by default).
        steps: Iterations N (paper: 10).
        alpha: Step size in the same units as ``eps``; default ``eps / steps``
            (the paper's ``alpha * N = eps``).

    Returns:
        The adversarial batch.

    Raises:
        ValueError: invalid arguments.
    """
    return _iterative(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        alpha=alpha,
        relative=relative,
        loss=loss,
        clip=clip,
        temperature=temperature,
        direction=1.0,
    )


def targeted_ifgsm(
    model,
    x,
    target,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Targeted iterative FGSM, eq. 3, DESCENDING the loss towards ``target``.

    The paper prints ``+`` in eq. 3 but describes "iteratively minimizing the
    loss between the output label and the target label"; we follow the text:
    ``x_{k+1} = Proj_eps(x_k - alpha * sign(grad loss(x_k, target)))``. (The
    literature's "TI-FGSM" is a different, translation-invariant attack.)

    Args:
        target: One-hot target ``(B, X, Y, Z, K)``; the paper's is
            :func:`all_label_target` (every voxel label 1).
        Others: as :func:`ifgsm`.

    Returns:
        The adversarial batch.
    """
    return _iterative(
        model,
        x,
        target,
        eps=eps,
        steps=steps,
        alpha=alpha,
        relative=relative,
        loss=loss,
        clip=clip,
        temperature=temperature,
        direction=-1.0,
    )


def all_label_target(y, label_index: int = 1) -> tf.Tensor:
    """The paper's target: every voxel labelled 1 (necrotic/non-enhancing core).

    Args:
        y: One-hot labels ``(..., K)`` (only the shape is used).
        label_index: One-hot index of the target class.

    Returns:
        One-hot float32 target of the same shape.
    """
    y = as_tensor(y)
    return tf.one_hot(tf.fill(tf.shape(y)[:-1], label_index), y.shape[-1], dtype=tf.float32)


class Trajectory(NamedTuple):
    """Result of :func:`ifgsm_trajectory`.

    Attributes:
        x_adv: Final adversarial batch (iteration N).
        labels: uint8 BraTS label maps after each iteration, ``(N, B, X, Y, Z)``.
        losses: Attack loss after each iteration, ``(N, B)``.
        inputs: The iterates ``(N, B, X, Y, Z, C)`` when ``keep_inputs``, else None.
    """

    x_adv: tf.Tensor
    labels: np.ndarray
    losses: np.ndarray
    inputs: tf.Tensor | None


def ifgsm_trajectory(
    model,
    x,
    y,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    relative: bool = True,
    loss="dice",
    clip=None,
    temperature: float = 1.0,
    targeted: bool = False,
    keep_inputs: bool = False,
) -> Trajectory:
    """Runs (targeted) i-FGSM once and records the prediction after EVERY iteration.

    The forward pass inside each step's gradient is the prediction of the
    current iterate, so iterations 1..N cost N gradients and one extra forward
    pass, instead of 1 + 2 + ... + N gradients for N separate runs (the paper's
    Fig. 3/4 curves).

    Args:
        targeted: Descend towards ``y`` (eq. 3) instead of ascending (eq. 2).
        keep_inputs: Also return every iterate (for PSNR/SSIM per iteration).
        Others: as :func:`ifgsm`.

    Returns:
        A :class:`Trajectory`; iteration k equals ``ifgsm(..., steps=k, alpha=alpha)``
        with the same ``alpha``.
    """
    check_arguments(
        eps=eps, steps=steps, alpha=alpha, clip=clip, loss=loss, temperature=temperature
    )
    x, y = check_inputs(x, y, what="target" if targeted else "labels")
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    eps_t = per_sample_scale(x, eps, relative)
    alpha_t = per_sample_scale(x, eps / steps if alpha is None else alpha, relative)
    x_adv, labels, losses, inputs = fns.trajectory(
        x, y, eps_t, alpha_t, steps, -1.0 if targeted else 1.0, keep_inputs
    )
    return Trajectory(x_adv, labels.numpy(), losses.numpy(), inputs)


def _iterative(model, x, y, *, eps, steps, alpha, relative, loss, clip, temperature, direction):
    check_arguments(
        eps=eps, steps=steps, alpha=alpha, clip=clip, loss=loss, temperature=temperature
    )
    x, y = check_inputs(x, y, what="target" if direction < 0 else "labels")
    if eps == 0:
        return x
    fns = compiled(model, loss=loss, temperature=temperature, clip=clip)
    eps_t = per_sample_scale(x, eps, relative)
    alpha_t = per_sample_scale(x, eps / steps if alpha is None else alpha, relative)
    return fns.iterate(x, x, y, eps_t, alpha_t, steps, direction)


def run_ifgsm(model, x, y, *, eps: float, steps: int, temperature: float = 1.0, loss="dice", **_):
    """The registry's runner of ``ifgsm`` (see :func:`keras_advseg.attacks.run_attack`)."""
    return ifgsm(model, x, y, eps=eps, steps=steps, temperature=temperature, loss=loss)


def run_targeted_ifgsm(
    model, x, y, *, eps: float, steps: int, temperature: float = 1.0, loss="dice", **_
):
    """The registry's runner of ``targeted-ifgsm``: towards the paper's target,
    :func:`all_label_target` of the labels ``y``."""
    return targeted_ifgsm(
        model, x, all_label_target(y), eps=eps, steps=steps, temperature=temperature, loss=loss
    )
