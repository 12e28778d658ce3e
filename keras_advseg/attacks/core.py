"""What every attack shares: input checks, the eps-ball, the model's traced forward pass, the
one per-model cache of compiled steps, and the compiled gradient loops.

Each model gets its compiled functions once (``tf.function``, cached per model
and per loss/temperature/clip setting in :func:`cached`). ``eps`` and ``alpha`` enter as tensors
and iterative attacks loop over the compiled gradient step, so calls that
differ only in ``eps``, ``alpha`` or ``steps`` do not retrace. XLA is off: on CPU it is slower for 3-D
convolutions (see ``benchmarks/bench_attacks.py``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_advseg.attacks.losses import attack_loss
from keras_advseg.attacks.registry import ATTACK_LOSSES
from keras_advseg.errors import InputError
from keras_advseg.metrics import probabilities_to_labels
from keras_advseg.vocabulary import REGION_CLASS_INDICES, REGIONS


class _OwnTracesAreNotRetraces(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <...> triggered tf.function retracing"
    warning for this package's compiled functions.

    TensorFlow counts traces per code object, not per function: the compiled steps of each
    model and each loss/temperature setting (:class:`Compiled`, one instance per setting) share
    their methods' code, so an audit, which attacks with several losses and temperatures, reads
    to TensorFlow as one function retraced again and again, although each is traced once
    (``tracing_count``, checked by the tests). The warning about anyone else's functions stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "keras_advseg." in message)


logging.getLogger("tensorflow").addFilter(_OwnTracesAreNotRetraces())

_CACHE: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()
_LOGITS: weakref.WeakKeyDictionary[keras.Model, Callable] = weakref.WeakKeyDictionary()


def cached(model, key, build: Callable):
    """The model's compiled object for ``key``, built by ``build()`` on first use.

    The one per-model cache of the attacks' compiled steps (a weak key: a model that is
    no longer used is freed with its steps). ``build`` must not hold a reference to the
    model; it calls :func:`logits_function` instead.
    """
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


def tracing_count(model) -> int:
    """Traces so far of every compiled attack step of ``model`` (for retracing checks)."""
    total = 0
    for value in _CACHE.get(model, {}).values():
        functions = value._functions() if hasattr(value, "_functions") else (value,)
        total += sum(f.experimental_get_tracing_count() for f in functions)
    return total


def check_inputs(x, y, *, what: str = "labels") -> tuple[tf.Tensor, tf.Tensor]:
    """``x`` and one-hot ``y`` as float32 tensors, or a clear error instead of a graph error.

    Args:
        x: Inputs ``(B, X, Y, Z, C)`` (a batch; a 2-D model wrapped in ``SliceWise`` too).
        y: One-hot labels (or a one-hot target) ``(B, X, Y, Z, K)``.
        what: What ``y`` is, for the message (``"labels"``, ``"target"``).

    Raises:
        InputError: ``x`` is not a batch of volumes, or ``y`` is not one-hot of the same
            batch and spatial shape (a label map: convert it with
            :func:`keras_advseg.data.one_hot`), or either holds NaN or inf.
    """
    x, y = as_tensor(x), as_tensor(y)
    if x.shape.rank != 5:
        raise InputError(
            f"x must be a batch of volumes (B, X, Y, Z, C); got shape {tuple(x.shape)} "
            "(add the batch axis with x[None])"
        )
    if y.shape.rank != 5 or tuple(y.shape[:4]) != tuple(x.shape[:4]) or y.shape[-1] < 2:
        raise InputError(
            f"{what} must be one-hot {(*x.shape[:4], 4)}; got {tuple(y.shape)} "
            "(convert a label map with keras_advseg.data.one_hot)"
        )
    if tf.executing_eagerly():  # a traced caller checked its inputs before tracing
        for name, value in (("x", x), (what, y)):
            finite = tf.math.is_finite(value)
            if not bool(tf.reduce_all(finite)):
                bad = int(tf.size(value)) - int(tf.math.count_nonzero(finite))
                raise InputError(
                    f"{name} holds {bad} non-finite value(s) (NaN or inf): an attack on it is "
                    "meaningless; repair or mask them first"
                )
    return x, y


def mean_region_dice(y, logits):
    """Per sample, the mean hard Dice of WT, TC and ET (an empty region in both counts 1).

    Returns:
        float32 ``(B,)``.
    """
    depth = tf.shape(logits)[-1]
    predicted = tf.one_hot(tf.argmax(logits, -1), depth)
    batch = tf.shape(logits)[0]
    scores = []
    for region in REGIONS:
        indices = REGION_CLASS_INDICES[region]
        t = tf.reshape(
            tf.reduce_sum(tf.gather(tf.cast(y, tf.float32), indices, axis=-1), -1), [batch, -1]
        )
        p = tf.reshape(tf.reduce_sum(tf.gather(predicted, indices, axis=-1), -1), [batch, -1])
        total = tf.reduce_sum(t, 1) + tf.reduce_sum(p, 1)
        scores.append(
            tf.where(total > 0, 2 * tf.reduce_sum(t * p, 1) / tf.maximum(total, 1.0), 1.0)
        )
    return tf.add_n(scores) / len(scores)


def run_none(model, x, y, **_):
    """The ``none`` attack: the clean input."""
    return as_tensor(x)


def logits_function(model: keras.Model) -> Callable:
    """``model(x, training=False)`` as one ``tf.function`` per model, shared by every attack.

    The compiled attack steps call this function instead of the model, so the model's
    layers are traced once per input shape rather than once per attack, loss and
    temperature: tracing a 3-D UNet through its Keras layers is most of an attack's
    first-call cost. TensorFlow inlines the call when it optimises the graph, so the steps'
    results are bitwise unchanged. Outside a graph it is also a faster forward pass than
    the eager model.

    Args:
        model: A Keras model (or any callable taking ``training``) whose output is logits.

    Returns:
        A callable ``(x, training=False) -> logits`` that stands in for the model wherever
        one is called for inference (``training`` is accepted and must stay False).
    """
    if model not in _LOGITS:
        ref = weakref.ref(model)  # the cache must not keep the model alive

        def logits(x, training=False):
            if training:
                raise ValueError("logits_function is the inference pass: training=False")
            return ref()(x, training=False)

        _LOGITS[model] = tf.function(logits)
    return _LOGITS[model]


def check_arguments(
    *,
    eps: float,
    steps: int | None = None,
    alpha: float | None = None,
    clip: tuple[float, float] | None = None,
    loss="dice",
    temperature: float = 1.0,
) -> None:
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
    if not callable(loss) and loss not in ATTACK_LOSSES:
        raise ValueError(
            f"loss must be one of {ATTACK_LOSSES.names()} or a callable. Received: loss={loss!r}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature}")


def per_sample_scale(x: tf.Tensor, value: float, relative: bool) -> tf.Tensor:
    """``value`` per sample, times the sample's intensity range ``max(x) - min(x)`` when ``relative``.

    The paper's budget is "5% of the maximum pixel magnitude" of inputs
    normalised to [0, 1], i.e. 5% of the intensity range. Scaling by the range
    gives that budget on inputs in any units (here z-scored), and is invariant
    to how the intensities were shifted and scaled.

    Returns:
        float32 tensor broadcastable to ``x``: ``(B, 1, ..., 1)``.
    """
    shape = [-1] + [1] * (len(x.shape) - 1)
    value = tf.cast(value, x.dtype)
    if not relative:
        return tf.reshape(tf.fill([tf.shape(x)[0]], value), shape)
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    span = tf.reduce_max(flat, axis=1) - tf.reduce_min(flat, axis=1)
    return tf.reshape(value * span, shape)


class Compiled:
    """The compiled functions of one model for one loss/temperature/clip setting.

    Iterative attacks loop in Python over these compiled pieces: a
    ``tf.while_loop`` around the gradient keeps TensorFlow's graph optimiser
    from fusing the convolutions inside the loop body and measured 1.7x
    slower per step on CPU.
    """

    def __init__(self, model: keras.Model, loss, temperature: float, clip):
        self.logits = logits_function(model)  # holds no reference to the model
        self.loss_fn = attack_loss(loss, temperature)
        self.temperature = float(temperature)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.gradient = tf.function(self._gradient)
        self.gradient_and_labels = tf.function(self._gradient_and_labels)
        self.step = tf.function(self._step)
        self.l2_step = tf.function(self._l2_step)
        self.forward = tf.function(self._forward)
        self.perturbed_forward = tf.function(self._perturbed_forward)

    def _functions(self):
        return (
            self.gradient,
            self.gradient_and_labels,
            self.step,
            self.l2_step,
            self.forward,
            self.perturbed_forward,
        )

    def tracing_count(self) -> int:
        """Traces so far over all compiled functions (for retracing checks)."""
        functions = (*self._functions(), self.logits)
        return sum(f.experimental_get_tracing_count() for f in functions)

    def _loss_and_grad(self, x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self.logits(x)
            per_sample = self.loss_fn(y, logits)
            total = tf.reduce_sum(per_sample)
        return logits, per_sample, tape.gradient(total, x)

    def _gradient(self, x, y):
        _, per_sample, grad = self._loss_and_grad(x, y)
        return per_sample, grad

    def _gradient_and_labels(self, x, y):
        logits, per_sample, grad = self._loss_and_grad(x, y)
        return labels_of(logits), per_sample, grad

    def _forward(self, x, y):
        logits = self.logits(x)
        return logits, self.loss_fn(y, logits)

    def _perturbed_forward(self, x, direction, scale):
        x_adv = x + scale * direction
        if self.clip is not None:
            x_adv = tf.clip_by_value(x_adv, self.clip[0], self.clip[1])
        return x_adv, self.logits(x_adv)

    def _step(self, x_k, x, grad, alpha, eps, direction):
        """One signed-gradient step, projected onto the eps-ball of ``x`` and clipped."""
        x_next = x_k + direction * alpha * tf.sign(grad)
        x_next = tf.clip_by_value(x_next, x - eps, x + eps)
        if self.clip is not None:
            x_next = tf.clip_by_value(x_next, self.clip[0], self.clip[1])
        return x_next

    def _l2_step(self, x_k, x, grad, alpha, eps, direction):
        """One step of length ``alpha`` along the gradient, projected onto the l2 ball of radius
        ``eps`` around ``x`` (per sample) and clipped."""
        axes = list(range(1, len(x.shape)))
        norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=axes, keepdims=True))
        x_next = x_k + direction * alpha * grad / tf.maximum(norm, 1e-12)
        delta = x_next - x
        length = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes, keepdims=True))
        x_next = x + delta * tf.minimum(1.0, eps / tf.maximum(length, 1e-12))
        if self.clip is not None:
            x_next = tf.clip_by_value(x_next, self.clip[0], self.clip[1])
        return x_next

    def iterate(self, x, x_start, y, eps, alpha, steps: int, direction: float, norm="linf"):
        """``steps`` gradient steps from ``x_start`` on the eps-ball of ``x``: signed steps in
        the l-infinity ball, normalised steps in the l2 ball (``norm="l2"``)."""
        direction = tf.constant(direction, tf.float32)
        step = self.step if norm == "linf" else self.l2_step
        x_k = x_start
        for _ in range(steps):
            _, grad = self.gradient(x_k, y)
            x_k = step(x_k, x, grad, alpha, eps, direction)
        return x_k

    def trajectory(self, x, y, eps, alpha, steps: int, direction: float, keep_inputs: bool):
        """Like :meth:`iterate` from ``x``, recording labels/loss (and input) after every step.

        The forward pass inside step k's gradient is the prediction for
        iterate k, so N steps cost N gradients and one extra forward pass.
        """
        direction = tf.constant(direction, tf.float32)
        labels, losses, inputs = [], [], []
        x_k = x
        for k in range(steps):
            step_labels, per_sample, grad = self.gradient_and_labels(x_k, y)
            if k > 0:
                labels.append(step_labels)
                losses.append(per_sample)
                if keep_inputs:
                    inputs.append(x_k)
            x_k = self.step(x_k, x, grad, alpha, eps, direction)
        logits, per_sample = self.forward(x_k, y)
        labels.append(labels_of(logits))
        losses.append(per_sample)
        if keep_inputs:
            inputs.append(x_k)
        return x_k, tf.stack(labels), tf.stack(losses), tf.stack(inputs) if keep_inputs else None


def labels_of(logits):
    """Logits -> BraTS label map (arg-max needs no softmax: it is monotonic)."""
    return probabilities_to_labels(logits)


def compiled(model: keras.Model, *, loss="dice", temperature: float = 1.0, clip=None) -> Compiled:
    """The cached :class:`Compiled` functions of ``model`` for this setting."""
    if isinstance(loss, str):
        loss = ATTACK_LOSSES.canonical(loss)
    key = (
        "compiled",
        loss if isinstance(loss, str) else id(loss),
        float(temperature),
        None if clip is None else (float(clip[0]), float(clip[1])),
    )
    return cached(model, key, lambda: Compiled(model, loss, temperature, clip))


def as_tensor(x) -> tf.Tensor:
    return tf.convert_to_tensor(x, tf.float32)
