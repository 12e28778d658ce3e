"""Each ONNX operator the converter runs, against ONNX Runtime on the same input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from onnx_graphs import model_of

from keras_advseg.onnx.graph import graph_layer
from keras_advseg.onnx.operators import OPERATORS, UnsupportedOperator

RNG = np.random.default_rng(0)


def w(*shape):
    return RNG.normal(size=shape).astype("float32")


X5 = ["N", 3, 6, 5, 4]


def case(op, attrs=None, extra=(), init=(), shape=X5, out=None, opset=17):
    """``(model, input shape)``: one node of ``op`` on input ``x`` (plus initializers)."""
    names = ["x", *extra]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    return model_of([node], [("x", shape)], ("y", out), init, opset=opset), shape


CASES = {
    "conv-pads-strides": case(
        "Conv",
        {"pads": [1, 0, 2, 1, 0, 1], "strides": [2, 1, 1]},
        ["w", "b"],
        [("w", w(5, 3, 3, 2, 3)), ("b", w(5))],
    ),
    "conv-same-upper": case(
        "Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 1, 2]}, ["w"], [("w", w(4, 3, 2, 3, 3))]
    ),
    "conv-same-lower": case("Conv", {"auto_pad": "SAME_LOWER"}, ["w"], [("w", w(4, 3, 2, 3, 2))]),
    "conv-dilated": case(
        "Conv",
        {"pads": [2, 1, 0, 2, 1, 0], "dilations": [2, 1, 1]},
        ["w"],
        [("w", w(4, 3, 3, 3, 1))],
    ),
    "conv-strided-dilated": case(
        "Conv",
        {"strides": [2, 1, 2], "dilations": [2, 1, 1], "pads": [2, 1, 1, 2, 1, 1]},
        ["w"],
        [("w", w(4, 3, 3, 3, 3))],
    ),
    "conv-transpose-kernel-below-stride": case(
        "ConvTranspose", {"strides": [2, 2, 2]}, ["w"], [("w", w(3, 2, 1, 1, 1))]
    ),
    "conv-2d": case("Conv", {"pads": [1, 1, 1, 1]}, ["w"], [("w", w(2, 3, 3, 3))], ["N", 3, 6, 5]),
    "conv-transpose": case(
        "ConvTranspose",
        {"strides": [2, 2, 1], "pads": [1, 0, 0, 0, 1, 0]},
        ["w", "b"],
        [("w", w(3, 4, 3, 2, 2)), ("b", w(4))],
    ),
    "conv-transpose-output-padding": case(
        "ConvTranspose",
        {"strides": [2, 2, 2], "output_padding": [1, 0, 1]},
        ["w"],
        [("w", w(3, 2, 3, 3, 3))],
    ),
    "instance-norm": case(
        "InstanceNormalization", {"epsilon": 1e-3}, ["s", "b"], [("s", w(3)), ("b", w(3))]
    ),
    "batch-norm": case(
        "BatchNormalization",
        {},
        ["s", "b", "m", "v"],
        [("s", w(3)), ("b", w(3)), ("m", w(3)), ("v", np.abs(w(3)) + 0.5)],
    ),
    "relu": case("Relu"),
    "leaky-relu": case("LeakyRelu", {"alpha": 0.2}),
    "prelu": case("PRelu", {}, ["s"], [("s", w(3, 1, 1, 1))]),
    "sigmoid": case("Sigmoid"),
    "tanh": case("Tanh"),
    "softmax-13": case("Softmax", {"axis": 1}),
    "softmax-11-flattens": case("Softmax", {"axis": 1}, opset=11),
    "add-broadcast": case("Add", {}, ["c"], [("c", w(3, 1, 1, 1))]),
    "sub": case("Sub", {}, ["c"], [("c", w(1))]),
    "mul": case("Mul", {}, ["c"], [("c", w(3, 6, 5, 4))]),
    "div": case("Div", {}, ["c"], [("c", np.abs(w(4)) + 1)]),
    "concat": case("Concat", {"axis": 1}, ["c"], [("c", w(1, 2, 6, 5, 4))], ["1", 3, 6, 5, 4]),
    "resize-nearest": case(
        "Resize", {"mode": "nearest"}, ["", "s"], [("s", np.array([1, 1, 2, 2, 3], "float32"))]
    ),
    "resize-linear-half-pixel": case(
        "Resize", {"mode": "linear"}, ["", "s"], [("s", np.array([1, 1, 2, 1.5, 2], "float32"))]
    ),
    "resize-linear-align-corners-sizes": case(
        "Resize",
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        ["", "", "z"],
        [("z", np.array([1, 3, 9, 7, 5], "int64"))],
        ["1", 3, 6, 5, 4],
    ),
    "resize-nearest-asymmetric-floor": case(
        "Resize",
        {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
        ["", "s"],
        [("s", np.array([1, 1, 1.5, 2, 2], "float32"))],
    ),
    "max-pool-padded": case(
        "MaxPool", {"kernel_shape": [3, 2, 2], "strides": [2, 2, 1], "pads": [1, 0, 0, 1, 1, 1]}
    ),
    "average-pool-excludes-pads": case(
        "AveragePool", {"kernel_shape": [3, 3, 2], "pads": [1, 1, 0, 1, 1, 1]}
    ),
    "average-pool-counts-pads": case(
        "AveragePool",
        {"kernel_shape": [2, 2, 2], "pads": [1, 1, 1, 0, 0, 0], "count_include_pad": 1},
    ),
    "reshape": case("Reshape", {}, ["s"], [("s", np.array([0, 3, -1], "int64"))]),
    "transpose": case("Transpose", {"perm": [0, 2, 1, 4, 3]}),
    "unsqueeze-squeeze": case("Unsqueeze", {}, ["a"], [("a", np.array([2], "int64"))]),
    "clip": case(
        "Clip",
        {},
        ["lo", "hi"],
        [("lo", np.array(-0.5, "float32")), ("hi", np.array(0.7, "float32"))],
    ),
    "identity": case("Identity"),
    "neg": case("Neg"),
    "reciprocal": case("Reciprocal"),
    "reduce-mean": case("ReduceMean", {"axes": [2, 4], "keepdims": 1}),
    "reduce-mean-dropped": case("ReduceMean", {"axes": [1], "keepdims": 0}),
    "pad": case(
        "Pad",
        {},
        ["p", "v"],
        [("p", np.array([0, 0, 1, 0, 2, 0, 0, 0, 1, 1], "int64")), ("v", np.array(0.5, "float32"))],
    ),
    "slice-negative-step-clamped": case(
        "Slice",
        {},
        ["b", "e", "a", "s"],
        [
            ("b", np.array([2**62, -1], "int64")),
            ("e", np.array([-(2**62), 0], "int64")),
            ("a", np.array([2, 3], "int64")),
            ("s", np.array([-2, -1], "int64")),
        ],
    ),
    "slice-empty": case(
        "Slice",
        {},
        ["b", "e", "a"],
        [
            ("b", np.array([2**62], "int64")),
            ("e", np.array([2**62], "int64")),
            ("a", np.array([4], "int64")),
        ],
    ),
    "tile": case("Tile", {}, ["r"], [("r", np.array([1, 1, 2, 1, 3], "int64"))]),
    "slice": case(
        "Slice",
        {},
        ["b", "e", "a", "s"],
        [
            ("b", np.array([1, -3], "int64")),
            ("e", np.array([5, 2**62], "int64")),
            ("a", np.array([2, 4], "int64")),
            ("s", np.array([2, 1], "int64")),
        ],
    ),
}


def chain(nodes, init=(), shape=X5):
    """``(model, input shape)``: several nodes from ``x`` to ``y``."""
    return model_of(nodes, [("x", shape)], ("y", None), init), shape


CASES.update(
    {
        # the shape arithmetic exporters write (Shape, Gather, Slice, Concat, Cast) and the
        # Reshape it feeds, the batch known only when the graph runs
        "shape-arithmetic-reshape": chain(
            [
                helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Gather", ["s", "i"], ["g"]),
                helper.make_node("Slice", ["s", "b", "e"], ["d"]),
                helper.make_node("Concat", ["g", "d", "m"], ["c32"], axis=0),
                helper.make_node("Cast", ["c32"], ["c"], to=7),
                helper.make_node("Reshape", ["x", "c"], ["y"]),
            ],
            [
                ("i", np.array([0, 1], "int64")),
                ("b", np.array([2], "int64")),
                ("e", np.array([3], "int64")),
                ("m", np.array([-1], "int64")),
            ],
        ),
        "cast-truncates": chain(
            [
                helper.make_node("Mul", ["x", "k"], ["big"]),
                helper.make_node("Cast", ["big"], ["i"], to=6),
                helper.make_node("Cast", ["i"], ["y"], to=1),
            ],
            [("k", np.array(3.7, "float32"))],
        ),
        "integer-div-truncates": chain(
            [
                helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Div", ["s", "two"], ["h"]),
                helper.make_node("Concat", ["h", "one"], ["t"], axis=0),
                helper.make_node("Slice", ["x", "zero", "t"], ["y"]),
            ],
            [
                ("two", np.array([1, 1, 2, 2, 2], "int64")),
                ("one", np.array([], "int64")),
                ("zero", np.zeros(5, "int64")),
            ],
        ),
        # PyTorch's interpolate(size=skip.shape[2:]): the sizes from the input's shape
        "resize-sizes-from-shape": chain(
            [
                helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
                helper.make_node("Slice", ["s", "two", "five"], ["dhw"]),
                helper.make_node("Mul", ["dhw", "k"], ["up"]),
                helper.make_node("Concat", ["nc", "up"], ["z"], axis=0),
                helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="nearest"),
            ],
            [
                ("zero", np.array([0], "int64")),
                ("two", np.array([2], "int64")),
                ("five", np.array([5], "int64")),
                ("k", np.array([2, 1, 2], "int64")),
            ],
        ),
        "sqrt": chain(
            [helper.make_node("Mul", ["x", "x"], ["s"]), helper.make_node("Sqrt", ["s"], ["y"])]
        ),
    }
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_operator_equals_onnx_runtime(name):
    model, shape = CASES[name]
    batch = {"N": 2, "1": 1}  # a symbolic batch of two, or the graph's batch of one
    x = RNG.normal(size=[batch.get(d, d) for d in shape]).astype("float32")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    got = np.asarray(graph_layer(model)(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["shape-arithmetic-reshape", "integer-div-truncates", "resize-sizes-from-shape"]
)
def test_shape_arithmetic_with_the_batch_known_only_when_the_graph_runs(name):
    """Traced for any batch, as a saved model runs: the known sizes stay constants, the batch is
    computed when the graph runs, and a batch of three equals ONNX Runtime's."""
    import tensorflow as tf

    model, shape = CASES[name]
    layer = graph_layer(model)
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, *shape[1:]), tf.float32)])
    x = RNG.normal(size=(3, *shape[1:])).astype("float32")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(traced(x).numpy(), session.run(None, {"x": x})[0], atol=1e-6)


def test_every_operator_has_a_case():
    tested = {node.op_type for model, _ in CASES.values() for node in model.graph.node}
    assert set(OPERATORS) - tested <= {"Upsample", "Dropout", "Squeeze"}


def test_what_cannot_be_run_is_named():
    unknown = model_of(
        [helper.make_node("Erf", ["x"], ["y"]), helper.make_node("Gelu", ["y"], ["z"])],
        [("x", X5)],
        ("z", None),
        opset=20,
    )
    with pytest.raises(UnsupportedOperator, match="unsupported ONNX operators: Erf, Gelu"):
        graph_layer(unknown)
    grouped, _ = case("Conv", {"group": 3}, ["w"], [("w", w(3, 1, 3, 3, 3))])
    with pytest.raises(UnsupportedOperator, match="group=3"):
        graph_layer(grouped)(np.zeros((1, 3, 6, 5, 4), "float32"))
