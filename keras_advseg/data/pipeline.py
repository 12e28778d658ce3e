"""``tf.data`` input pipelines: 3-D volumes and 2-D axial slices, with augmentation.

Labels become one-hot over the four BraTS classes at the edge of the pipeline
(index 3 <-> label 4). The paper's augmentation -- rotations by multiples of
90 degrees within axial slices, flips and in-plane transposes -- is applied
jointly to image and labels with stateless random ops seeded from ``seed``,
so a pipeline is reproducible and differs from epoch to epoch.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_advseg.data.errors import DataError
from keras_advseg.data.prepare import PreparedDataset
from keras_advseg.data.subject import BRATS_LABELS
from keras_advseg.errors import InputError

N_CLASSES = len(BRATS_LABELS)
_LABEL_TO_INDEX = np.zeros(max(BRATS_LABELS) + 1, np.int32)
_LABEL_TO_INDEX[list(BRATS_LABELS)] = np.arange(N_CLASSES)


def one_hot_labels(labels) -> tf.Tensor:
    """BraTS label map (0/1/2/4) -> one-hot float32 ``(..., 4)`` (index 3 is label 4).

    ``keras.utils.to_categorical(labels, 4)`` does not do this: BraTS labels hold 4.

    Raises:
        InputError: a value other than 0, 1, 2 and 4.
    """
    values = np.unique(np.asarray(labels)) if not isinstance(labels, tf.Tensor) else None
    if values is not None and not set(values.tolist()) <= set(BRATS_LABELS):
        raise InputError(
            f"labels must be a BraTS label map with values {BRATS_LABELS}; got values "
            f"{sorted(values.tolist())[:8]}"
        )
    index = tf.gather(tf.constant(_LABEL_TO_INDEX), tf.cast(labels, tf.int32))
    return tf.one_hot(index, N_CLASSES, dtype=tf.float32)


def label_map(one_hot) -> np.ndarray:
    """One-hot labels or logits/probabilities ``(..., 4)`` -> BraTS label map (0/1/2/4), uint8:
    the inverse of :func:`one_hot_labels`.

    Raises:
        InputError: the last axis is not the four classes.
    """
    one_hot = np.asarray(one_hot)
    if one_hot.ndim < 1 or one_hot.shape[-1] != N_CLASSES:
        raise InputError(
            f"expected one-hot labels with {N_CLASSES} classes on the last axis; got shape "
            f"{one_hot.shape}"
        )
    return np.asarray(BRATS_LABELS, np.uint8)[np.argmax(one_hot, axis=-1)]


def augment(image: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Random axial rotation by k*90 degrees, flips and in-plane transpose.

    Args:
        image: ``(X, Y, Z, C)``.
        labels: ``(X, Y, Z)`` or ``(X, Y, Z, K)``, transformed identically.
        seed: int32/int64 ``(2,)`` stateless seed.

    Returns:
        The transformed ``(image, labels)``. Rotations and transposes that
        would change the shape (``X != Y``) are left out.
    """
    square = image.shape[0] is not None and image.shape[0] == image.shape[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    draws = [tf.random.stateless_uniform([], seed=seeds[i]) < 0.5 for i in range(4)]

    def both(fn, condition, img, lab):
        return tf.cond(condition, lambda: (fn(img), fn(lab)), lambda: (img, lab))

    for axis, condition in zip((0, 1, 2), draws[:3]):
        image, labels = both(lambda t, a=axis: tf.reverse(t, [a]), condition, image, labels)
    if square:
        swap = lambda t: tf.transpose(t, [1, 0, 2] + list(range(3, t.shape.rank)))
        image, labels = both(swap, draws[3], image, labels)
        k = tf.random.stateless_uniform([], seed=seeds[4], maxval=4, dtype=tf.int32)
        for quarter in range(1, 4):
            image, labels = both(
                lambda t, q=quarter: _rot90(t, q), tf.equal(k, quarter), image, labels
            )
    else:
        rotate = tf.random.stateless_uniform([], seed=seeds[4]) < 0.5
        image, labels = both(lambda t: _rot90(t, 2), rotate, image, labels)
    return image, labels


def volume_dataset(
    prepared: PreparedDataset,
    split: str = "train",
    *,
    batch_size: int = 1,
    shuffle: bool | None = None,
    augment_data: bool | None = None,
    seed: int = 0,
    ids: list[str] | None = None,
    soft_labels: str | None = None,
    corruptions=None,
) -> tf.data.Dataset:
    """Batches of whole volumes: ``(B, X, Y, Z, 4)`` images and one-hot labels.

    Args:
        prepared: A prepared dataset.
        split: Which subjects (ignored when ``ids`` is given).
        batch_size: Volumes per batch (paper: 1).
        shuffle: Shuffle subjects, differently each epoch, from ``seed``. None: only the
            ``"train"`` split (an evaluation split, or explicit ``ids``, keeps its order).
        augment_data: Apply :func:`augment`. None: as ``shuffle``.
        seed: Seed of shuffling and augmentation.
        ids: Explicit subject ids.
        soft_labels: Folder of ``<id>.npy`` soft targets (distillation) used
            instead of the one-hot labels.
        corruptions: An :class:`~keras_advseg.data.corrupted.CorruptionAugmentation`: corrupt
            volumes before standardising them, drawn from ``seed``.

    Returns:
        A prefetched ``tf.data.Dataset`` of ``(image, one_hot)``.

    Raises:
        ValueError: no labelled subject in the selection, or ``batch_size < 1``.
    """
    ds = _volumes(
        prepared,
        split,
        shuffle=shuffle,
        augment_data=augment_data,
        seed=seed,
        ids=ids,
        soft_labels=soft_labels,
        corruptions=corruptions,
    )
    _check_batch(batch_size)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def slice_dataset(
    prepared: PreparedDataset,
    split: str = "train",
    *,
    batch_size: int = 64,
    shuffle: bool | None = None,
    augment_data: bool | None = None,
    seed: int = 0,
    shuffle_buffer: int = 512,
    ids: list[str] | None = None,
    soft_labels: str | None = None,
    corruptions=None,
) -> tf.data.Dataset:
    """Batches of axial slices ``(B, X, Y, 4)`` for the 2-D UNet (paper: batch 64).

    Volumes are augmented as a whole, then cut along axis 2 (axial).

    Args:
        prepared: A prepared dataset.
        split: Which subjects (ignored when ``ids`` is given).
        batch_size: Slices per batch.
        shuffle: Shuffle volumes and slices from ``seed``. None: only the ``"train"`` split.
        augment_data: Apply :func:`augment` to each volume. None: as ``shuffle``.
        seed: Seed of shuffling and augmentation.
        shuffle_buffer: Slices in the shuffle buffer.
        ids: Explicit subject ids.
        soft_labels: Folder of ``<id>.npy`` soft targets used instead of one-hot labels.
        corruptions: Corrupt volumes before slicing them (see :func:`volume_dataset`).

    Returns:
        A prefetched ``tf.data.Dataset`` of ``(image_slice, one_hot_slice)``.
    """
    shuffle, augment_data = _order_defaults(split, ids, shuffle, augment_data)
    ds = _volumes(
        prepared,
        split,
        shuffle=shuffle,
        augment_data=augment_data,
        seed=seed,
        ids=ids,
        soft_labels=soft_labels,
        corruptions=corruptions,
    )
    _check_batch(batch_size)
    ds = ds.map(
        lambda x, y: (tf.transpose(x, [2, 0, 1, 3]), tf.transpose(y, [2, 0, 1, 3]))
    ).unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _order_defaults(split, ids, shuffle, augment_data) -> tuple[bool, bool]:
    """``shuffle`` and ``augment_data``, where None means: only for the ``"train"`` split."""
    training = ids is None and split == "train"
    return (
        training if shuffle is None else shuffle,
        training if augment_data is None else augment_data,
    )


def _volumes(
    prepared, split, *, shuffle, augment_data, seed, ids, soft_labels=None, corruptions=None
) -> tf.data.Dataset:
    shuffle, augment_data = _order_defaults(split, ids, shuffle, augment_data)
    ids = list(ids) if ids is not None else prepared.ids(split)
    if not ids:
        raise InputError(f"no subjects in split {split!r} of {prepared.root}")
    shape = prepared.shape

    def load(subject_id, draw=0):
        subject_id = subject_id.decode()
        if corruptions is None:
            image, labels = prepared.load(subject_id)
        else:
            image, labels = prepared.load(subject_id, transform=lambda v: corruptions(v, draw))
        if soft_labels is not None:
            return image, _read_soft_labels(Path(soft_labels) / f"{subject_id}.npy", shape)
        if labels is None:
            raise InputError(f"subject {subject_id} has no labels")
        return image, labels

    def read(subject_id, draw=None):
        target_type = tf.float32 if soft_labels is not None else tf.uint8
        inputs = [subject_id] if draw is None else [subject_id, draw]
        image, target = tf.numpy_function(load, inputs, [tf.float32, target_type], stateful=False)
        image.set_shape(shape + (4,))
        if soft_labels is not None:
            target.set_shape(shape + (N_CLASSES,))
            return image, target
        target.set_shape(shape)
        return image, one_hot_labels(target)

    ds = tf.data.Dataset.from_tensor_slices(ids)
    if shuffle:
        ds = ds.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    if corruptions is None:
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # each volume's corruption drawn from its own seed, differently each epoch
        draws = tf.data.Dataset.random(seed=seed + 7, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(
            read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    if augment_data:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        (image_spec, labels_spec), seed_spec = ds.element_spec
        traced = _traced_augment(image_spec, labels_spec, seed_spec)
        ds = ds.map(
            lambda xy, s: traced(xy[0], xy[1], s),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds


_AUGMENT = {}


def _traced_augment(*specs: tf.TensorSpec):
    """:func:`augment` as one ``tf.function`` per element shape and dtype.

    ``tf.data`` traces a map function anew for every dataset, and training builds one dataset
    per epoch (each epoch's order and augmentations drawn from its own seed): called from
    the map function, the augmentation's ops are traced once per process instead of once per
    epoch (a third of a second each on the development machine), and compute the same.
    """
    key = tuple((tuple(spec.shape), spec.dtype.name) for spec in specs)
    if key not in _AUGMENT:
        _AUGMENT[key] = tf.function(augment, input_signature=specs)
    return _AUGMENT[key]


def _read_soft_labels(path: Path, shape) -> np.ndarray:
    """A cached soft-label volume, checked (untrusted input)."""
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: missing or unreadable soft labels ({exc})") from None
    if (
        value.shape != tuple(shape) + (N_CLASSES,)
        or value.dtype != np.float32
        or not np.all(np.isfinite(value))
    ):
        raise DataError(f"{path}: malformed soft labels (shape {value.shape}, dtype {value.dtype})")
    return value


@contextlib.contextmanager
def surfaced_data_errors():
    """Re-raises, as itself, a package error that a tf.data reader raised inside TensorFlow.

    ``tf.numpy_function`` turns a Python exception into an ``OpError`` whose
    message holds the original's; the user should see the one line naming the file.

    Raises:
        DataError: with the original message.
    """
    try:
        yield
    except tf.errors.OpError as exc:
        match = re.search(r"(?:DataError|InputError|FileFormatError): ([^\n]+)", exc.message or "")
        if match is None:
            raise
        raise DataError(match.group(1).strip()) from None


def _rot90(t: tf.Tensor, quarters: int) -> tf.Tensor:
    """Rotates the first two axes by ``quarters`` * 90 degrees."""
    perm = [1, 0, 2] + list(range(3, t.shape.rank))
    for _ in range(quarters):
        t = tf.reverse(tf.transpose(t, perm), [0])
    return t


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
