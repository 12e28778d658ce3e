"""ONNX operators as Keras 3 operations (``keras.ops``), in ONNX's own layout.

Tensors keep ONNX's layout (``(N, C, *spatial)``); the operators that TensorFlow runs on the
CPU only channels-last (convolutions, pooling) move the channels last around the operation and
back. Each function takes the node's inputs (tensors, or None for an omitted optional input),
its attributes (a dict) and the graph's opset, and returns its outputs as a list; each follows
the ONNX operator specification (https://onnx.ai/onnx/operators/) for the attributes it
accepts and refuses the others with :class:`UnsupportedOperator`.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from keras_advseg.errors import InputError


class UnsupportedOperator(InputError):
    """An ONNX node this converter cannot run as the specification says."""


def _spatial(x) -> int:
    return len(x.shape) - 2


def _channels_last(x):
    rank = len(x.shape)
    return ops.transpose(x, (0, *range(2, rank), 1))


def _channels_first(x):
    rank = len(x.shape)
    return ops.transpose(x, (0, rank - 1, *range(1, rank - 1)))


def _pads(attrs, x, kernel, strides, dilations, node):
    """Begin and end padding per spatial axis from ``pads`` or ``auto_pad``."""
    n = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        pads = list(attrs.get("pads", [0] * 2 * n)) if auto == "NOTSET" else [0] * 2 * n
        return pads[:n], pads[n:]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOperator(f"{node}: auto_pad {auto!r} is not an ONNX value")
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin, end


def _pad_spatial(x, begin, end, value=0.0):
    if not any(begin) and not any(end):
        return x
    widths = [(0, 0), (0, 0), *zip(begin, end)]
    return ops.pad(x, widths, constant_values=value)


def conv(inputs, attrs, opset, node):
    x, w, b = (list(inputs) + [None])[:3]
    if int(attrs.get("group", 1)) != 1:
        raise UnsupportedOperator(f"{node}: Conv with group={attrs['group']} (only group=1)")
    n = _spatial(x)
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    begin, end = _pads(attrs, x, kernel, strides, dilations, node)
    y = _channels_last(_pad_spatial(x, begin, end))
    kernel_cl = ops.transpose(w, (*range(2, n + 2), 1, 0))  # (k..., in, out)
    if any(s > 1 for s in strides) and any(d > 1 for d in dilations):
        # TensorFlow runs no strided dilated convolution: every position, then every s-th
        y = ops.conv(y, kernel_cl, strides=1, padding="valid", dilation_rate=dilations)
        y = y[(slice(None), *(slice(None, None, s) for s in strides), slice(None))]
    else:
        y = ops.conv(y, kernel_cl, strides=strides, padding="valid", dilation_rate=dilations)
    if b is not None:
        y = y + b
    return [_channels_first(y)]


def conv_transpose(inputs, attrs, opset, node):
    x, w, b = (list(inputs) + [None])[:3]
    n = _spatial(x)
    if int(attrs.get("group", 1)) != 1:
        raise UnsupportedOperator(f"{node}: ConvTranspose with group={attrs['group']} (only 1)")
    if any(d != 1 for d in attrs.get("dilations", [1] * n)):
        raise UnsupportedOperator(f"{node}: ConvTranspose with dilations (only 1)")
    if "output_shape" in attrs or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOperator(f"{node}: ConvTranspose with output_shape or SAME auto_pad")
    strides = list(attrs.get("strides", [1] * n))
    pads = list(attrs.get("pads", [0] * 2 * n)) if attrs.get("auto_pad") != "VALID" else [0] * 2 * n
    extra = list(attrs.get("output_padding", [0] * n))
    kernel_cl = ops.transpose(w, (*range(2, n + 2), 1, 0))  # (k..., out, in)
    y = ops.conv_transpose(
        _channels_last(x), kernel_cl, strides=strides, padding="valid", output_padding=[0] * n
    )
    # the full output, (in - 1) * stride + kernel; output_padding adds positions no input
    # reaches at the end, then pads crop
    if any(extra):
        y = ops.pad(y, [(0, 0), *[(0, e) for e in extra], (0, 0)])
    index = [slice(None)]
    for a in range(n):
        size = y.shape[1 + a]
        index.append(slice(pads[a], size - pads[n + a]))
    y = y[tuple(index)]
    if b is not None:
        y = y + b
    return [_channels_first(y)]


def _broadcast_channels(v, x):
    """A per-channel vector shaped to broadcast over ``(N, C, *spatial)``."""
    return ops.reshape(v, (1, -1) + (1,) * _spatial(x))


def instance_normalization(inputs, attrs, opset, node):
    x, scale, bias = inputs
    axes = tuple(range(2, len(x.shape)))
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) / ops.sqrt(variance + float(attrs.get("epsilon", 1e-5)))
    return [y * _broadcast_channels(scale, x) + _broadcast_channels(bias, x)]


def batch_normalization(inputs, attrs, opset, node):
    if int(attrs.get("training_mode", 0)) or not int(attrs.get("spatial", 1)):
        raise UnsupportedOperator(f"{node}: BatchNormalization in training mode or spatial=0")
    x, scale, bias, mean, variance = inputs[:5]
    epsilon = float(attrs.get("epsilon", 1e-5))
    factor = scale / ops.sqrt(variance + epsilon)
    return [
        (x - _broadcast_channels(mean, x)) * _broadcast_channels(factor, x)
        + _broadcast_channels(bias, x)
    ]


def _pool(inputs, attrs, opset, node, kind):
    (x,) = inputs[:1]
    n = _spatial(x)
    if int(attrs.get("ceil_mode", 0)):
        raise UnsupportedOperator(f"{node}: {kind}Pool with ceil_mode=1")
    if any(d != 1 for d in attrs.get("dilations", [1] * n)):
        raise UnsupportedOperator(f"{node}: {kind}Pool with dilations")
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * n))
    begin, end = _pads(attrs, x, kernel, strides, [1] * n, node)
    if kind == "Max":
        padded = _pad_spatial(x, begin, end, value=-np.inf)
        y = ops.max_pool(_channels_last(padded), kernel, strides, padding="valid")
        return [_channels_first(y)]
    y = ops.average_pool(_channels_last(_pad_spatial(x, begin, end)), kernel, strides, "valid")
    if (any(begin) or any(end)) and not int(attrs.get("count_include_pad", 0)):
        # the mean over the window's positions inside the input only
        ones = ops.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
        share = ops.average_pool(
            _channels_last(_pad_spatial(ones, begin, end)), kernel, strides, "valid"
        )
        y = y / share
    return [_channels_first(y)]


def max_pool(inputs, attrs, opset, node):
    return _pool(inputs, attrs, opset, node, "Max")


def average_pool(inputs, attrs, opset, node):
    return _pool(inputs, attrs, opset, node, "Average")


def softmax(inputs, attrs, opset, node):
    (x,) = inputs
    rank = len(x.shape)
    axis = int(attrs.get("axis", -1 if opset >= 13 else 1)) % rank
    if opset >= 13:
        return [ops.softmax(x, axis=axis)]
    # before opset 13: over the input flattened to 2-D at axis
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, int(np.prod(x.shape[axis:]))))
    return [ops.reshape(ops.softmax(flat, axis=-1), shape)]


def _resize_axis(x, axis, out_size, scale, mode, transform, nearest):
    """One axis of Resize: ``scale`` as given (ONNX maps coordinates with the given scale, not
    with the sizes' ratio), or the sizes' ratio when sizes are given."""
    size = x.shape[axis]
    if out_size == size and scale == 1:
        return x
    i = np.arange(out_size, dtype=np.float64)
    if transform == "half_pixel":
        source = (i + 0.5) / scale - 0.5
    elif transform == "pytorch_half_pixel":
        source = (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i)
    elif transform == "align_corners":
        source = i * (size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i)
    elif transform == "asymmetric":
        source = i / scale
    else:
        raise UnsupportedOperator(f"Resize with coordinate_transformation_mode {transform!r}")
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda v: np.where(
                v - np.floor(v) == 0.5, np.floor(v), np.round(v)
            ),
            "round_prefer_ceil": lambda v: np.where(
                v - np.floor(v) == 0.5, np.ceil(v), np.round(v)
            ),
            "floor": np.floor,
            "ceil": np.ceil,
        }
        if nearest not in rounding:
            raise UnsupportedOperator(f"Resize with nearest_mode {nearest!r}")
        index = np.clip(rounding[nearest](source), 0, size - 1).astype("int32")
        return ops.take(x, index, axis=axis)
    if mode != "linear":
        raise UnsupportedOperator(f"Resize with mode {mode!r} (nearest or linear)")
    source = np.clip(source, 0, size - 1)
    low = np.floor(source).astype("int32")
    high = np.minimum(low + 1, size - 1)
    weight = (source - low).astype("float32")
    shape = [1] * len(x.shape)
    shape[axis] = out_size
    weight = ops.reshape(ops.convert_to_tensor(weight), shape)
    a, b = ops.take(x, low, axis=axis), ops.take(x, high, axis=axis)
    return a + (b - a) * weight


def resize(inputs, attrs, opset, node):
    inputs = list(inputs) + [None] * 4
    x = inputs[0]
    if opset < 11:  # Resize-10: X, scales
        scales, sizes = inputs[1], None
    else:
        scales, sizes = inputs[2], inputs[3]
    mode = attrs.get("mode", "nearest")
    transform = attrs.get(
        "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
    )
    nearest = attrs.get("nearest_mode", "round_prefer_floor" if opset >= 11 else "floor")
    if transform == "tf_crop_and_resize" or int(attrs.get("antialias", 0)):
        raise UnsupportedOperator(f"{node}: Resize with crop-and-resize or antialias")
    if attrs.get("axes"):
        raise UnsupportedOperator(f"{node}: Resize with axes")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedOperator(f"{node}: Resize with keep_aspect_ratio_policy")
    if sizes is not None and np.size(sizes):
        # the batch and channel sizes may be the input's own, known only when the graph runs
        # (sizes = the input's shape with new spatial sizes); the spatial ones must be known
        listed = list(np.asarray(sizes).ravel())
        if not all(isinstance(v, int | np.integer) for v in listed[2:]):
            raise UnsupportedOperator(f"{node}: Resize sizes known only when the graph runs")
        out = [
            int(v) if isinstance(v, int | np.integer) else x.shape[i] for i, v in enumerate(listed)
        ]
        factors = [None if d is None else o / d for o, d in zip(out, x.shape)]
    elif scales is not None and np.size(scales):
        if not all(isinstance(v, float | int | np.number) for v in np.asarray(scales).ravel()):
            raise UnsupportedOperator(f"{node}: Resize scales known only when the graph runs")
        factors = [float(s) for s in np.asarray(scales).ravel()]
        out = [None if d is None else int(math.floor(d * f)) for d, f in zip(x.shape, factors)]
    else:
        raise UnsupportedOperator(f"{node}: Resize without constant scales or sizes")
    if out[1] != x.shape[1] or (None not in (out[0], x.shape[0]) and out[0] != x.shape[0]):
        raise UnsupportedOperator(f"{node}: Resize of the batch or channel axis")
    for axis in range(2, len(x.shape)):
        x = _resize_axis(x, axis, out[axis], factors[axis], mode, transform, nearest)
    return [x]


def upsample(inputs, attrs, opset, node):
    x = inputs[0]
    scales = attrs.get("scales") if len(inputs) < 2 or inputs[1] is None else inputs[1]
    if any(float(s) != 1 for s in np.asarray(scales).ravel()[:2]):
        raise UnsupportedOperator(f"{node}: Upsample of the batch or channel axis")
    factors = [float(s) for s in np.asarray(scales).ravel()[2:]]
    mode = attrs.get("mode", "nearest")
    for axis, factor in zip(range(2, len(x.shape)), factors):
        size = int(math.floor(x.shape[axis] * factor))
        x = _resize_axis(x, axis, size, factor, mode, "asymmetric", "floor")
    return [x]


def reshape(inputs, attrs, opset, node):
    x, target = inputs
    if not _static(target):  # a shape computed when the graph runs (from the batch size)
        return [ops.reshape(x, ops.cast(target, "int32"))]
    dims = list(np.shape(x) if _static(x) else x.shape)
    target = [v if not _static(v) else int(v) for v in np.ravel(target)]
    if not int(attrs.get("allowzero", 0)):  # 0 copies the input's size there
        target = [
            (dims[i] if dims[i] is not None else ops.shape(x)[i]) if _is_zero(v) else v
            for i, v in enumerate(target)
        ]
    if all(isinstance(v, int) for v in target):
        return [np.reshape(x, target) if _static(x) else ops.reshape(x, target)]
    return [ops.reshape(x, _runtime_shape(target))]


def _is_zero(value) -> bool:
    return isinstance(value, int) and value == 0


def transpose(inputs, attrs, opset, node):
    (x,) = inputs
    perm = attrs.get("perm", list(reversed(range(len(x.shape)))))
    return [ops.transpose(x, perm)]


def _axes(inputs, attrs, opset):
    if opset >= 13 and len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in np.asarray(inputs[1]).ravel()]
    return [int(a) for a in attrs.get("axes", [])]


def unsqueeze(inputs, attrs, opset, node):
    x = inputs[0]
    rank = len(np.shape(x) if _static(x) else x.shape) + len(axes := _axes(inputs, attrs, opset))
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis) if _static(x) else ops.expand_dims(x, axis)
    return [x]


def squeeze(inputs, attrs, opset, node):
    x = inputs[0]
    shape = np.shape(x) if _static(x) else x.shape
    axes = _axes(inputs, attrs, opset) or [i for i, d in enumerate(shape) if d == 1]
    axes = tuple(a % len(shape) for a in axes)
    return [np.squeeze(x, axis=axes) if _static(x) else ops.squeeze(x, axis=axes)]


def clip(inputs, attrs, opset, node):
    inputs = list(inputs) + [None, None]
    x = inputs[0]
    low = attrs.get("min") if opset < 11 else inputs[1]
    high = attrs.get("max") if opset < 11 else inputs[2]
    if low is not None:
        x = ops.maximum(x, ops.cast(low, x.dtype))
    if high is not None:
        x = ops.minimum(x, ops.cast(high, x.dtype))
    return [x]


_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
"""ONNX's ``TensorProto`` element types the converter casts to."""


def _static(*values) -> bool:
    """Whether every value is known when the graph is traced (NumPy): shape arithmetic is then
    done in NumPy, and its result stays a constant."""
    return all(isinstance(v, np.ndarray | np.generic) for v in values if v is not None)


def shape(inputs, attrs, opset, node):
    (x,) = inputs[:1]
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    dims = list(np.shape(x) if _static(x) else x.shape)
    if all(isinstance(d, int) for d in dims):
        return [np.asarray(dims, np.int64)[start:end]]
    # a partly known shape: the known sizes stay integers (a Resize or Slice can use them),
    # the batch is a scalar computed when the graph runs
    dynamic = ops.shape(x)
    values = [
        d if isinstance(d, int) else ops.cast(dynamic[i], "int64") for i, d in enumerate(dims)
    ]
    return [_objects(values)[start:end]]


def _objects(values) -> np.ndarray:
    """A 1-D object array of ``values`` (sizes and run-time scalars), built element by
    element: NumPy would otherwise try to read a traced tensor's value."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _runtime_shape(values):
    """A shape vector that holds run-time scalars as one int32 tensor."""
    items = values if isinstance(values, list | tuple) else list(np.ravel(values))
    return ops.stack([ops.cast(v, "int32") for v in items])


def gather(inputs, attrs, opset, node):
    data, indices = inputs
    axis = int(attrs.get("axis", 0))
    if _static(data, indices):
        return [np.take(data, indices, axis=axis)]
    return [ops.take(data, np.asarray(indices) if _static(indices) else indices, axis=axis)]


def cast(inputs, attrs, opset, node):
    (x,) = inputs
    to = int(attrs["to"])
    if to not in _ONNX_DTYPES:
        raise UnsupportedOperator(f"{node}: Cast to ONNX type {to}")
    dtype = _ONNX_DTYPES[to]
    if _static(x) and np.asarray(x).dtype == object:  # a partly known shape
        flat = [
            np.asarray(v).astype(dtype).item() if _static(v) else ops.cast(v, dtype)
            for v in np.ravel(x)
        ]
        return [_objects(flat).reshape(np.shape(x))]
    if _static(x):
        return [np.asarray(x).astype(dtype)]
    return [ops.cast(x, dtype)]


def slice_(inputs, attrs, opset, node):
    inputs = list(inputs) + [None] * 5
    x = inputs[0]
    if opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends, axes, steps = inputs[1:5]
    if not _static(starts, ends, axes, steps):
        raise UnsupportedOperator(f"{node}: Slice with starts or ends computed in the graph")
    dims = list(np.shape(x) if _static(x) else x.shape)
    rank = len(dims)
    axes = (
        list(range(len(np.ravel(starts))))
        if axes is None
        else [int(a) % rank for a in np.ravel(axes)]
    )
    steps = [1] * len(axes) if steps is None else [int(v) for v in np.ravel(steps)]
    index = [slice(None)] * rank
    for axis, begin, stop, step in zip(axes, np.ravel(starts), np.ravel(ends), steps):
        if _static(begin) or isinstance(begin, int):
            if _static(stop) or isinstance(stop, int):
                index[axis] = _bounds(int(begin), int(stop), step, dims[axis], node)
                continue
        if _static(x):  # a bound known only when the graph runs, on a constant
            raise UnsupportedOperator(f"{node}: Slice of a constant at run-time bounds")
        # a bound known only when the graph runs (from the batch size): TensorFlow clamps it
        index[axis] = slice(begin, stop, step)
    if _static(x):
        return [np.asarray(x)[tuple(index)]]
    return [x[tuple(index)]]


def _bounds(begin: int, stop: int, step: int, size, node) -> slice:
    """Slice's starts and ends clamped as the specification says: ``[0, size]`` for a
    positive step, ``[-1, size - 1]`` for a negative one (-1: before the first element)."""
    if step == 0:
        raise UnsupportedOperator(f"{node}: Slice with a step of 0")
    if size is None:  # the batch: only the whole axis
        if (begin, step) in ((0, 1),) and stop >= 2**31:
            return slice(None)
        raise UnsupportedOperator(f"{node}: Slice of the batch axis")
    begin = begin + size if begin < 0 else begin
    stop = stop + size if stop < 0 else stop
    if step > 0:
        return slice(min(max(begin, 0), size), min(max(stop, 0), size), step)
    begin = min(max(begin, -1), size - 1)
    stop = min(max(stop, -1), size - 1)
    return slice(begin, None if stop == -1 else stop, step)


def concat(inputs, attrs, opset, node):
    axis = int(attrs["axis"])
    if _static(*inputs):
        return [np.concatenate([np.asarray(v) for v in inputs], axis=axis)]
    dtype = next(v.dtype for v in inputs if not _static(v))
    return [ops.concatenate([ops.cast(v, dtype) for v in inputs], axis=axis)]


def reduce_mean(inputs, attrs, opset, node):
    x = inputs[0]
    axes = attrs.get("axes")
    if opset >= 18 and len(inputs) > 1 and inputs[1] is not None:
        axes = [int(a) for a in np.ravel(inputs[1])]
    keepdims = bool(int(attrs.get("keepdims", 1)))
    if axes is None or len(axes) == 0:
        if int(attrs.get("noop_with_empty_axes", 0)):
            return [x]
        axes = list(range(len(x.shape)))
    return [ops.mean(x, axis=tuple(int(a) for a in axes), keepdims=keepdims)]


def pad(inputs, attrs, opset, node):
    inputs = list(inputs) + [None] * 3
    x = inputs[0]
    if attrs.get("mode", "constant") != "constant":
        raise UnsupportedOperator(f"{node}: Pad with mode {attrs['mode']!r} (constant only)")
    if "paddings" in attrs:
        raise UnsupportedOperator(f"{node}: Pad-1's paddings")
    pads = attrs.get("pads") if opset < 11 else inputs[1]
    value = attrs.get("value", 0.0) if opset < 11 else inputs[2]
    if inputs[3] is not None:
        raise UnsupportedOperator(f"{node}: Pad with axes")
    pads = [int(v) for v in np.ravel(pads)]
    rank = len(x.shape)
    if any(v < 0 for v in pads):
        raise UnsupportedOperator(f"{node}: Pad with negative pads")
    widths = list(zip(pads[:rank], pads[rank:]))
    value = 0.0 if value is None or np.size(value) == 0 else float(np.ravel(value)[0])
    return [ops.pad(x, widths, constant_values=value)]


def tile(inputs, attrs, opset, node):
    x, repeats = inputs
    return [ops.tile(x, [int(r) for r in np.ravel(repeats)])]


def _divide(a, b):
    """Div: integers divided truncating towards zero in their own type, as C++ does."""
    if _static(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype == object or b.dtype == object:  # shape arithmetic, sizes positive
            return a // b
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            return np.trunc(a / b).astype(np.result_type(a, b))
        return a / b
    return a / b


def _unary(function):
    return lambda inputs, attrs, opset, node: [function(inputs[0])]


def _binary(function):
    def run(inputs, attrs, opset, node):
        if "broadcast" in attrs or "axis" in attrs:  # before opset 7: its own broadcasting
            raise UnsupportedOperator(
                f"{node}: arithmetic with the broadcast attribute (opset < 7)"
            )
        return [function(inputs[0], inputs[1])]

    return run


OPERATORS = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "InstanceNormalization": instance_normalization,
    "BatchNormalization": batch_normalization,
    "Relu": _unary(ops.relu),
    "LeakyRelu": lambda inputs, attrs, opset, node: [
        ops.leaky_relu(inputs[0], negative_slope=float(attrs.get("alpha", 0.01)))
    ],
    "PRelu": lambda inputs, attrs, opset, node: [
        ops.where(inputs[0] >= 0, inputs[0], inputs[0] * inputs[1])
    ],
    "Sigmoid": _unary(ops.sigmoid),
    "Tanh": _unary(ops.tanh),
    "Softmax": softmax,
    # the operators, not ops.add: Keras 3.15's TensorFlow add takes a (1, 1, 1, 1, C, 1)
    # operand for a bias on axis 1 when the other's axis 1 is also C, and adds it there
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": lambda inputs, attrs, opset, node: [_divide(*inputs)],
    "Concat": concat,
    "Resize": resize,
    "Upsample": upsample,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "Reshape": reshape,
    "Transpose": transpose,
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "Clip": clip,
    "Neg": _unary(ops.negative),
    "Sqrt": _unary(ops.sqrt),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "ReduceMean": reduce_mean,
    "Pad": pad,
    "Tile": tile,
    "Shape": shape,
    "Gather": gather,
    "Cast": cast,
    "Slice": slice_,
    "Identity": _unary(lambda x: x),
    "Dropout": _unary(lambda x: x),  # inference: the identity (a mask output is refused)
}
"""The operators the converter runs, by ONNX ``op_type``: the 3-D segmentation networks'
(convolutions and transposed convolutions, instance and batch normalisation, ReLU / leaky ReLU /
PReLU, sums and products, concatenation, resizing, pooling, sigmoid and softmax, reshapes)."""

SHAPE_INPUTS = {
    "Pad": (1, 2),
    "Tile": (1,),
    "ReduceMean": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
    "Clip": (1, 2),
}
"""The inputs each operator needs as constants known at conversion (shapes, scales, axes)."""
