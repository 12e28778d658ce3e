"""The certification workflow (``advseg certify``): certify each subject at each sigma, write, track.

Runs on the prepared test volumes (model space, where the certificate's radius is measured);
the MLflow run nests under the model's training run, as an evaluation's does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_advseg.config import REGION_LABELS, REGIONS
from keras_advseg.data.subject import MODALITIES
from keras_advseg.io import ensure_writable_folder, rows_to_csv, write_text_atomic

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
"""The columns of ``certified.csv``: sigma and the radius in the model's input units
(standardised), the radius in each sequence's raw intensity (blank when the data are
standardised per volume), the l-infinity budget, the class-wise and the region certified Dice,
the smoothed model's Dice, and the abstaining shares: of the volume, of the brain, of each
reference region's voxels (``abstain_rate_wt``...: the class-wise certificate's abstentions
inside the tumour, which with the smoothed Dice explain a low certified Dice; blank where the
reference has no such voxel), and the region certificates' share of the brain."""


def run_certification(
    model_ref: str,
    data,
    out,
    *,
    sigmas: tuple[float, ...],
    n: int = 100,
    n0: int = 10,
    tau: float = 0.75,
    alpha: float = 0.001,
    correction: str = "holm",
    batch_size: int = 8,
    seed: int = 0,
    split: str = "test",
    subjects: int = 0,
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Certifies a model on every subject of ``split`` at each sigma; writes and tracks.

    Args:
        model_ref: A ``.keras`` file, MLflow run id or ``runs:/`` URI.
        data: Prepared cache or raw dataset.
        out: Output folder.
        sigmas: Noise levels in the model's input units (standardised intensities: multiples
            of each sequence's tissue standard deviation), the same for every volume.
        n, n0, tau, alpha, correction, batch_size: :func:`~keras_advseg.certification.certify`.
        seed: Seed of the noise (each subject and sigma its own stream).
        split: Subjects.
        subjects: The first N subjects (0: all).
        tracking_uri, experiment, run_name: MLflow.
        progress: Show progress (None: on a terminal).

    Returns:
        The summary written to ``certify_summary.json``.

    Raises:
        InputError / DataError: bad references, data or settings. TrackingError: the store.
    """
    from tqdm.auto import tqdm

    import mlflow
    from keras_advseg.certification.smoothing import (
        SIGMA_UNIT,
        SmoothedModel,
        check_settings,
    )
    from keras_advseg.evaluation import figures
    from keras_advseg.tracking import check_reachable, tracked_run
    from keras_advseg.workflows.evaluate import evaluated_ids, model_name, open_model_and_data

    for sigma in sigmas:
        check_settings(sigma, n, n0, tau, alpha, batch_size)
    out = ensure_writable_folder(out)
    check_reachable(tracking_uri)
    model, _, prepared, source, lineage = open_model_and_data(
        model_ref, data, out, tracking_uri, split=split
    )
    ids = evaluated_ids(prepared, split)
    ids = ids[:subjects] if subjects else ids
    # the radius in raw intensity needs the training split's statistics (one std per sequence)
    std = prepared.std if prepared.config.normalization == "global" else None
    smoothed_models = [
        SmoothedModel(
            model,
            sigma=sigma,
            n=n,
            n0=n0,
            tau=tau,
            alpha=alpha,
            correction=correction,
            batch_size=batch_size,
            input_std=None if std is None else tuple(float(v) for v in std),
        )
        for sigma in sigmas
    ]
    tags = {"evaluation": "true", "certification": "true", **lineage}
    rows, example = [], None
    with tracked_run(tracking_uri, experiment, run_name=run_name or "certify", tags=tags) as run:
        mlflow.log_params(
            {
                "model": str(model_ref),
                "split": split,
                "data_hash": prepared.data_hash,
                "n_subjects": len(ids),
                "sigmas": ",".join(f"{s:g}" for s in sigmas),
                "sigma_unit": "standardised",
                "n": n,
                "n0": n0,
                "tau": tau,
                "alpha": alpha,
                "correction": correction,
                "batch_size": batch_size,
                "seed": seed,
            }
        )
        bar = tqdm(
            total=len(ids) * len(sigmas),
            desc="certify",
            unit="volume",
            disable=None if progress is None else not progress,
        )
        with bar:
            for index, subject in enumerate(ids):
                image, labels = prepared.load(subject)
                brain = np.any(image != 0, axis=-1)
                for k, smoothed_model in enumerate(smoothed_models):
                    sigma = smoothed_model.sigma
                    certificate = smoothed_model.certify(
                        image, seed=seed * 1_000_003 + index * 1009 + k
                    )
                    rows.append(row(subject, labels, brain, certificate))
                    if index == 0:
                        example = example or {
                            "subject": subject,
                            "image": image,
                            "labels": labels,
                            "certificates": {},
                        }
                        example["certificates"][sigma] = certificate.labels
                    bar.update()
        summary = {
            "model": str(model_ref),
            "source_run_id": source,
            "evaluation_run_id": run.info.run_id,
            "split": split,
            "data_hash": prepared.data_hash,
            "n_subjects": len(ids),
            "settings": {
                "n": n,
                "n0": n0,
                "tau": tau,
                "alpha": alpha,
                "correction": correction,
                "seed": seed,
                "sigma_unit": SIGMA_UNIT,
                "modalities": list(MODALITIES),
                "input_std": None if std is None else [float(v) for v in std],
            },
            "smoothed_models": {f"{m.sigma:g}": m.settings() for m in smoothed_models},
            "sigmas": {f"{s:g}": _means([r for r in rows if r["sigma"] == s]) for s in sigmas},
        }
        written = [
            write_text_atomic(out / "certified.csv", rows_to_csv(rows, ROW_FIELDS)),
            write_text_atomic(out / "certify_summary.json", json.dumps(summary, indent=2)),
        ]
        name = model_name(model_ref, tags)
        written.append(
            figures.certified_figure(summary["sigmas"], out / "fig_certified.png", model=name)
        )
        if example is not None:
            written.append(
                figures.certificate_slices(example, out / "fig_certificate.png", model=name)
            )
        mlflow.log_metrics(metric_names(summary["sigmas"]))
        for path in written:
            mlflow.log_artifact(str(path))
    return summary


def row(subject: str, labels: np.ndarray, brain: np.ndarray, certificate) -> dict:
    """One row of ``certified.csv``: a subject's certificate at one sigma, scored against its
    reference ``labels`` (``brain``: the voxels inside the brain, for the abstaining shares)."""
    from keras_advseg.certification.smoothing import certified_dice, region_certified_dice
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


def summary_lines(summary: dict, out) -> list[str]:
    """What ``advseg certify`` prints: per sigma, the class-wise and the region certified Dice,
    the smoothed Dice, the abstain rate and the radius (in standardised units and in each
    sequence's raw intensity) with the l-infinity budget it covers."""
    lines = []
    for sigma, m in summary["sigmas"].items():
        certified = ", ".join(f"{r.upper()} {m[f'certified_dice_{r}']:.3f}" for r in REGIONS)
        regions = ", ".join(f"{r.upper()} {m[f'region_certified_dice_{r}']:.3f}" for r in REGIONS)
        smoothed = ", ".join(f"{r.upper()} {m[f'smoothed_dice_{r}']:.3f}" for r in REGIONS)
        raw = [(k, m.get(f"radius_raw_{k}")) for k in MODALITIES]
        raw_text = (
            "; raw intensity " + ", ".join(f"{k} {v:.3g}" for k, v in raw)
            if all(v is not None for _, v in raw)
            else ""
        )
        lines.append(
            f"sigma {sigma}: certified Dice {certified}, per region {regions} (smoothed "
            f"{smoothed}); abstains on {m['abstain_rate_brain']:.1%} of the brain; l2 radius "
            f"{m['radius']:.3g} standardised units{raw_text} (covers l-inf {m['linf']:.2g})"
        )
    lines.append(f"wrote {Path(out) / 'certified.csv'} and {Path(out) / 'certify_summary.json'}")
    return lines


def read_certified(path) -> dict[float, dict[str, dict[str, float]]]:
    """``certified.csv`` read back (untrusted input): ``{sigma: {subject: {"dice_wt": certified
    Dice, ..., "abstain_rate_brain": ...}}}``.

    Raises:
        FileFormatError: a missing column, a non-number or a Dice outside [0, 1].
    """
    import csv
    import math

    from keras_advseg.io import FileFormatError, csv_original

    found: dict = {}
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                sigma = float(row["sigma"])
                values = {}
                for r in REGIONS:
                    value = float(row[f"certified_dice_{r}"])
                    if not (math.isfinite(value) and 0 <= value <= 1):
                        raise ValueError(f"certified_dice_{r} {value} outside [0, 1]")
                    values[f"dice_{r}"] = value
                values["abstain_rate_brain"] = float(row["abstain_rate_brain"])
                if not (math.isfinite(sigma) and sigma > 0):
                    raise ValueError(f"sigma {sigma}")
                found.setdefault(round(sigma, 6), {})[csv_original(row["subject"])] = values
    except (OSError, KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise FileFormatError(
            f"{path}: malformed certification table ({type(exc).__name__}: {exc})"
        ) from None
    return found
