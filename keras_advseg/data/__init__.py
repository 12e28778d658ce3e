"""Data layer: dataset discovery, loading, preprocessing, pipelines and the phantom."""

from keras_advseg.data.errors import DataError
from keras_advseg.data.layouts import discover_subjects
from keras_advseg.data.subject import BRATS_LABELS, MODALITIES, Subject

__all__ = ["BRATS_LABELS", "MODALITIES", "DataError", "Subject", "discover_subjects"]
