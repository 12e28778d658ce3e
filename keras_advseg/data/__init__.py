"""Data layer: dataset discovery, loading, preprocessing, pipelines and the phantom.

``one_hot_labels`` and ``label_map`` (between BraTS label maps and one-hot labels) and
``volume_dataset`` are imported on first use: they start TensorFlow.
"""

from keras_advseg._lazy import lazy_exports
from keras_advseg.data.layouts import discover_subjects
from keras_advseg.data.subject import BRATS_LABELS, MODALITIES, Subject
from keras_advseg.errors import DataError

_PIPELINE = ("one_hot_labels", "label_map", "volume_dataset", "slice_dataset")
"""Defined in :mod:`keras_advseg.data.pipeline` (it imports TensorFlow)."""

__all__ = ["BRATS_LABELS", "MODALITIES", "DataError", "Subject", "discover_subjects", *_PIPELINE]


__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(_PIPELINE, "pipeline"))
