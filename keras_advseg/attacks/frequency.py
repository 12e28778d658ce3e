"""A frequency-domain attack: VAFA (Hanif et al. 2023, "Frequency Domain Adversarial Training for
Robust Volumetric Medical Segmentation"), which leaves the l-infinity ball.

The volume is cut into blocks (8^3, or the paper's 32^3), each block's 3-D DCT coefficients are
quantised with a
learned quantisation table ``q`` (one entry per coefficient, block and sequence, within
``[q_min, q_max]`` on intensities scaled to 0-255 as in VAFA), and the attack learns the tables
that raise the segmentation loss, through VAFA's differentiable rounding (AdvDrop's
``phi_diff``) whose sharpness grows with the steps. What it removes is high-frequency detail, as
a lossy compression would: the change is not small in l-infinity, so it is reported with PSNR
and SSIM beside Dice, and it checks a model outside the threat model it may have been trained
for. The paper's objective keeps the volume similar to the clean one: it raises the
segmentation loss minus VAFA's block-wise SSIM loss ``1 - SSIM`` (``ssim=True``; a 3-D Gaussian
window of 3 voxels, sigma 1.5, inside each block, intensities scaled to 0-1, SSIM clipped at 0,
as VAFA's code calls ``pytorch_msssim``). :data:`VAFA_SETTINGS` names the two settings the
package runs: ``light`` (8^3 blocks, q_max 10, no SSIM: VAFA's code defaults) and ``paper``
(32^3 blocks, q_max 20, 20 steps, Dice minus SSIM: the paper's main setting).

Differences from VAFA's code: the returned volume is quantised with exact rounding (VAFA returns
its last soft-rounded iterate), so that its DCT coefficients are exactly multiples of the
table; it is mapped back to the input's own intensities without clipping or VAFA's per-slice
renormalisation (the model takes standardised inputs).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_advseg.attacks.core import cached, check_inputs, logits_function
from keras_advseg.attacks.losses import attack_loss
from keras_advseg.vocabulary import VAFA_SETTINGS, fitting_block

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


def block_ssim(a, b):
    """VAFA's SSIM loss term: the mean over blocks and sequences of SSIM within each block, a 3-D
    Gaussian window of 3 voxels (sigma 1.5) without padding, data range 1, each block's SSIM
    clipped at 0 (``pytorch_msssim.ssim(..., win_size=3, nonnegative_ssim=True)``).

    Args:
        a, b: Blocks ``(B, nx, ny, nz, C, s, s, s)`` of volumes scaled to 0-1.

    Returns:
        ``(B,)`` mean block SSIM per sample.
    """
    g = np.exp(-((np.arange(3) - 1.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    kernel = tf.constant(np.einsum("i,j,k->ijk", g, g, g)[..., None, None], tf.float32)
    batch = tf.shape(a)[0]
    side = a.shape[-1]

    def flat(t):
        return tf.reshape(t, [-1, side, side, side, 1])

    def blur(t):
        return tf.nn.conv3d(t, kernel, strides=[1] * 5, padding="VALID")

    x, y = flat(a), flat(b)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    per_block = tf.nn.relu(tf.reduce_mean(ssim_map, axis=[1, 2, 3, 4]))
    return tf.reduce_mean(tf.reshape(per_block, [batch, -1]), axis=1)


class _Vafa:
    def __init__(self, model, loss, temperature, block: int, ssim: bool):
        self.logits = logits_function(model)
        self.loss_fn = attack_loss(loss, temperature)
        self.d = tf.constant(dct_matrix(block))
        self.block, self.ssim = block, ssim
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
            if self.ssim:  # the paper's objective: loss - (1 - SSIM), SSIM on 0-1 intensities
                clean = idct3(coefficients, self.d) / 255.0
                moved = to_blocks((x_adv - lo) / span, self.block)
                loss -= tf.reduce_sum(1.0 - block_ssim(clean, moved))
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
    block: int = BLOCK,
    ssim: bool = False,
):
    """VAFA: learn block-DCT quantisation tables that raise the loss; return the quantised volume.

    Args:
        model: Logits model.
        x: ``(B, X, Y, Z, C)``; each side a multiple of ``block``.
        y: One-hot labels.
        steps: Signed-gradient updates of the tables (step 1, VAFA's).
        q_min, q_max: The tables' bounds on intensities scaled to 0-255 (VAFA's 5 and 10):
            a larger ``q_max`` removes more detail.
        loss, temperature: The loss raised (the attack losses' vocabulary).
        return_tables: Also return the learned tables ``(B, nx, ny, nz, C, b, b, b)``.
        block: The blocks' side (VAFA's code: 8; the paper: 32); a power of 2, at least 8.
        ssim: Raise the loss minus VAFA's block-wise SSIM loss (the paper's objective), which
            keeps the quantised volume similar to the clean one.

    Returns:
        The quantised batch, in ``x``'s intensities (and the tables).

    Raises:
        InputError: bad shapes, a side not a multiple of 8, or ``q_min > q_max``.
    """
    from keras_advseg.errors import InputError

    x, y = check_inputs(x, y)
    if block < BLOCK or block & (block - 1):
        raise InputError(f"vafa's block must be a power of 2, at least {BLOCK}. Received: {block}")
    if any(int(s) % block for s in x.shape[1:4]):
        raise InputError(f"vafa needs sides that are multiples of {block}. Received: {x.shape}")
    if not 0 < q_min <= q_max or steps < 1:
        raise InputError(
            f"vafa needs 0 < q_min <= q_max and steps >= 1. Received: q_min={q_min}, "
            f"q_max={q_max}, steps={steps}"
        )
    fns = cached(
        model,
        ("vafa", str(loss), float(temperature), int(block), bool(ssim)),
        lambda: _Vafa(model, loss, temperature, int(block), bool(ssim)),
    )
    axes = [1, 2, 3, 4]
    lo = tf.reduce_min(x, axis=axes, keepdims=True)
    span = tf.maximum(tf.reduce_max(x, axis=axes, keepdims=True) - lo, 1e-12)
    coefficients = dct3(to_blocks((x - lo) / span * 255.0, block), fns.d)
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


def run_vafa(
    model, x, y, *, steps: int, temperature: float = 1.0, loss="dice", setting="light", **_
):
    """The registry's runner of ``vafa`` (``eps`` does not apply: the budget is ``q_max``), in a
    named setting of :data:`VAFA_SETTINGS` (the block shrinks to fit a small volume:
    :func:`~keras_advseg.vocabulary.fitting_block`)."""
    chosen = VAFA_SETTINGS[setting]
    return vafa(
        model,
        x,
        y,
        steps=chosen.steps or steps,
        q_max=chosen.q_max,
        temperature=temperature,
        loss=loss,
        block=fitting_block(np.shape(x)[1:4], chosen.block),
        ssim=chosen.ssim,
    )
