"""How many noisy copies of a volume one forward pass can take: the batch of randomized
smoothing chosen from the volume's size and the memory available, or a batch refused before it
exhausts the memory.

A forward pass holds the network's weights and, per copy, the activations alive at once. Both
are read from the traced graph of the network at the volume's shape (a batch of one and of two:
the difference is one copy), walking its operations in order and freeing each tensor after its
last use: an estimate of what TensorFlow's executor holds, not a measurement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_advseg.errors import InputError

MAX_CHOSEN_BATCH = 32
"""The largest batch chosen from memory: beyond it a pass's fixed costs are already shared out,
and a larger batch only costs memory and tracing (each copy's noise is its own operation)."""

MEMORY_SHARE = 0.4
"""The share of the available memory a batch may plan for: the estimate from the graph is
below what TensorFlow really holds (1.2-1.7 times at 64^3 and 128^3, docs/benchmarks.md), and
the rest is left to the input, the counts and the other programs."""


@dataclass(frozen=True)
class ForwardMemory:
    """Bytes one forward pass of a network holds at a volume's shape.

    Attributes:
        fixed: What does not grow with the batch (the weights, mostly).
        per_copy: What each noisy copy adds.
    """

    fixed: int
    per_copy: int

    def batch_bytes(self, batch: int) -> int:
        """Bytes of a forward pass of ``batch`` copies."""
        return self.fixed + batch * self.per_copy

    def largest_batch(self, available: int) -> int:
        """The most copies whose pass fits in :data:`MEMORY_SHARE` of ``available`` bytes (0:
        not even one)."""
        room = MEMORY_SHARE * available - self.fixed
        return max(0, int(room // max(self.per_copy, 1)))


def forward_memory(model, shape) -> ForwardMemory:
    """The memory of ``model``'s forward pass on volumes of ``shape`` (``(X, Y, Z, C)``),
    estimated from its traced graph (cached per model and shape).

    Args:
        model: A Keras model returning logits.
        shape: One volume's shape.

    Returns:
        A :class:`ForwardMemory`.
    """
    shape = tuple(int(s) for s in shape)
    return _remembered(model, ("memory", shape), lambda: _forward_memory(model, shape))


_DECIDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _remembered(model, key, compute):
    """``compute()`` once per model and ``key`` (a weak key: the model is freed as usual)."""
    per_model = _DECIDED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = compute()
    return per_model[key]


def _forward_memory(model, shape: tuple[int, ...]) -> ForwardMemory:
    one, two = (peak_live_bytes(_graph(model, shape, b)) for b in (1, 2))
    per_copy = max(two - one, 1)
    return ForwardMemory(fixed=max(one - per_copy, 0), per_copy=per_copy)


def _graph(model, shape, batch: int):
    """The graph of ``model``'s forward pass on ``batch`` volumes of ``shape``: the concrete
    function of :func:`~keras_advseg.attacks.core.logits_function` (the model's own layers, no
    nested call), which the certificate's passes of that batch then reuse."""
    from keras_advseg.attacks.core import logits_function

    spec = tf.TensorSpec((batch, *shape), tf.float32)
    return logits_function(model).get_concrete_function(spec).graph


def _all_outputs_bytes(model, shape) -> int | None:
    """The float32 bytes of every layer's output of one copy, for a functional model whose
    declared input is ``shape``; None when that is not known without tracing."""
    try:
        declared = tuple(model.input_shape[1:])
        if declared != tuple(shape):
            return None
        total = 0
        for layer in model.layers:
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            for output in outputs:
                dims = tuple(output.shape[1:])
                if any(d is None for d in dims):
                    return None
                total += int(np.prod(dims)) * 4
        return total
    except (AttributeError, ValueError, TypeError):
        return None


def peak_live_bytes(graph) -> int:
    """The most bytes of tensors alive at once when ``graph``'s operations run in the order
    they were built, each tensor freed after its last use (tensors of unknown size count 0).

    Args:
        graph: A ``tf.Graph`` (a concrete function's).

    Returns:
        Bytes.
    """
    operations = graph.get_operations()
    last_use: dict = {}
    for i, operation in enumerate(operations):
        for tensor in operation.inputs:
            last_use[tensor.ref()] = i
    freed_at: dict[int, int] = {}
    live = peak = 0
    for i, operation in enumerate(operations):
        for tensor in operation.outputs:
            size = _bytes(tensor)
            live += size
            end = last_use.get(tensor.ref(), i)
            freed_at[end] = freed_at.get(end, 0) + size
        peak = max(peak, live)
        live -= freed_at.pop(i, 0)
    return peak


def _bytes(tensor) -> int:
    dtype = tensor.dtype
    if dtype in (tf.resource, tf.variant, tf.string) or not tensor.shape.is_fully_defined():
        return 0
    return int(tensor.shape.num_elements()) * dtype.size


def available_memory() -> tuple[int, str]:
    """The memory a forward pass can use now: the first GPU's free memory when TensorFlow sees
    a GPU (from ``nvidia-smi``), else the host's available memory within the process's cgroup
    limit. ``ADVSEG_MEMORY_GB`` overrides both.

    Returns:
        ``(bytes, where)``: ``where`` names the source, for messages.
    """
    override = os.environ.get("ADVSEG_MEMORY_GB")
    if override:
        try:
            value = float(override)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise InputError(
                f"ADVSEG_MEMORY_GB must be a positive number of GiB. Received: {override!r}"
            )
        return int(value * 2**30), "ADVSEG_MEMORY_GB"
    if tf.config.list_physical_devices("GPU"):
        free = _gpu_free_bytes()
        if free is not None:
            return free, "free GPU memory"
    return _host_available_bytes(), "available host memory"


def _gpu_free_bytes() -> int | None:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        text = subprocess.run(
            [tool, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(float(text.split()[0]) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _host_available_bytes() -> int:
    available = None
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30  # unknown: a small machine's worth
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                text = limit.read().strip()
            if text != "max":
                available = min(available, int(text))
        except (OSError, ValueError):
            continue
    return int(available)


def choose_batch(model, shape, samples: int, requested: int | None = None) -> int:
    """The noisy copies per forward pass: ``requested`` when it fits, else the largest batch
    that fits (at most ``samples`` and :data:`MAX_CHOSEN_BATCH`). Decided once per model,
    shape and request in a process, while its memory is free: TensorFlow keeps what a pass
    allocated for the next one, so the memory available afterwards understates what a batch
    can use.

    Args:
        model: A Keras model returning logits.
        shape: One volume's shape ``(X, Y, Z, C)``.
        samples: The most copies one pass needs (``max(n, n0)``).
        requested: A batch asked for; None chooses one.

    Returns:
        The batch.

    Raises:
        InputError: ``requested`` does not fit, or not even one copy does; the message names
            the largest batch that fits.
    """
    shape = tuple(int(s) for s in shape)
    key = ("batch", shape, int(samples), requested, os.environ.get("ADVSEG_MEMORY_GB"))
    return _remembered(model, key, lambda: _choose_batch(model, shape, int(samples), requested))


def _choose_batch(model, shape, samples: int, requested) -> int:
    available, where = available_memory()
    budget = MEMORY_SHARE * available
    if requested is not None:
        batch = int(min(requested, samples))
        # the graph of this very batch is the one the certificate runs (traced once, shared)
        if peak_live_bytes(_graph(model, shape, batch)) <= budget:
            return batch
    else:
        # every layer's output alive at once bounds a copy's activations from above: when
        # the largest batch fits under that bound, no graph needs tracing
        bound = _all_outputs_bytes(model, shape)
        batch = int(min(samples, MAX_CHOSEN_BATCH))
        weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
        if bound is not None and weights + batch * bound <= budget:
            return batch
    memory = forward_memory(model, shape)
    fits = memory.largest_batch(available)
    if requested is None and fits >= 1:
        return int(min(fits, samples, MAX_CHOSEN_BATCH))
    gib = 2**30
    asked = requested if requested is not None else 1
    raise InputError(
        f"batch_size={asked} needs about {memory.batch_bytes(asked) / gib:.1f} GiB for the "
        f"forward pass of a {'x'.join(str(s) for s in shape[:3])} volume "
        f"({memory.per_copy / gib:.2f} GiB a noisy copy), more than {MEMORY_SHARE:.0%} of the "
        f"{available / gib:.1f} GiB of {where}: "
        + (
            f"use batch_size <= {fits} (or leave it out to choose)"
            if fits >= 1
            else "not even one copy fits; certify a smaller crop or on a larger machine"
        )
    )
