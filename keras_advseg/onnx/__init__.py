"""ONNX in and out: segmentation networks from PyTorch, MONAI or nnU-Net converted to Keras
models every command takes (:func:`import_onnx`), and this package's models written as ONNX
(:func:`export_onnx`). Needs the ``onnx`` extra (``pip install "keras-advseg[onnx]"``)."""

from __future__ import annotations

from keras_advseg._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "OnnxImport": "convert",
        "import_onnx": "convert",
        "export_onnx": "export",
        "OnnxGraph": "graph",
        "OPERATORS": "operators",
    },
)
