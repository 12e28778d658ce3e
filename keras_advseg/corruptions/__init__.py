"""MRI artifacts and operator errors: the unintentional half of robustness.

Pure NumPy/SciPy functions of a native scan (:func:`corrupt`), registered by name in
:data:`CORRUPTIONS` with five severities each in physical units (:func:`severity_table`).
``advseg evaluate --corruptions`` scores a model under them and ``advseg train --defense
artifacts`` trains with them. The registry is importable without SciPy (the CLI's help reads
it); the functions are imported on first use.
"""

from __future__ import annotations

import importlib

from keras_advseg.corruptions.registry import (
    CORRUPTIONS,
    parse_corruptions,
    parse_severities,
    severity_table,
)

_CORE = ("SEVERITIES", "check_modalities", "corrupt", "draws", "rigid")

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "check_modalities",
    "corrupt",
    "draws",
    "parse_corruptions",
    "parse_severities",
    "rigid",
    "severity_table",
]


def __getattr__(name: str):
    if name in _CORE:
        return getattr(importlib.import_module("keras_advseg.corruptions.core"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
