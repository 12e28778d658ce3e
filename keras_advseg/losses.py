"""The soft Dice loss of the paper (eq. 5-7), from logits with a temperature (eq. 4)."""

from __future__ import annotations

import keras
from keras import ops


def soft_dice(
    y_true,
    logits,
    *,
    temperature: float = 1.0,
    smooth: float = 1e-5,
    include_background: bool = False,
    from_logits: bool = True,
):
    """Per-sample soft Dice coefficient, averaged over the classes (eq. 5 / eq. 7).

    ``D = mean_i (2 sum p_i y_i + gamma) / (sum p_i + sum y_i + gamma)`` over the
    foreground classes ``i`` (background, index 0, ignored by default), with
    ``p = softmax(logits / T)`` (eq. 4) and sums over all voxels of a sample.

    The paper writes ``1/N`` in front of a sum over ``N - 1`` classes; that
    constant only rescales the loss, so we average over the classes summed,
    which keeps ``D`` in [0, 1] with ``D = 1`` for a perfect prediction.

    Args:
        y_true: One-hot or soft targets ``(B, ..., N)`` (soft: eq. 7, distillation).
        logits: Model outputs ``(B, ..., N)``; probabilities if ``from_logits=False``.
        temperature: Softmax temperature ``T`` (eq. 4).
        smooth: ``gamma``, keeps empty classes defined.
        include_background: Also average over class 0.
        from_logits: Whether ``logits`` are logits.

    Returns:
        float32 tensor ``(B,)`` of Dice coefficients.
    """
    y_true = ops.cast(y_true, "float32")
    logits = ops.cast(logits, "float32")
    probs = ops.softmax(logits / temperature, axis=-1) if from_logits else logits
    if not include_background:
        probs, y_true = probs[..., 1:], y_true[..., 1:]
    batch = ops.shape(probs)[0]
    classes = ops.shape(probs)[-1]
    probs = ops.reshape(probs, (batch, -1, classes))
    y_true = ops.reshape(y_true, (batch, -1, classes))
    intersection = ops.sum(probs * y_true, axis=1)
    denominator = ops.sum(probs, axis=1) + ops.sum(y_true, axis=1)
    return ops.mean((2.0 * intersection + smooth) / (denominator + smooth), axis=-1)


def voxel_cross_entropy(y_true, logits, temperature: float = 1.0):
    """Cross-entropy of every voxel, ``-sum_k y_k log softmax(z / T)_k``.

    The one voxel cross-entropy of the package: the attacks' CE losses, SegPGD's and
    CosPGD's weighted CE and the masked CE losses of APGD all start from it.

    Args:
        y_true: One-hot or soft targets ``(B, ..., K)``.
        logits: Model outputs ``(B, ..., K)``.
        temperature: Softmax temperature ``T`` (eq. 4).

    Returns:
        float32 tensor ``(B, ...)``: one value per voxel.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1)
    return -ops.sum(ops.cast(y_true, "float32") * log_probs, axis=-1)


def soft_dice_loss(y_true, logits, **kwargs):
    """``1 - soft_dice`` per sample (eq. 6); keyword arguments as :func:`soft_dice`."""
    return 1.0 - soft_dice(y_true, logits, **kwargs)


@keras.saving.register_keras_serializable(package="keras_advseg")
class SoftDiceLoss(keras.losses.Loss):
    """Soft Dice loss ``1 - D`` (eq. 5-7) as a Keras loss.

    Per-sample Dice averaged over the foreground classes, then over the batch
    by the loss reduction. Computed in float32 also under mixed precision.

    Args:
        temperature: Softmax temperature ``T`` of eq. 4 (distillation trains at T > 1).
        smooth: ``gamma`` in eq. 5.
        include_background: Include class 0 (the paper ignores it).
        from_logits: Whether predictions are logits (the package's models return logits).
    """

    def __init__(
        self,
        temperature=1.0,
        smooth=1e-5,
        include_background=False,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="soft_dice_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, dtype="float32", **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive. Received: temperature={temperature}")
        self.temperature = float(temperature)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return soft_dice_loss(
            y_true,
            y_pred,
            temperature=self.temperature,
            smooth=self.smooth,
            include_background=self.include_background,
            from_logits=self.from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature,
            smooth=self.smooth,
            include_background=self.include_background,
            from_logits=self.from_logits,
        )
        return config
