"""What every attack shares: the loss, the eps-ball, and compiled gradient loops.

Each model gets its compiled functions once (``tf.function``, cached per model
and per loss/temperature/clip setting). ``eps``, ``alpha`` and ``steps`` enter
as tensors and the iteration is a ``tf.while_loop``, so calls that differ only
in those values do not retrace. XLA is off: on CPU it is slower for 3-D
convolutions (see ``benchmarks/bench_attacks.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_advseg.losses import soft_dice_loss
from keras_advseg.metrics import logits_to_probabilities, probabilities_to_labels

LOSSES = ("dice", "ce")

_CACHE: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def check_arguments(*, eps: float, steps: int | None = None, alpha: float | None = None,
                    clip: tuple[float, float] | None = None, loss="dice", temperature: float = 1.0) -> None:
    """Validates attack arguments.

    Raises:
        ValueError: ``eps < 0``, ``steps < 1``, ``alpha < 0``, ``clip`` with
            ``lo > hi``, an unknown loss name, or ``temperature <= 0``.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0. Received: eps={eps}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1. Received: steps={steps}")
    if alpha is not None and alpha < 0:
        raise ValueError(f"alpha must be >= 0. Received: alpha={alpha}")
    if clip is not None and clip[0] > clip[1]:
        raise ValueError(f"clip must be (lo, hi) with lo <= hi. Received: clip={tuple(clip)}")
    if not callable(loss) and loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} or a callable. Received: loss={loss!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature}")


def per_sample_scale(x: tf.Tensor, value: float, relative: bool) -> tf.Tensor:
    """``value`` per sample, times the sample's max |x| when ``relative``.

    The paper's budget: "5% of the maximum pixel magnitude" of each input.

    Returns:
        float32 tensor broadcastable to ``x``: ``(B, 1, ..., 1)``.
    """
    shape = [-1] + [1] * (len(x.shape) - 1)
    value = tf.cast(value, x.dtype)
    if not relative:
        return tf.reshape(tf.fill([tf.shape(x)[0]], value), shape)
    peak = tf.reduce_max(tf.abs(tf.reshape(x, [tf.shape(x)[0], -1])), axis=1)
    return tf.reshape(value * peak, shape)


class Compiled:
    """The compiled functions of one model for one loss/temperature/clip setting."""

    def __init__(self, model: keras.Model, loss, temperature: float, clip):
        self.model = model
        self.loss_fn = _resolve_loss(loss, temperature)
        self.temperature = float(temperature)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.gradient = tf.function(self._gradient, reduce_retracing=True)
        self.iterate = tf.function(self._iterate, reduce_retracing=True)
        self.trajectory = tf.function(self._trajectory, reduce_retracing=True)
        self.forward = tf.function(self._forward, reduce_retracing=True)

    def tracing_count(self) -> int:
        return sum(f.experimental_get_tracing_count() for f in (self.gradient, self.iterate, self.trajectory, self.forward))

    def _loss_and_grad(self, x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self.model(x, training=False)
            per_sample = self.loss_fn(y, logits)
            total = tf.reduce_sum(per_sample)
        return logits, per_sample, tape.gradient(total, x)

    def _gradient(self, x, y):
        _, per_sample, grad = self._loss_and_grad(x, y)
        return per_sample, grad

    def _forward(self, x, y):
        logits = self.model(x, training=False)
        return logits, self.loss_fn(y, logits)

    def _step(self, x_k, x, grad, alpha, eps, direction):
        x_next = x_k + direction * alpha * tf.sign(grad)
        x_next = tf.clip_by_value(x_next, x - eps, x + eps)  # projection onto the eps-ball
        if self.clip is not None:
            x_next = tf.clip_by_value(x_next, self.clip[0], self.clip[1])
        return x_next

    def _iterate(self, x, x_start, y, eps, alpha, steps, direction):
        """``steps`` signed-gradient steps from ``x_start``, projected on the eps-ball of ``x``."""

        def body(i, x_k):
            _, _, grad = self._loss_and_grad(x_k, y)
            return i + 1, self._step(x_k, x, grad, alpha, eps, direction)

        _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_start))
        return x_adv

    def _trajectory(self, x, y, eps, alpha, steps, direction, keep_inputs: bool):
        """Like ``_iterate`` from ``x``; records the label map (and input) after every step.

        The forward pass inside step k's gradient is the prediction for iterate
        k, so N steps cost N gradients and one extra forward pass.
        """
        labels = tf.TensorArray(tf.uint8, size=steps)
        inputs = tf.TensorArray(x.dtype, size=steps if keep_inputs else 0, dynamic_size=not keep_inputs)
        losses = tf.TensorArray(tf.float32, size=steps)

        def body(i, x_k, labels, inputs, losses):
            logits, per_sample, grad = self._loss_and_grad(x_k, y)
            record = i > 0
            labels = tf.cond(record, lambda: labels.write(i - 1, self._labels(logits)), lambda: labels)
            losses = tf.cond(record, lambda: losses.write(i - 1, per_sample), lambda: losses)
            if keep_inputs:
                inputs = tf.cond(record, lambda: inputs.write(i - 1, x_k), lambda: inputs)
            return i + 1, self._step(x_k, x, grad, alpha, eps, direction), labels, inputs, losses

        _, x_adv, labels, inputs, losses = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), x, labels, inputs, losses)
        )
        logits, per_sample = self._forward(x_adv, y)
        labels = labels.write(steps - 1, self._labels(logits))
        losses = losses.write(steps - 1, per_sample)
        if keep_inputs:
            inputs = inputs.write(steps - 1, x_adv)
            return x_adv, labels.stack(), losses.stack(), inputs.stack()
        return x_adv, labels.stack(), losses.stack(), tf.zeros([0])

    def _labels(self, logits):
        return probabilities_to_labels(logits_to_probabilities(logits))


def compiled(model: keras.Model, *, loss="dice", temperature: float = 1.0, clip=None) -> Compiled:
    """The cached :class:`Compiled` functions of ``model`` for this setting."""
    key = (loss if isinstance(loss, str) else id(loss), float(temperature),
           None if clip is None else (float(clip[0]), float(clip[1])))
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = Compiled(model, loss, temperature, clip)
    return per_model[key]


def as_tensor(x) -> tf.Tensor:
    return tf.convert_to_tensor(x, tf.float32)


def _resolve_loss(loss, temperature: float) -> Callable:
    """Per-sample attack loss ``(y, logits) -> (B,)``."""
    if callable(loss):
        def custom(y, logits):
            value = tf.cast(loss(y, logits), tf.float32)
            if value.shape.rank == 0:  # a batch loss: spread it so that the sum is unchanged
                batch = tf.shape(logits)[0]
                value = tf.fill([batch], value) / tf.cast(batch, tf.float32)
            return value

        return custom
    if loss == "dice":
        return lambda y, logits: soft_dice_loss(y, logits, temperature=temperature)

    def cross_entropy(y, logits):
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
        voxelwise = -tf.reduce_sum(tf.cast(y, tf.float32) * log_probs, axis=-1)
        return tf.reduce_mean(tf.reshape(voxelwise, [tf.shape(voxelwise)[0], -1]), axis=1)

    return cross_entropy
