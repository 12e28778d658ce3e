"""Certified segmentation: voxels whose label provably cannot change within an l2 budget.

:class:`SmoothedModel` (a network smoothed by Gaussian noise of a fixed sigma, in the model's
input units) and :func:`certify` (randomized smoothing, SegCertify for volumes, with a
certificate per BraTS region), :func:`certified_dice` and :func:`region_certified_dice`, and
:func:`smoothed_pgd_l2` (an attack on the smoothed model, to check a certificate);
:func:`certify_subjects` certifies a set of subjects at each sigma of a :class:`CertifyConfig`
(what ``advseg certify`` runs) into a :class:`Certification`. Imported on first use: all but
:class:`CertifyConfig` start TensorFlow.
"""

from __future__ import annotations

from keras_advseg._lazy import lazy_exports

_EXPORTS = {
    "ABSTAIN": "scores",
    "READINGS": "scores",
    "SIGMA_UNIT": "smoothing",
    "Certificate": "smoothing",
    "Certification": "subjects",
    "CertifyConfig": "settings",
    "SmoothedModel": "smoothing",
    "binomial_p_values": "smoothing",
    "certified_dice": "scores",
    "certify": "smoothing",
    "certify_subjects": "subjects",
    "lift": "scores",
    "region_certificates": "smoothing",
    "region_certified_dice": "scores",
    "rejected": "smoothing",
    "smoothed_pgd_l2": "attack",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
