"""How a certificate is scored: Dice of the certified labels and of each region's certificate.

An abstaining voxel is :data:`ABSTAIN`; :data:`READINGS` says how a Dice counts it. No TensorFlow:
the certificates come from :mod:`keras_advseg.certification.smoothing`.
"""

from __future__ import annotations

import numpy as np

from keras_advseg.errors import InputError
from keras_advseg.vocabulary import REGION_LABELS, REGIONS

ABSTAIN = 255
"""The label of a voxel the certificate abstains on (BraTS labels are 0, 1, 2, 4)."""

READINGS = ("segcertify", "worst")
"""How a certified Dice counts an abstaining voxel: ``"segcertify"``, a miss inside the
reference and outside every predicted region (SegCertify's confusion matrix); ``"worst"``, wrong
on whichever side the reference is (a miss inside it, a false alarm outside it)."""


def lift(certificate_labels: np.ndarray) -> dict[str, np.ndarray]:
    """The class-wise certificate's decision on each region: 1 where its certified label is one
    of the region's, 0 where it is another, :data:`ABSTAIN` where it abstains (the form of
    :attr:`Certificate.regions`)."""
    labels = np.asarray(certificate_labels)
    return {
        r: np.where(labels == ABSTAIN, ABSTAIN, np.isin(labels, REGION_LABELS[r])).astype(np.uint8)
        for r in REGIONS
    }


def region_certified_dice(
    labels: np.ndarray, regions: dict[str, np.ndarray], reading: str = "segcertify"
) -> dict[str, float]:
    """Dice of each region's certificate (1 inside, 0 outside, :data:`ABSTAIN`) against the
    reference BraTS labels.

    Args:
        labels: ``(X, Y, Z)`` reference BraTS labels.
        regions: ``{"wt", "tc", "et"}`` -> certificate, as :attr:`Certificate.regions` or
            :func:`lift`.
        reading: How an abstention counts (:data:`READINGS`): ``"segcertify"`` a miss inside
            the reference and never inside the predicted region; ``"worst"`` also a false alarm
            outside the reference (the Dice any input within the radius keeps). Both reference
            and prediction empty score 1.

    Returns:
        ``{"wt", "tc", "et"}`` -> Dice.

    Raises:
        InputError: an unknown reading or a shape that differs from ``labels``.
    """
    if reading not in READINGS:
        raise InputError(f"reading must be one of {READINGS}. Received: reading={reading!r}")
    labels = np.asarray(labels)
    dice = {}
    for r in REGIONS:
        decided = np.asarray(regions[r])
        if decided.shape != labels.shape:
            raise InputError(
                f"regions[{r!r}] must have the labels' shape {labels.shape}. Received: "
                f"shape {decided.shape}"
            )
        truth = np.isin(labels, REGION_LABELS[r])
        abstain = decided == ABSTAIN
        tp = np.sum(truth & (decided == 1))
        fn = np.sum(truth & (decided != 1))
        fp = np.sum(~truth & (decided == 1))
        if reading == "worst":
            fp += np.sum(~truth & abstain)
        total = 2 * tp + fp + fn
        dice[r] = float(2 * tp / total) if total else 1.0
    return dice


def certified_dice(labels: np.ndarray, certificate_labels: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET of a class-wise certified label map, an abstaining voxel counting as
    wrong (as SegCertify counts it): a voxel of the region that abstains is a miss, and no
    abstaining voxel is ever in a predicted region."""
    from keras_advseg.metrics import brats_dice

    predicted = np.where(certificate_labels == ABSTAIN, 0, certificate_labels).astype(np.uint8)
    dice = brats_dice(labels, predicted)
    return {region: float(value) for region, value in dice.items()}
