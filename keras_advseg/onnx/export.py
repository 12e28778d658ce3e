"""A Keras model of this package as ONNX, for serving with ONNX Runtime: Keras's own exporter
(``Model.export(format="onnx")``, through ``tf2onnx``), its outputs checked against the model's
before the file is kept."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from keras_advseg.errors import InputError

TOLERANCE = 1e-3
"""The export's check: ONNX Runtime's probabilities within this of the model's. The two run
float32 kernels that sum in other orders (oneDNN's, ONNX Runtime's): the paper's 3-D UNet with
random weights differs by about 2e-4 at 64^3 (``benchmarks/bench_onnx.py``)."""


def export_onnx(model: keras.Model, path, *, temperature: float = 1.0, seed: int = 0) -> float:
    """Writes ``model`` as an ONNX file whose output is ``probabilities``
    (``softmax(logits / temperature)``, channels last, as the SavedModel's ``serve``), checked
    against the model on a random input; written to a temporary name and renamed.

    Args:
        model: A model returning logits.
        path: The ``.onnx`` file to write (must not exist).
        temperature: Softmax temperature of the probabilities (deploy at 1).
        seed: Seed of the check's input.

    Returns:
        The largest difference between ONNX Runtime's probabilities and the model's.

    Raises:
        FileExistsError: ``path`` exists.
        InputError: the ``onnx`` extra is missing, or the check fails.
    """
    from keras_advseg.export import input_shape
    from keras_advseg.io import atomic_path
    from keras_advseg.onnx.convert import require

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; choose a new file")
    if path.suffix != ".onnx":
        raise InputError(f"{path}: the ONNX file's name must end in .onnx")
    require("tf2onnx")
    ort = require("onnxruntime")
    shape = input_shape(model)
    inputs = keras.Input(shape, name="image")
    probabilities = keras.layers.Softmax(name="probabilities")(model(inputs) / float(temperature))
    wrapper = keras.Model(inputs, probabilities)
    sample_shape = (1, *[16 if d is None else d for d in shape])
    sample = np.random.default_rng(seed).normal(size=sample_shape).astype("float32")
    expected = np.asarray(wrapper(sample))
    onnx = require("onnx")
    with atomic_path(path) as tmp:
        wrapper.export(str(tmp), format="onnx", verbose=False)
        proto = onnx.load(str(tmp))
        _rename(proto.graph, proto.graph.output[0].name, "probabilities")
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: sample})[0]
        difference = float(np.max(np.abs(got - expected)))
        if got.shape != expected.shape or difference > TOLERANCE:
            raise InputError(
                f"{path}: ONNX Runtime's output differs from the model's by {difference:.3g} "
                f"(tolerance {TOLERANCE:g}); nothing was written"
            )
    return difference


def _rename(graph, old: str, new: str) -> None:
    """Renames the tensor ``old`` of ``graph`` (the exporter names its output after a
    TensorFlow node, ``Identity:0``) everywhere it appears."""
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for value in (*graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
