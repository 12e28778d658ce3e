"""Certified segmentation: voxels whose label provably cannot change within an l2 budget.

:class:`SmoothedModel` (a network smoothed by Gaussian noise of a fixed sigma, in the model's
input units) and :func:`certify` (randomized smoothing, SegCertify for volumes, with a
certificate per BraTS region), :func:`certified_dice` and :func:`region_certified_dice`, and
:func:`smoothed_pgd_l2` (an attack on the smoothed model, to check a certificate). Imported on
first use: they start TensorFlow.
"""

from __future__ import annotations

import importlib

_SMOOTHING = "keras_advseg.certification.smoothing"
_EXPORTS = {
    "ABSTAIN": _SMOOTHING,
    "READINGS": _SMOOTHING,
    "SIGMA_UNIT": _SMOOTHING,
    "Certificate": _SMOOTHING,
    "SmoothedModel": _SMOOTHING,
    "binomial_p_values": _SMOOTHING,
    "certified_dice": _SMOOTHING,
    "certify": _SMOOTHING,
    "lift": _SMOOTHING,
    "region_certificates": _SMOOTHING,
    "region_certified_dice": _SMOOTHING,
    "rejected": _SMOOTHING,
    "smoothed_pgd_l2": "keras_advseg.certification.attack",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
