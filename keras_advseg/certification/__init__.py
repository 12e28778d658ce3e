"""Certified segmentation: voxels whose label provably cannot change within an l2 budget.

:func:`certify` (randomized smoothing, SegCertify for volumes), :func:`certified_dice`, and
:func:`smoothed_pgd_l2` (an attack on the smoothed model, to check a certificate). Imported on
first use: they start TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ABSTAIN": "keras_advseg.certification.smoothing",
    "Certificate": "keras_advseg.certification.smoothing",
    "binomial_p_values": "keras_advseg.certification.smoothing",
    "certified_dice": "keras_advseg.certification.smoothing",
    "certify": "keras_advseg.certification.smoothing",
    "rejected": "keras_advseg.certification.smoothing",
    "smoothed_pgd_l2": "keras_advseg.certification.attack",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
