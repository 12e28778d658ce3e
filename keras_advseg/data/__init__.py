"""Data layer: dataset discovery, loading, preprocessing, pipelines and the phantom.

``one_hot_labels`` and ``label_map`` (between BraTS label maps and one-hot labels) and
``volume_dataset`` are imported on first use: they start TensorFlow.
"""

import importlib

from keras_advseg.data.layouts import discover_subjects
from keras_advseg.data.subject import BRATS_LABELS, MODALITIES, Subject
from keras_advseg.errors import DataError

_PIPELINE = ("one_hot_labels", "label_map", "volume_dataset", "slice_dataset")

__all__ = ["BRATS_LABELS", "MODALITIES", "DataError", "Subject", "discover_subjects", *_PIPELINE]


def __getattr__(name: str):
    if name in _PIPELINE:
        return getattr(importlib.import_module("keras_advseg.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
