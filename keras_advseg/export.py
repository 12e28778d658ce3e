"""Loading ``.keras`` models safely and exporting TensorFlow SavedModels."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from keras_advseg import losses, metrics, models  # noqa: F401  (registers serializable classes)
from keras_advseg.errors import InputError
from keras_advseg.io import atomic_path
from keras_advseg.metrics import logits_to_probabilities, probabilities_to_labels


def load_model(path: str | Path) -> keras.Model:
    """Loads a ``.keras`` model in Keras safe mode (no arbitrary code is run).

    Raises:
        ValueError: ``path`` is not a readable ``.keras`` file.
    """
    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"{path}: expected an existing .keras model file")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises several types for broken archives
        raise InputError(f"{path}: cannot load model ({exc})") from None


def export_savedmodel(model: keras.Model, out_dir: str | Path, *, temperature: float = 1.0) -> Path:
    """Writes a TensorFlow SavedModel with a ``serve`` signature.

    ``serve`` takes a preprocessed float32 batch ``(B, X, Y, Z, 4)`` (or
    ``(B, X, Y, 4)`` for a 2-D model) named ``image`` and returns
    ``{"probabilities": softmax(logits / T), "labels": BraTS label map (uint8)}``.
    Written to a temporary folder and renamed, so ``out_dir`` is never
    half-written.

    Args:
        model: A model returning logits.
        out_dir: Destination folder (must not exist).
        temperature: Softmax temperature of the exported probabilities (deploy at 1).

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: already exists; choose a new folder")
    spec = tf.TensorSpec((None,) + _input_shape(model), tf.float32, name="image")

    def serve(image):
        probabilities = logits_to_probabilities(model(image, training=False), temperature)
        return {"probabilities": probabilities, "labels": probabilities_to_labels(probabilities)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[spec])
    with atomic_path(out_dir, directory=True) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return out_dir


def _input_shape(model: keras.Model) -> tuple:
    """Per-sample input shape; a slice-wise model takes volumes of any depth."""
    if isinstance(model, models.SliceWise):
        x, y, channels = model.slice_model.input_shape[1:]
        return (x, y, None, channels)
    return tuple(model.input_shape[1:])
