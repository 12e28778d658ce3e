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

from keras_advseg._lazy import by_module, lazy_exports

_EXPORTS = by_module(
    {
        "scores": ("ABSTAIN", "READINGS", "certified_dice", "lift", "region_certified_dice"),
        "smoothing": (
            "SIGMA_UNIT",
            "Certificate",
            "SmoothedModel",
            "binomial_p_values",
            "certify",
            "region_certificates",
            "rejected",
        ),
        "subjects": ("Certification", "certify_subjects"),
        "settings": ("CertifyConfig",),
        "attack": ("smoothed_pgd_l2",),
    }
)

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
