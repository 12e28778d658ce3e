"""MRI artifacts and operator errors: the unintentional half of robustness.

Pure NumPy/SciPy functions of a native scan (:func:`corrupt`), registered by name in
:data:`CORRUPTIONS` with five severities each in physical units (:func:`severity_table`).
``advseg corruptions`` scores a model under them and ``advseg train --defense corruptions``
trains with them. The registry is importable without SciPy (the CLI's help reads
it); the functions are imported on first use.
"""

from __future__ import annotations

from keras_advseg._lazy import lazy_exports
from keras_advseg.corruptions.registry import (
    CORRUPTIONS,
    parse_corruptions,
    parse_severities,
    severity_table,
)

_CORE = ("SEVERITIES", "check_modalities", "corrupt", "draws", "rigid")
"""Defined in :mod:`keras_advseg.corruptions.core` (it imports SciPy)."""

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


__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(_CORE, "core"))
