"""Small ONNX graphs built with onnx.helper: one operator at a time, and a 3-D segmentation
network of the operators BraTS models use (no PyTorch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def model_of(nodes, inputs, output, initializers=(), opset=OPSET):
    """A checked ``ModelProto``: ``inputs`` and ``output`` as ``(name, shape)`` (an output shape
    of None is inferred by ONNX's shape inference)."""
    initializers = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in initializers]
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]

    def build(out):
        graph = helper.make_graph(list(nodes), "test", values, [out], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model

    name, shape = output
    if shape is None:  # the output's type as ONNX infers it
        rank = len(inputs[0][1])
        draft = build(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank))
        inferred = onnx.shape_inference.infer_shapes(draft)
        known = {v.name: v for v in inferred.graph.value_info}
        out = known.get(name) or inferred.graph.output[0]
        model = build(out)
    else:
        model = build(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    onnx.checker.check_model(model)
    return model


def unet(rng, *, outputs=4, size=8, width=4, opset=OPSET):
    """A two-level 3-D UNet, channels first: Conv, InstanceNormalization, LeakyRelu, MaxPool,
    ConvTranspose, Resize (linear), Concat, Add, and a 1x1x1 Conv to ``outputs`` channels (a
    Sigmoid after it for 3 region channels)."""

    def weight(*shape):
        return (rng.normal(size=shape) * 0.3).astype("float32")

    init = {
        "w1": weight(width, 4, 3, 3, 3),
        "b1": weight(width),
        "s1": 1 + weight(width),
        "t1": weight(width),
        "w2": weight(2 * width, width, 3, 3, 3),
        "b2": weight(2 * width),
        "wt": weight(2 * width, width, 2, 2, 2),
        "bt": weight(width),
        "w3": weight(width, 4 * width, 3, 3, 3),
        "w4": weight(outputs, width, 1, 1, 1),
        "b4": weight(outputs),
        "scales": np.array([1, 1, 2, 2, 2], "float32"),
    }
    pad = [1] * 6
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=pad, kernel_shape=[3, 3, 3]),
        helper.make_node("InstanceNormalization", ["c1", "s1", "t1"], ["n1"], epsilon=1e-5),
        helper.make_node("LeakyRelu", ["n1"], ["a1"], alpha=0.01),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=pad),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("ConvTranspose", ["a2", "wt", "bt"], ["u1"], strides=[2, 2, 2]),
        helper.make_node(
            "Resize",
            ["a2", "", "scales"],
            ["u2"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Concat", ["a1", "u1", "u2"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["c3"], pads=pad),
        helper.make_node("Add", ["c3", "a1"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["logits" if outputs == 4 else "z"]),
    ]
    output = "logits"
    if outputs == 3:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["logits"]))
    return model_of(
        nodes,
        [("image", ["N", 4, size, size, size])],
        (output, ["N", outputs, size, size, size]),
        init.items(),
        opset=opset,
    )
