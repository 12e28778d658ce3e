"""An ONNX graph as one Keras 3 layer: its nodes run in order with :data:`.operators.OPERATORS`,
its floating-point initializers held as the layer's (frozen) weights, so that the layer saves
and loads as any ``.keras`` model does (safe mode: its configuration is plain JSON)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_advseg.onnx.operators import OPERATORS, SHAPE_INPUTS, UnsupportedOperator

SMALL_CONSTANT = 64
"""Non-float initializers, and float ones of at most this many values, are kept in the layer's
configuration (shapes, scales, axes); larger float tensors become its weights."""


@keras.saving.register_keras_serializable(package="keras_advseg")
class OnnxGraph(keras.layers.Layer):
    """Runs an ONNX graph with one input and one output.

    Args:
        nodes: ``[{"op", "name", "inputs", "outputs", "attrs"}]`` in execution order (ONNX's
            topological order); attributes as JSON values.
        input_name, output_name: The graph's input and output.
        weights_spec: ``[{"name", "shape"}]``: the float initializers held as weights.
        constants: ``{name: {"value", "dtype"}}``: the small or non-float initializers.
        opset: The model's ``ai.onnx`` opset version.
    """

    def __init__(
        self,
        nodes,
        input_name,
        output_name,
        weights_spec,
        constants,
        opset,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.nodes = nodes
        self.input_name = input_name
        self.output_name = output_name
        self.weights_spec = weights_spec
        self.constants = constants
        self.opset = int(opset)
        self.tensors = {
            spec["name"]: self.add_weight(
                shape=tuple(spec["shape"]),
                initializer="zeros",
                trainable=False,
                name=f"w{i}",
            )
            for i, spec in enumerate(weights_spec)
        }

    def call(self, x):
        self.failure = None
        values = dict(self.tensors)
        for name, constant in self.constants.items():  # NumPy arrays: known when traced
            values[name] = np.asarray(constant["value"], dtype=constant["dtype"])
        values[self.input_name] = x
        for node in self.nodes:
            inputs = [values[name] if name else None for name in node["inputs"]]
            for index in SHAPE_INPUTS.get(node["op"], ()):
                if index < len(inputs) and inputs[index] is not None:
                    try:
                        inputs[index] = _constant(inputs[index], node, index)
                    except UnsupportedOperator as exc:
                        self.failure = exc
                        raise
            try:
                outputs = OPERATORS[node["op"]](inputs, node["attrs"], self.opset, node["name"])
            except UnsupportedOperator as exc:  # kept: Keras rewraps what call raises
                self.failure = exc
                raise
            for name, value in zip(node["outputs"], outputs):
                values[name] = value
        return values[self.output_name]

    def get_config(self):
        return {
            **super().get_config(),
            "nodes": self.nodes,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "weights_spec": self.weights_spec,
            "constants": self.constants,
            "opset": self.opset,
        }


def _constant(value, node, index):
    """A shape-like input as a NumPy array (it must be an initializer or a Constant)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(ops.convert_to_numpy(value))
    except Exception:  # a tensor computed in the graph
        raise UnsupportedOperator(
            f"{node['name']}: input {index} of {node['op']} is computed in the graph; it must be "
            "a constant (shapes, scales, axes)"
        ) from None


def graph_layer(model, name: str = "onnx_graph") -> OnnxGraph:
    """The :class:`OnnxGraph` of an ``onnx.ModelProto``, its weights set.

    Raises:
        UnsupportedOperator: an operator outside :data:`OPERATORS` (all of them named), a
            node with more outputs than the converter runs, a graph with several inputs or
            outputs.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise UnsupportedOperator("the model imports no ai.onnx opset")
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedOperator(
            f"the graph has {len(inputs)} input(s) and {len(graph.output)} output(s); one of "
            "each is supported"
        )
    unknown = sorted(
        {n.op_type for n in graph.node if n.op_type not in OPERATORS | {"Constant": 0}}
    )
    if unknown:
        raise UnsupportedOperator(
            f"unsupported ONNX operators: {', '.join(unknown)} (supported: "
            f"{', '.join(sorted(OPERATORS))}, Constant)"
        )
    nodes = []
    for index, node in enumerate(graph.node):
        label = node.name or f"{node.op_type}_{index}"
        attrs = {a.name: _attribute(onnx.helper.get_attribute_value(a)) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOperator(f"{label}: operator domain {node.domain!r}")
        if node.op_type == "Constant":
            value = onnx.helper.get_attribute_value(node.attribute[0])
            initializers[node.output[0]] = (
                numpy_helper.to_array(value) if hasattr(value, "dims") else np.asarray(value)
            )
            continue
        outputs = [o for o in node.output]
        if len([o for o in outputs[1:] if o]) > 0:
            raise UnsupportedOperator(f"{label}: {node.op_type} with {len(outputs)} outputs")
        nodes.append(
            {
                "op": node.op_type,
                "name": label,
                "inputs": list(node.input),
                "outputs": outputs[:1],
                "attrs": attrs,
            }
        )
    weights, constants = [], {}
    for key, array in initializers.items():
        if array.dtype.kind == "f" and array.size > SMALL_CONSTANT:
            weights.append((key, array.astype("float32")))
        else:
            dtype = "float32" if array.dtype.kind == "f" else str(array.dtype)
            constants[key] = {"value": array.astype(dtype).tolist(), "dtype": dtype}
    layer = OnnxGraph(
        nodes,
        inputs[0],
        graph.output[0].name,
        [{"name": key, "shape": list(array.shape)} for key, array in weights],
        constants,
        opset,
        name=name,
    )
    for (_, array), variable in zip(weights, layer.tensors.values()):
        variable.assign(array)
    return layer


def _attribute(value):
    """An ONNX attribute as a JSON value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_attribute(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if hasattr(value, "dims"):  # a tensor attribute (Constant's is handled apart)
        from onnx import numpy_helper

        return numpy_helper.to_array(value).tolist()
    return value
