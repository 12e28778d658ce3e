"""A frequency-domain attack: VAFA (Hanif et al. 2023, "Frequency Domain Adversarial Training for
Robust Volumetric Medical Segmentation"), which leaves the l-infinity ball.

The volume is cut into 8^3 blocks, each block's 3-D DCT coefficients are quantised with a
learned quantisation table ``q`` (one entry per coefficient, block and sequence, within
``[q_min, q_max]`` on intensities scaled to 0-255 as in VAFA), and the attack learns the tables
that raise the segmentation loss, through VAFA's differentiable rounding (AdvDrop's
``phi_diff``) whose sharpness grows with the steps. What it removes is high-frequency detail, as
a lossy compression would: the change is not small in l-infinity, so it is reported with PSNR
and SSIM beside Dice, and it checks a model outside the threat model it may have been trained
for.

Differences from VAFA's code: the returned volume is quantised with exact rounding (VAFA returns
its last soft-rounded iterate), so that its DCT coefficients are exactly multiples of the
table; it is mapped back to the input's own intensities without clipping or VAFA's per-slice
renormalisation (the model takes standardised inputs); the optional SSIM loss is left out.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import cached, check_inputs, logits_function
from keras_advseg.attacks.losses import attack_loss

BLOCK = 8


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``coefficients = D @ signal``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.astype(np.float32)


def to_blocks(x, block: int = BLOCK):
    """``(B, X, Y, Z, C)`` (sides multiples of ``block``) -> ``(B, nx, ny, nz, C, b, b, b)``."""
    b, X, Y, Z, C = (tf.shape(x)[i] for i in range(5))
    blocks = tf.reshape(x, [b, X // block, block, Y // block, block, Z // block, block, C])
    return tf.transpose(blocks, [0, 1, 3, 5, 7, 2, 4, 6])


def from_blocks(blocks, shape):
    """The inverse of :func:`to_blocks` for a volume of ``shape``.

    The volume keeps the static shape the blocks imply: a network called on it inside a
    ``tf.function`` then reuses the trace (and the gradient) of the volumes it was traced on,
    where a fully unknown shape would trace it, and build its backward pass, once more.
    """
    volume = tf.reshape(tf.transpose(blocks, [0, 1, 5, 2, 6, 3, 7, 4]), shape)
    b, nx, ny, nz, c, s = blocks.shape[:6]
    if None not in (nx, ny, nz, c, s):
        volume = tf.ensure_shape(volume, [b, nx * s, ny * s, nz * s, c])
    return volume


def dct3(blocks, d):
    """3-D DCT-II over the last three axes."""
    return tf.einsum("ia,jb,kc,...abc->...ijk", d, d, d, blocks)


def idct3(coefficients, d):
    """The inverse of :func:`dct3` (the DCT matrix is orthonormal)."""
    return tf.einsum("ai,bj,ck,...abc->...ijk", d, d, d, coefficients)


def soft_round(x, alpha):
    """AdvDrop's differentiable rounding: ``floor(x)`` plus a tanh step of sharpness set by
    ``alpha`` (close to rounding as ``alpha`` goes to 0)."""
    s = 1.0 / (1.0 - alpha)
    k = tf.math.log(2.0 / alpha - 1.0)
    floor = tf.floor(x)
    return (tf.tanh((x - (floor + 0.5)) * k) * s + 1.0) / 2.0 + floor


class _Vafa:
    def __init__(self, model, loss, temperature):
        self.logits = logits_function(model)
        self.loss_fn = attack_loss(loss, temperature)
        self.d = tf.constant(dct_matrix())
        self.step = tf.function(self._step)

    def _functions(self):
        return (self.step,)

    def reconstruct(self, coefficients, q, alpha, lo, span, shape, exact=False):
        quantised = tf.round(coefficients / q) if exact else soft_round(coefficients / q, alpha)
        scaled = from_blocks(idct3(quantised * q, self.d), shape)
        return scaled / 255.0 * span + lo

    def _step(self, coefficients, q, y, alpha, lo, span, shape):
        with tf.GradientTape() as tape:
            tape.watch(q)
            x_adv = self.reconstruct(coefficients, q, alpha, lo, span, shape)
            loss = tf.reduce_sum(self.loss_fn(y, self.logits(x_adv)))
        return tape.gradient(loss, q)


def vafa(
    model,
    x,
    y,
    *,
    steps: int = 20,
    q_min: float = 5.0,
    q_max: float = 10.0,
    loss="dice",
    temperature: float = 1.0,
    return_tables: bool = False,
):
    """VAFA: learn block-DCT quantisation tables that raise the loss; return the quantised volume.

    Args:
        model: Logits model.
        x: ``(B, X, Y, Z, C)``; each side a multiple of 8.
        y: One-hot labels.
        steps: Signed-gradient updates of the tables (step 1, VAFA's).
        q_min, q_max: The tables' bounds on intensities scaled to 0-255 (VAFA's 5 and 10):
            a larger ``q_max`` removes more detail.
        loss, temperature: The loss raised (the attack losses' vocabulary).
        return_tables: Also return the learned tables ``(B, nx, ny, nz, C, 8, 8, 8)``.

    Returns:
        The quantised batch, in ``x``'s intensities (and the tables).

    Raises:
        InputError: bad shapes, a side not a multiple of 8, or ``q_min > q_max``.
    """
    from keras_advseg.errors import InputError

    x, y = check_inputs(x, y)
    if any(int(s) % BLOCK for s in x.shape[1:4]):
        raise InputError(f"vafa needs sides that are multiples of {BLOCK}. Received: {x.shape}")
    if not 0 < q_min <= q_max or steps < 1:
        raise InputError(
            f"vafa needs 0 < q_min <= q_max and steps >= 1. Received: q_min={q_min}, "
            f"q_max={q_max}, steps={steps}"
        )
    fns = cached(
        model, ("vafa", str(loss), float(temperature)), lambda: _Vafa(model, loss, temperature)
    )
    axes = [1, 2, 3, 4]
    lo = tf.reduce_min(x, axis=axes, keepdims=True)
    span = tf.maximum(tf.reduce_max(x, axis=axes, keepdims=True) - lo, 1e-12)
    coefficients = dct3(to_blocks((x - lo) / span * 255.0), fns.d)
    q = tf.fill(tf.shape(coefficients), tf.constant(q_max, tf.float32))
    shape = tf.shape(x)
    alphas = np.linspace(0.1, 1e-20, steps + 1)[:-1]
    for alpha in alphas:
        grad = fns.step(
            coefficients, q, y, tf.constant(max(alpha, 1e-6), tf.float32), lo, span, shape
        )
        q = tf.clip_by_value(q + tf.sign(grad), q_min, q_max)
    x_adv = fns.reconstruct(coefficients, q, None, lo, span, shape, exact=True)
    return (x_adv, q) if return_tables else x_adv


def run_vafa(model, x, y, *, steps: int, temperature: float = 1.0, loss="dice", **_):
    """The registry's runner of ``vafa`` (``eps`` does not apply: the budget is ``q_max``)."""
    return vafa(model, x, y, steps=steps, temperature=temperature, loss=loss)
