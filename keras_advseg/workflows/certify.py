"""The certification workflow (``advseg certify``): certify each subject at each sigma, write, track.

Runs on the prepared test volumes (model space, where the certificate's radius is measured);
the MLflow run nests under the model's training run, as an evaluation's does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.io import ensure_writable_folder, rows_to_csv, write_text_atomic

ROW_FIELDS = (
    ("subject", "sigma", "radius", "radius_abs", "linf")
    + tuple(f"certified_dice_{r}" for r in REGIONS)
    + tuple(f"smoothed_dice_{r}" for r in REGIONS)
    + ("abstain_rate", "abstain_rate_brain")
)


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
        sigmas: Noise levels, relative to each volume's intensity range.
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
        certified_dice,
        certify,
        check_settings,
    )
    from keras_advseg.evaluation import figures
    from keras_advseg.metrics import brats_dice
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
                for k, sigma in enumerate(sigmas):
                    certificate = certify(
                        model,
                        image,
                        sigma=sigma,
                        n=n,
                        n0=n0,
                        tau=tau,
                        alpha=alpha,
                        correction=correction,
                        batch_size=batch_size,
                        seed=seed * 1_000_003 + index * 1009 + k,
                    )
                    certified = certified_dice(labels, certificate.labels)
                    smoothed = brats_dice(labels, certificate.smoothed)
                    rows.append(
                        {
                            "subject": subject,
                            "sigma": sigma,
                            "radius": certificate.radius,
                            "radius_abs": certificate.radius_abs,
                            "linf": certificate.linf,
                            **{f"certified_dice_{r}": certified[r] for r in REGIONS},
                            **{f"smoothed_dice_{r}": float(smoothed[r]) for r in REGIONS},
                            "abstain_rate": certificate.abstain_rate(),
                            "abstain_rate_brain": certificate.abstain_rate(brain),
                        }
                    )
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
            },
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


def _means(rows: list[dict]) -> dict:
    keys = [k for k in ROW_FIELDS if k not in ("subject", "sigma")]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}


def metric_names(by_sigma: dict) -> dict[str, float]:
    """``certified_dice_wt_sigma0.25``, ``smoothed_dice_wt_sigma0.25``,
    ``abstain_rate_sigma0.25``, ``certified_radius_sigma0.25``, ``certified_linf_sigma0.25``."""
    flat = {}
    for sigma, means in by_sigma.items():
        for r in REGIONS:
            flat[f"certified_dice_{r}_sigma{sigma}"] = means[f"certified_dice_{r}"]
            flat[f"smoothed_dice_{r}_sigma{sigma}"] = means[f"smoothed_dice_{r}"]
        flat[f"abstain_rate_sigma{sigma}"] = means["abstain_rate_brain"]
        flat[f"certified_radius_sigma{sigma}"] = means["radius"]
        flat[f"certified_linf_sigma{sigma}"] = means["linf"]
    return flat


def summary_lines(summary: dict, out) -> list[str]:
    """What ``advseg certify`` prints: per sigma, the certified and smoothed Dice, the abstain
    rate and the radius with the l-infinity budget it covers."""
    lines = []
    for sigma, m in summary["sigmas"].items():
        certified = ", ".join(f"{r.upper()} {m[f'certified_dice_{r}']:.3f}" for r in REGIONS)
        smoothed = ", ".join(f"{r.upper()} {m[f'smoothed_dice_{r}']:.3f}" for r in REGIONS)
        lines.append(
            f"sigma {sigma}: certified Dice {certified} (smoothed {smoothed}); abstains on "
            f"{m['abstain_rate_brain']:.1%} of the brain; l2 radius {m['radius']:.3g} of the "
            f"intensity range (covers l-inf {m['linf']:.2g})"
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
