"""Certifying a set of subjects at each sigma: the rows, their means and the metric names.

What ``advseg certify`` measures, as results (:class:`Certification`): every volume is
certified by one :class:`~keras_advseg.certification.SmoothedModel` per sigma, each subject
and sigma with its own noise stream, and scored against its reference labels. Writing the
rows and tracking them is the workflow's (:mod:`keras_advseg.workflows.certify`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from keras_advseg.certification.scores import certified_dice, region_certified_dice
from keras_advseg.certification.settings import CertifyConfig
from keras_advseg.certification.smoothing import SIGMA_UNIT, SmoothedModel
from keras_advseg.vocabulary import MODALITIES, REGION_LABELS, REGIONS

ROW_FIELDS = (
    ("subject", "sigma", "radius")
    + tuple(f"radius_raw_{m}" for m in MODALITIES)
    + ("linf",)
    + tuple(f"certified_dice_{r}" for r in REGIONS)
    + tuple(f"region_certified_dice_{r}" for r in REGIONS)
    + tuple(f"smoothed_dice_{r}" for r in REGIONS)
    + ("abstain_rate", "abstain_rate_brain")
    + tuple(f"abstain_rate_{r}" for r in REGIONS)
    + tuple(f"region_abstain_rate_brain_{r}" for r in REGIONS)
)
"""The columns of a certification's rows (``certified.csv``): sigma and the radius in the
model's input units (standardised), the radius in each sequence's raw intensity (blank when the
data are standardised per volume), the l-infinity budget, the class-wise and the region
certified Dice, the smoothed model's Dice, and the abstaining shares: of the volume, of the
brain, of each reference region's voxels (``abstain_rate_wt``...: the class-wise certificate's
abstentions inside the tumour, which with the smoothed Dice explain a low certified Dice; blank
where the reference has no such voxel), and the region certificates' share of the brain."""


@dataclass
class Certification:
    """Every subject certified at every sigma of :attr:`config`.

    Attributes:
        config: What was certified.
        smoothed_models: One per sigma, in :attr:`CertifyConfig.sigmas`'s order.
        rows: One per subject and sigma (:data:`ROW_FIELDS`), subject by subject.
        example: The first subject's ``{"subject", "image", "labels", "certificates":
            {sigma: certificate labels}}`` (for a figure), or None without subjects.
        input_std: Each sequence's raw-intensity standard deviation, or None.
    """

    config: CertifyConfig
    smoothed_models: list[SmoothedModel]
    rows: list[dict]
    example: dict | None
    input_std: tuple[float, ...] | None

    def settings(self) -> dict:
        """The test's settings, with the unit of sigma and the sequences' order."""
        config = self.config
        return {
            "n": config.n,
            "n0": config.n0,
            "tau": config.tau,
            "alpha": config.alpha,
            "correction": config.correction,
            "seed": config.seed,
            "sigma_unit": SIGMA_UNIT,
            "modalities": list(MODALITIES),
            "input_std": None if self.input_std is None else list(self.input_std),
        }

    def by_sigma(self) -> dict[str, dict]:
        """``{"0.25": {column: mean over the subjects}}`` (sigma as text)."""
        return {
            f"{s:g}": _means([r for r in self.rows if r["sigma"] == s]) for s in self.config.sigmas
        }


def smoothed_models(model, config: CertifyConfig, input_std=None) -> list[SmoothedModel]:
    """One :class:`SmoothedModel` per sigma of ``config`` (``input_std``: each sequence's
    raw-intensity standard deviation, to state the radius in raw intensity)."""
    std = None if input_std is None else tuple(float(v) for v in input_std)
    return [
        SmoothedModel(model, sigma=sigma, input_std=std, **config.smoothing())
        for sigma in config.sigmas
    ]


def certify_subjects(
    model,
    volumes: Iterable[tuple[str, np.ndarray, np.ndarray]],
    config: CertifyConfig,
    *,
    input_std=None,
    on_volume: Callable[[], object] | None = None,
) -> Certification:
    """Certifies each subject at each sigma of ``config`` and scores it against its labels.

    Subject ``i`` at the ``k``-th sigma draws its noise from seed
    ``config.seed * 1_000_003 + i * 1009 + k``.

    Args:
        model: Logits model.
        volumes: ``(subject, image (X, Y, Z, C), labels (X, Y, Z))`` in the models' input
            units, in order (read one at a time).
        config: Sigmas and the test's settings (``config.subjects`` is the caller's choice of
            ``volumes``).
        input_std: Each sequence's raw-intensity standard deviation (None: unknown).
        on_volume: Called after each volume and sigma (progress).

    Returns:
        The :class:`Certification`.

    Raises:
        InputError: a bad setting or input shape.
    """
    std = None if input_std is None else tuple(float(v) for v in input_std)
    models = smoothed_models(model, config, std)
    rows, example = [], None
    for index, (subject, image, labels) in enumerate(volumes):
        brain = np.any(image != 0, axis=-1)
        for k, smoothed_model in enumerate(models):
            certificate = smoothed_model.certify(
                image, seed=config.seed * 1_000_003 + index * 1009 + k
            )
            rows.append(row(subject, labels, brain, certificate))
            if index == 0:
                example = example or {
                    "subject": subject,
                    "image": image,
                    "labels": labels,
                    "certificates": {},
                }
                example["certificates"][smoothed_model.sigma] = certificate.labels
            if on_volume is not None:
                on_volume()
    return Certification(config, models, rows, example, std)


def row(subject: str, labels: np.ndarray, brain: np.ndarray, certificate) -> dict:
    """One row of :data:`ROW_FIELDS`: a subject's certificate at one sigma, scored against its
    reference ``labels`` (``brain``: the voxels inside the brain, for the abstaining shares)."""
    from keras_advseg.metrics import brats_dice

    certified = certified_dice(labels, certificate.labels)
    regions = region_certified_dice(labels, certificate.regions)
    smoothed = brats_dice(labels, certificate.smoothed)
    raw = certificate.radius_raw or ("",) * len(MODALITIES)
    return {
        "subject": subject,
        "sigma": certificate.sigma,
        "radius": certificate.radius,
        **{f"radius_raw_{m}": value for m, value in zip(MODALITIES, raw)},
        "linf": certificate.linf,
        **{f"certified_dice_{r}": certified[r] for r in REGIONS},
        **{f"region_certified_dice_{r}": regions[r] for r in REGIONS},
        **{f"smoothed_dice_{r}": float(smoothed[r]) for r in REGIONS},
        "abstain_rate": certificate.abstain_rate(),
        "abstain_rate_brain": certificate.abstain_rate(brain),
        **{
            f"abstain_rate_{r}": (
                certificate.abstain_rate(inside)
                if (inside := np.isin(labels, REGION_LABELS[r])).any()
                else ""
            )
            for r in REGIONS
        },
        **{
            f"region_abstain_rate_brain_{r}": certificate.region_abstain_rate(r, brain)
            for r in REGIONS
        },
    }


def _means(rows: list[dict]) -> dict:
    """The mean of each numeric column over ``rows`` (a column left blank, as the raw radius
    without the training split's statistics, stays None)."""
    keys = [k for k in ROW_FIELDS if k not in ("subject", "sigma")]
    if not rows:
        return {}
    means = {}
    for k in keys:
        values = [r[k] for r in rows if r[k] != ""]
        means[k] = float(np.mean(values)) if values else None
    return means


def metric_names(by_sigma: dict) -> dict[str, float]:
    """``certified_dice_wt_sigma0.25``, ``region_certified_dice_wt_sigma0.25``,
    ``smoothed_dice_wt_sigma0.25``, ``abstain_rate_sigma0.25``,
    ``region_abstain_rate_wt_sigma0.25``, ``certified_radius_sigma0.25``,
    ``certified_linf_sigma0.25``; sigma and the radius in the model's input units."""
    flat = {}
    for sigma, means in by_sigma.items():
        for r in REGIONS:
            flat[f"certified_dice_{r}_sigma{sigma}"] = means[f"certified_dice_{r}"]
            flat[f"region_certified_dice_{r}_sigma{sigma}"] = means[f"region_certified_dice_{r}"]
            flat[f"smoothed_dice_{r}_sigma{sigma}"] = means[f"smoothed_dice_{r}"]
            flat[f"region_abstain_rate_{r}_sigma{sigma}"] = means[f"region_abstain_rate_brain_{r}"]
        flat[f"abstain_rate_sigma{sigma}"] = means["abstain_rate_brain"]
        flat[f"certified_radius_sigma{sigma}"] = means["radius"]
        flat[f"certified_linf_sigma{sigma}"] = means["linf"]
    return flat
