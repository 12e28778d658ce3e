"""The certification workflow (``advseg certify``): certify each subject at each sigma, write, track.

Runs on the prepared test volumes (model space, where the certificate's radius is measured);
the certifying is :func:`keras_advseg.certification.certify_subjects`'s, this module writes
``certified.csv``, ``certify_summary.json`` and the figures, and tracks them in an MLflow run
nested under the model's training run, as an evaluation's is.
"""

from __future__ import annotations

from pathlib import Path

from keras_advseg.certification.settings import CertifyConfig
from keras_advseg.io import rows_to_csv
from keras_advseg.vocabulary import MODALITIES, REGIONS


def run_certification(
    model_ref: str,
    data,
    out,
    config: CertifyConfig | None = None,
    *,
    split: str = "test",
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    progress: bool | None = None,
    **settings,
) -> dict:
    """Certifies a model on every subject of ``split`` at each sigma; writes and tracks.

    Args:
        model_ref: A ``.keras`` file, MLflow run id or ``runs:/`` URI.
        data: Prepared cache or raw dataset.
        out: Output folder.
        config: What to certify (:class:`~keras_advseg.certification.CertifyConfig`: sigmas
            in the model's input units, the test's settings, the seed, the first N subjects).
        split: Subjects.
        tracking_uri, experiment, run_name: MLflow.
        progress: Show progress (None: on a terminal).
        settings: Instead of ``config``, its fields (``sigmas=(0.25,), n=100``...).

    Returns:
        The summary written to ``certify_summary.json``.

    Raises:
        InputError / DataError: bad references, data or settings. TrackingError: the store.
    """
    from tqdm.auto import tqdm

    from keras_advseg.certification.subjects import ROW_FIELDS, certify_subjects, metric_names
    from keras_advseg.evaluation import figures
    from keras_advseg.workflows.evaluate import evaluated_ids, model_name, open_model_and_data
    from keras_advseg.workflows.frame import ready, scored_run, summary_head

    if config is not None and settings:
        raise TypeError(f"pass config or its fields, not both. Received: {sorted(settings)}")
    config = config if config is not None else CertifyConfig(**settings)
    out = ready(out, tracking_uri, {"model": model_ref, "data": data})
    model, _, prepared, source, parent = open_model_and_data(
        model_ref, data, out, tracking_uri, split=split
    )
    ids = config.chosen(evaluated_ids(prepared, split))
    # the radius in raw intensity needs the training split's statistics (one std per sequence)
    std = prepared.std if prepared.config.normalization == "global" else None
    tags = {"evaluation": "true", "certification": "true", **parent}
    params = {
        "model": str(model_ref),
        "split": split,
        "data_hash": prepared.data_hash,
        "n_subjects": len(ids),
        "sigmas": ",".join(f"{s:g}" for s in config.sigmas),
        "sigma_unit": "standardised",
        "n": config.n,
        "n0": config.n0,
        "tau": config.tau,
        "alpha": config.alpha,
        "correction": config.correction,
        "batch_size": "auto" if config.batch_size is None else config.batch_size,
        "seed": config.seed,
    }
    with scored_run(
        tracking_uri, experiment, run_name=run_name or "certify", tags=tags, params=params
    ) as run:
        bar = tqdm(
            total=len(ids) * len(config.sigmas),
            desc="certify",
            unit="volume",
            disable=None if progress is None else not progress,
        )
        with bar:
            result = certify_subjects(
                model,
                ((subject, *prepared.load(subject)) for subject in ids),
                config,
                input_std=std,
                on_volume=bar.update,
            )
        summary = {
            **summary_head(model_ref, source, run, split),
            "data_hash": prepared.data_hash,
            "n_subjects": len(ids),
            "settings": result.settings(),
            "smoothed_models": {f"{m.sigma:g}": m.settings() for m in result.smoothed_models},
            "sigmas": result.by_sigma(),
        }
        run.write_text(out / "certified.csv", rows_to_csv(result.rows, ROW_FIELDS))
        run.write_json(out / "certify_summary.json", summary)
        name = model_name(model_ref, tags)
        run.keep(figures.certified_figure(summary["sigmas"], out / "fig_certified.png", model=name))
        if result.example is not None:
            run.keep(
                figures.certificate_slices(result.example, out / "fig_certificate.png", model=name)
            )
        run.log_metrics(metric_names(summary["sigmas"]))
    return summary


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
