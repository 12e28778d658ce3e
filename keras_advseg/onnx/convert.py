"""A segmentation network exchanged as ONNX (PyTorch, MONAI, nnU-Net) as a Keras model that
every command of this package takes: our input layout ``(B, X, Y, Z, 4)`` in
:data:`~keras_advseg.data.MODALITIES` order, four class scores out (background, necrotic core,
oedema, enhancing tumour: labels 0, 1, 2, 4), with the model's preprocessing stored as our
models store theirs, and checked against ONNX Runtime on import."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from keras_advseg.errors import InputError

OUTPUT_KINDS = ("logits", "probabilities", "regions", "region-logits")
"""What the model's output channels hold: four class ``logits`` or softmax ``probabilities``
(BraTS's classes), or three sigmoid region probabilities (``regions``) or their logits
(``region-logits``), as BraTS nnU-Net and MONAI SegResNet models emit."""

CLASS_NAMES = ("background", "ncr", "ed", "et")
"""Our four classes, in the order of our models' outputs (labels 0, 1, 2, 4)."""

REGION_NAMES = ("wt", "tc", "et")

LAYOUTS = ("channels-first", "channels-last")

TOLERANCE = 1e-3
"""The import's check: the converted graph's outputs within this times (1 + the largest
absolute output) of ONNX Runtime's, on the same random input. TensorFlow's and ONNX Runtime's
float32 kernels sum in other orders, and a deep network carries those differences: the paper's
UNet exported and imported back differs from ONNX Runtime by about 2e-4 at 64^3
(``benchmarks/bench_onnx.py``); a wrong operator differs by far more (the tests' leaky ReLU
run as a ReLU differs by 0.05)."""

GRADIENT_TOLERANCE = 0.2
"""The import's check: the relative error of the input gradient's derivatives along four random
directions against central finite differences of ONNX Runtime's outputs (steps 1e-4 and 3e-5,
the better kept). The differences are themselves off on a deep network's outputs (curvature,
ReLU and max-pool switches, float32 rounding): the paper's UNet, exported and imported back,
measured 8.1 % at 32^3 and 5.6 % at 64^3 (``benchmarks/bench_onnx.py``), the tests' small
networks 0.5-2.5 %. The graph's gradients are TensorFlow's own derivatives of the operators
whose outputs the first check compares, so what this check is for is a derivative that is not
there or not the operator's (a stopped gradient): off by 100 % or more."""


@dataclass(frozen=True)
class OnnxImport:
    """How an ONNX model is wrapped (stored in the imported model as its ``source``).

    Attributes:
        modalities: The model's input channels, as names of our modalities.
        outputs: A :data:`OUTPUT_KINDS` value.
        output_order: The model's output channels, as names of :data:`CLASS_NAMES` or
            :data:`REGION_NAMES`.
        layout: ``channels-first`` (ONNX's, PyTorch's) or ``channels-last``.
    """

    modalities: tuple[str, ...] = ("t1", "t1gd", "t2", "flair")
    outputs: str = "logits"
    output_order: tuple[str, ...] | None = None
    layout: str = "channels-first"

    def __post_init__(self):
        from keras_advseg.data import MODALITIES

        if sorted(self.modalities) != sorted(MODALITIES):
            raise InputError(
                f"modalities must name each of {', '.join(MODALITIES)} once, in the model's "
                f"channel order. Received: {','.join(self.modalities)}"
            )
        if self.outputs not in OUTPUT_KINDS:
            raise InputError(
                f"outputs must be one of {', '.join(OUTPUT_KINDS)}. Received: {self.outputs!r}"
            )
        if self.layout not in LAYOUTS:
            raise InputError(
                f"layout must be one of {', '.join(LAYOUTS)}. Received: {self.layout!r}"
            )
        names = self.channel_names
        order = tuple(self.output_order or names)
        if sorted(order) != sorted(names):
            raise InputError(
                f"output order must name each of {', '.join(names)} once for {self.outputs} "
                f"outputs. Received: {','.join(order)}"
            )
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "output_order", order)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """What the model's output channels are, in our order: :data:`CLASS_NAMES` or
        :data:`REGION_NAMES`."""
        return CLASS_NAMES if self.outputs in ("logits", "probabilities") else REGION_NAMES


@keras.saving.register_keras_serializable(package="keras_advseg")
class OnnxInput(keras.layers.Layer):
    """Our input ``(B, X, Y, Z, 4)`` as the ONNX model takes it: its channel order, its layout."""

    def __init__(self, order, channels_first, **kwargs):
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]
        self.channels_first = bool(channels_first)

    def call(self, x):
        x = ops.take(x, self.order, axis=-1)
        if self.channels_first:
            x = ops.transpose(x, (0, len(x.shape) - 1, *range(1, len(x.shape) - 1)))
        return x

    def get_config(self):
        return {**super().get_config(), "order": self.order, "channels_first": self.channels_first}


@keras.saving.register_keras_serializable(package="keras_advseg")
class OnnxOutput(keras.layers.Layer):
    """The ONNX model's output as our four class logits (channels last, our class order).

    Class probabilities become their logarithms (clipped at 1e-7), so that softmax gives them
    back. Region outputs (WT, TC, ET; probabilities become their log-odds) become cumulative
    class scores: background 0, oedema ``l_WT``, necrotic core ``l_WT + l_TC``, enhancing
    ``l_WT + l_TC + l_ET``, so that, where the regions' probabilities are nested (ET in TC in
    WT), the argmax is what thresholding each region at 0.5 gives, as nnU-Net and MONAI label
    their region outputs.
    """

    def __init__(self, kind, order, channels_first, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.order = [int(i) for i in order]
        self.channels_first = bool(channels_first)

    def call(self, y):
        if self.channels_first:
            y = ops.transpose(y, (0, *range(2, len(y.shape)), 1))
        y = ops.take(y, self.order, axis=-1)
        if self.kind == "logits":
            return y
        if self.kind == "probabilities":
            return ops.log(ops.clip(y, 1e-7, 1.0))
        if self.kind == "regions":  # probabilities: their log-odds
            p = ops.clip(y, 1e-7, 1 - 1e-7)
            y = ops.log(p) - ops.log(1 - p)
        wt, tc, et = y[..., 0], y[..., 1], y[..., 2]
        # background, NCR, ED, ET
        return ops.stack([ops.zeros_like(wt), wt + tc, wt, wt + tc + et], axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "order": self.order,
            "channels_first": self.channels_first,
        }


def load_onnx(path):
    """``(model, data)``: the ``onnx.ModelProto`` of ``path``, checked by ``onnx.checker``, and
    the file's bytes it was read from (one read: what is converted, checked and hashed).

    Raises:
        InputError: the ``onnx`` extra is missing, or the file is missing or not a valid ONNX
            model.
    """
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several types for broken files
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a valid ONNX model ({reason})") from None
    return model, data


def require(module: str):
    """Imports an optional dependency of the ``onnx`` extra, or refuses in one line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"ONNX support needs {module}: pip install 'keras-advseg[onnx]'") from None


def import_onnx(path, shape, spec: OnnxImport = OnnxImport(), *, seed: int = 0, say=None):
    """Converts an ONNX segmentation network and checks it against ONNX Runtime.

    Args:
        path: The ``.onnx`` file.
        shape: The spatial size ``(X, Y, Z)`` the model is run at (its preprocessing's).
        spec: How its inputs and outputs map to ours.
        seed: Seed of the check's random input and directions.
        say: Where progress lines go (the checks run the model some twenty times), or None.

    Returns:
        ``(model, source)``: the Keras model, and the record the imported model stores (the
        file's name and SHA-256, opset, producer, converter, mapping and the checks' results).

    Raises:
        InputError: an input or output that cannot be mapped (what was found is named), an
            unsupported operator, or a check that fails.
    """
    from keras_advseg.onnx.graph import graph_layer

    proto, data = load_onnx(path)
    found_in, found_out = _io_shapes(proto)
    channels = 1 if spec.layout == "channels-first" else -1
    if len(found_in) != 5 or isinstance(found_in[channels], int) and found_in[channels] != 4:
        raise InputError(
            f"{path}: the model's input is {_shape_text(found_in)}; expected a 3-D volume of four "
            f"sequences, (N, 4, X, Y, Z) {spec.layout}"
            + (" (use --layout channels-last)" if found_in and found_in[-1] == 4 else "")
        )
    wanted = len(spec.channel_names)
    if len(found_out) != 5 or (
        isinstance(found_out[channels], int) and found_out[channels] != wanted
    ):
        raise InputError(
            f"{path}: the model's output is {_shape_text(found_out)}; expected {wanted} "
            f"{spec.outputs} channels, {spec.layout}"
        )
    spatial = found_in[2:] if spec.layout == "channels-first" else found_in[1:4]
    fixed = [(d, want) for d, want in zip(spatial, shape) if isinstance(d, int)]
    if any(d != want for d, want in fixed):
        raise InputError(
            f"{path}: the model's input is {_shape_text(found_in)}; the preprocessing's shape "
            f"is {tuple(shape)}: they must agree"
        )
    if isinstance(found_in[0], int):
        raise InputError(
            f"{path}: the model's batch is fixed at {found_in[0]}; export it with a dynamic "
            "batch (torch.onnx.export(..., dynamic_axes={'image': {0: 'batch'}}))"
        )
    say = say or (lambda line: None)
    layer = graph_layer(proto)
    first = spec.layout == "channels-first"
    from keras_advseg.data import MODALITIES

    inputs = keras.Input((*shape, len(MODALITIES)), name="image")
    x = OnnxInput([MODALITIES.index(m) for m in spec.modalities], first, name="onnx_input")(inputs)
    try:
        y = layer(x)
    except Exception:
        if getattr(layer, "failure", None) is not None:  # in one line, not Keras's wrapping
            raise layer.failure from None
        raise
    order = [spec.output_order.index(n) for n in spec.channel_names]
    outputs = OnnxOutput(spec.outputs, order, first, name="onnx_output")(y)
    model = keras.Model(inputs, outputs, name=Path(path).stem.replace(" ", "_")[:60] or "onnx")
    say(f"converted {len(proto.graph.node)} nodes of {Path(path).name}; checking them")
    difference, gradient_error = check_against_runtime(data, path, model, layer, shape, seed, say)
    onnx = require("onnx")
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or None
    source = {
        "format": "onnx",
        "file": Path(path).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": int(layer.opset),
        "producer": producer,
        "converter": f"keras-advseg {_version()} (onnx {onnx.__version__})",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
        "checked": {
            "max_output_difference": difference,
            "tolerance": TOLERANCE,
            "gradient_relative_error": gradient_error,
            "gradient_tolerance": GRADIENT_TOLERANCE,
        },
    }
    return model, source


def check_against_runtime(data: bytes, path, model, layer, shape, seed, say=None):
    """The converted graph against ONNX Runtime on one random input: its largest output
    difference (refused above :data:`TOLERANCE`) and the relative error of the converted graph's
    input gradient, along four random directions over the whole input, against central finite
    differences of ONNX Runtime's outputs (refused above :data:`GRADIENT_TOLERANCE`).

    Returns:
        ``(max output difference, gradient relative error)``.

    Raises:
        InputError: either check fails (the numbers named).
    """
    import tensorflow as tf

    ort = require("onnxruntime")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    ours = rng.normal(size=(1, *shape, 4)).astype("float32")
    theirs = np.asarray(model.get_layer("onnx_input")(ours))
    expected = session.run(None, {name: theirs})[0]
    got = np.asarray(layer(theirs))
    if got.shape != expected.shape:
        raise InputError(
            f"{path}: the converted graph's output is {got.shape}, ONNX Runtime's {expected.shape}"
        )
    difference = float(np.max(np.abs(got - expected)))
    if difference > TOLERANCE * (1 + float(np.max(np.abs(expected)))):
        raise InputError(
            f"{path}: the converted graph differs from ONNX Runtime by up to {difference:.3g} "
            f"(tolerance {TOLERANCE:g} of the outputs' scale); the import is refused"
        )
    say = say or (lambda line: None)
    say(f"outputs within {difference:.2g} of ONNX Runtime; checking a batch of two")
    # and as the saved model runs it, traced for any batch (the batch known only when it
    # runs: the shape arithmetic then computes with it), on a batch of two
    traced = tf.function(
        layer, input_signature=[tf.TensorSpec((None, *theirs.shape[1:]), tf.float32)]
    )
    pair = np.concatenate([theirs, rng.normal(size=theirs.shape).astype("float32")])
    batched = float(np.max(np.abs(traced(pair).numpy() - session.run(None, {name: pair})[0])))
    if batched > TOLERANCE * (1 + float(np.max(np.abs(expected)))):
        raise InputError(
            f"{path}: for a batch of two, the converted graph differs from ONNX Runtime by up "
            f"to {batched:.3g}; the import is refused"
        )
    difference = max(difference, batched)
    say("checking input gradients against finite differences (16 runs of ONNX Runtime)")
    # the converted graph's input gradient of a weighted sum of its outputs, against central
    # finite differences of the same sum computed by ONNX Runtime (our output mapping is
    # differentiable code of our own, tested apart)
    weights = rng.normal(size=expected.shape)
    tensor = tf.convert_to_tensor(theirs)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        value = tf.reduce_sum(layer(tensor) * tf.constant(weights, tf.float32))
    gradient = tape.gradient(value, tensor)  # None: no gradient reaches the input at all
    gradient = np.zeros(theirs.shape, np.float32) if gradient is None else gradient.numpy()

    def through_runtime(image):
        out = session.run(None, {name: image})[0]
        return float(np.sum(out.astype(np.float64) * weights))

    # directional derivatives along random directions over the whole input: a single voxel's
    # finite difference drowns in float32 rounding once a normalisation couples every output
    # to it, while a direction's derivative sums the gradient over every voxel. The finite
    # differences are themselves off by a few per cent on such networks (ReLU and max-pool
    # switches, curvature; the same holds for a Keras model's own): the better of two steps
    directions = [rng.normal(size=theirs.shape).astype("float32") for _ in range(4)]
    analytic = np.array([float(np.sum(gradient.astype(np.float64) * d)) for d in directions])
    error = np.inf
    for step in (1e-4, 3e-5):  # larger steps meet the curvature, smaller ones the rounding
        numeric = np.array(
            [
                (through_runtime(theirs + step * d) - through_runtime(theirs - step * d))
                / (2 * step)
                for d in directions
            ]
        )
        scale = max(float(np.linalg.norm(numeric)), 1e-12)
        error = min(error, float(np.linalg.norm(analytic - numeric) / scale))
    if error > GRADIENT_TOLERANCE:
        raise InputError(
            f"{path}: the converted model's input gradients differ from finite differences of "
            f"ONNX Runtime's outputs by {error:.1%} (tolerance {GRADIENT_TOLERANCE:.0%}); the "
            "import is refused"
        )
    return difference, error


def _io_shapes(proto):
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]

    def dims(value):
        shape = value.type.tensor_type.shape
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim
        ]

    return (
        dims(inputs[0]) if inputs else [],
        dims(proto.graph.output[0]) if proto.graph.output else [],
    )


def _shape_text(shape) -> str:
    return (
        "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")" if shape else "unknown"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-advseg")
    except PackageNotFoundError:
        return "unknown"
