"""Saving and loading ``.keras`` models (with their preprocessing) safely, and exporting SavedModels."""

from __future__ import annotations

import errno
from pathlib import Path

import keras
import tensorflow as tf

from keras_advseg import losses, metrics, models  # noqa: F401  (registers serializable classes)
from keras_advseg.errors import InputError
from keras_advseg.io import atomic_path, check_free_space, model_bytes
from keras_advseg.keras_private import cache_saving_skipsets
from keras_advseg.metrics import logits_to_probabilities, probabilities_to_labels


def load_model(path: str | Path) -> keras.Model:
    """Loads a ``.keras`` model in Keras safe mode (no arbitrary code is run).

    Raises:
        ValueError: ``path`` is not a readable ``.keras`` file.
    """
    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"{path}: expected an existing .keras model file")
    cache_saving_skipsets()
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises several types for broken archives
        raise InputError(f"{path}: cannot load model ({exc})") from None


PREPROCESSING_ENTRY = "keras_advseg/preprocessing.json"
"""Where a ``.keras`` archive keeps the preprocessing its model was trained with."""


SOURCE_ENTRY = "keras_advseg/source.json"
"""Where a ``.keras`` archive converted from another format (``advseg import-onnx``) keeps where
it came from: the file, its SHA-256, the converter and the import's checks."""


def save_model(model: keras.Model, path: str | Path, preprocessing=None, source=None) -> Path:
    """Saves ``model`` as a ``.keras`` file atomically, with its training preprocessing inside.

    Args:
        model: The model.
        path: Destination ``.keras`` file.
        preprocessing: A :class:`~keras_advseg.inference.Preprocessing` stored in the
            archive (``advseg predict`` reads it back), or None.
        source: For a converted model, where it came from (a JSON object, :data:`SOURCE_ENTRY`),
            or None.

    Returns:
        ``path``.
    """
    import json
    import zipfile

    path = Path(path)
    check_free_space(path.parent, model_bytes(model), f"the model {path.name}")
    cache_saving_skipsets()
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            if preprocessing is not None:
                archive.writestr(PREPROCESSING_ENTRY, json.dumps(preprocessing.to_json(), indent=2))
            if source is not None:
                archive.writestr(SOURCE_ENTRY, json.dumps(source, indent=2))
    return path


def load_source(path: str | Path) -> dict | None:
    """Where a converted model came from (:data:`SOURCE_ENTRY`), or None for a model of this
    package's own.

    Raises:
        InputError: the entry is there but is not a JSON object.
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            if SOURCE_ENTRY not in archive.namelist():
                return None
            value = json.loads(archive.read(SOURCE_ENTRY))
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the model's source record ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: cannot read the model's source record (not a JSON object)")
    return value


def load_preprocessing(path: str | Path, *, optional: bool = False):
    """The :class:`~keras_advseg.inference.Preprocessing` stored in a ``.keras`` file.

    Args:
        path: The ``.keras`` file.
        optional: Return None for a model saved without it, instead of refusing it.

    Raises:
        InputError: the file has none (a model saved without it; unless ``optional``) or it is
            malformed.
    """
    import json
    import zipfile

    from keras_advseg.inference import Preprocessing

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if PREPROCESSING_ENTRY not in archive.namelist():
                if optional:
                    return None
                raise InputError(
                    f"{path}: the model does not record the preprocessing it was trained with; "
                    "re-save it with keras_advseg.export.save_model or train it with advseg train"
                )
            value = json.loads(archive.read(PREPROCESSING_ENTRY))
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: cannot read the stored preprocessing ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: cannot read the stored preprocessing (not a JSON object)")
    return Preprocessing.from_json(value, path)


def export_savedmodel(
    model: keras.Model, out_dir: str | Path, *, temperature: float = 1.0, preprocessing=None
) -> Path:
    """Writes a TensorFlow SavedModel with a ``serve`` signature.

    ``serve`` takes a preprocessed float32 batch ``(B, X, Y, Z, 4)`` (or
    ``(B, X, Y, 4)`` for a 2-D model) named ``image`` and returns
    ``{"probabilities": softmax(logits / T), "labels": BraTS label map (uint8)}``.
    With ``preprocessing``, ``serve`` takes two inputs: ``image``, the cropped and
    resized volume in raw intensities, and ``brain_mask`` ``(B, X, Y, Z, 1)``, the brain
    mask (voxels where any modality is non-zero) of the crop resized by nearest
    neighbour, as training and ``advseg predict`` compute it
    (:func:`keras_advseg.inference.crop_resize_and_mask` gives both). The graph
    standardises the image inside that mask exactly as training did (0 outside): with
    the stored training-split statistics, or with each volume's own for
    ``normalization="volume"``. The mask is an input because it cannot be recomputed
    from the resized image: linear interpolation makes voxels at the brain's edge
    non-zero that the nearest-neighbour mask leaves out.
    Written to a temporary folder and renamed, so ``out_dir`` is never
    half-written.

    Args:
        model: A model returning logits.
        out_dir: Destination folder (must not exist).
        temperature: Softmax temperature of the exported probabilities (deploy at 1).
        preprocessing: The model's :class:`~keras_advseg.inference.Preprocessing`, or None.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: already exists; choose a new folder")
    shape = (None,) + input_shape(model)
    spec = tf.TensorSpec(shape, tf.float32, name="image")

    def outputs(image):
        probabilities = logits_to_probabilities(model(image, training=False), temperature)
        return {"probabilities": probabilities, "labels": probabilities_to_labels(probabilities)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    if preprocessing is None:
        archive.add_endpoint(name="serve", fn=outputs, input_signature=[spec])
    else:
        mask_spec = tf.TensorSpec(shape[:-1] + (1,), tf.bool, name="brain_mask")

        def serve(image, brain_mask):
            return outputs(standardize_in_graph(image, preprocessing, brain_mask))

        archive.add_endpoint(name="serve", fn=serve, input_signature=[spec, mask_spec])
    check_free_space(out_dir.parent, model_bytes(model, copies=2), "the SavedModel")
    with atomic_path(out_dir, directory=True) as tmp:
        try:
            archive.write_out(str(tmp), verbose=False)
        except tf.errors.ResourceExhaustedError as exc:  # the disk filled while writing
            message = f"no space left on device ({exc.message})"
            raise OSError(errno.ENOSPC, message, str(out_dir)) from None
    return out_dir


def standardize_in_graph(image, preprocessing, mask):
    """:func:`keras_advseg.data.preprocess.standardize` as TensorFlow ops on a batch ``(B, ..., C)``
    inside the brain ``mask`` ``(B, ..., 1)``."""
    mask = tf.cast(mask, tf.bool)
    inside = tf.cast(mask, image.dtype)
    if preprocessing.mean is not None:
        mean = tf.constant(preprocessing.mean, image.dtype)
        std = tf.constant(preprocessing.std, image.dtype)
    else:
        axes = list(range(1, len(image.shape) - 1))
        count = tf.maximum(tf.reduce_sum(inside, axis=axes, keepdims=True), 1.0)
        mean = tf.reduce_sum(image * inside, axis=axes, keepdims=True) / count
        variance = tf.reduce_sum(tf.square(image - mean) * inside, axis=axes, keepdims=True) / count
        std = tf.maximum(tf.sqrt(variance), 1e-12)
    return tf.where(mask, (image - mean) / std, tf.zeros_like(image))


def input_shape(model: keras.Model) -> tuple:
    """Per-sample input shape; a slice-wise model takes volumes of any depth."""
    if isinstance(model, models.SliceWise):
        x, y, channels = model.slice_model.input_shape[1:]
        return (x, y, None, channels)
    return tuple(model.input_shape[1:])
