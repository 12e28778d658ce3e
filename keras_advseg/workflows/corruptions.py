"""The corruption benchmark (``advseg evaluate --corruptions``): corrupt, prepare, score, write, track.

The scans are the raw test scans of the dataset the model is evaluated on, corrupted in
their own space and passed through the model's stored preprocessing; the MLflow run nests
under the model's training run, as an attack evaluation's does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.errors import InputError


def model_preprocessing(model_path, prepared):
    """The preprocessing stored in the model's file, or (a model saved without it) the
    prepared cache's."""
    from keras_advseg.export import load_preprocessing
    from keras_advseg.inference import Preprocessing

    try:
        return load_preprocessing(model_path)
    except InputError:
        return Preprocessing.from_prepared(prepared)


def run_corruption_evaluation(
    model_ref: str,
    data,
    out,
    *,
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    seed: int = 0,
    split: str = "test",
    native: bool = False,
    reference_ref: str | None = None,
    modalities=None,
    cache=None,
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    progress: bool | None = None,
    workers: int = 1,
) -> dict:
    """Scores a model (and a reference) under every corruption and severity; writes and tracks.

    Args:
        model_ref: A ``.keras`` file, MLflow run id or ``runs:/`` URI.
        data: The raw dataset (or a prepared cache that records it).
        out: Output folder.
        corruptions, severities: What to run (the clean scans always are).
        seed: Seed of the corruptions' draws.
        split: Subjects.
        native: Also score Dice and HD95 on each scan's own grid.
        reference_ref: A reference model for the corruption error (mCE).
        modalities: Sequences the corruptions may touch (None: all).
        cache: Folder of prepared corrupted scans shared between runs [``out/corrupted``].
        tracking_uri, experiment, run_name: MLflow.
        progress: Show progress (None: on a terminal).
        workers: Processes that prepare the corrupted scans.

    Returns:
        The summary written to ``corruption_summary.json``.

    Raises:
        InputError / DataError: bad references, data or options. TrackingError: the store.
    """
    from keras_advseg.data.corrupted import CorruptedScans
    from keras_advseg.evaluation import figures
    from keras_advseg.evaluation.corrupted import (
        corruption_scores,
        corruption_tests,
        evaluate_corruptions,
        mean_dice,
        metric_names,
        tests_csv,
    )
    from keras_advseg.tracking import resolve_model_path
    from keras_advseg.workflows.evaluate import (
        evaluated_ids,
        model_name,
        open_model_and_data,
        raw_subjects,
    )
    from keras_advseg.workflows.frame import ready, scored_run, summary_head

    out = ready(out, tracking_uri, {"model": model_ref, "data": data, "reference": reference_ref})
    model, reference, prepared, source, parent = open_model_and_data(
        model_ref, data, out, tracking_uri, other_ref=reference_ref, split=split
    )
    preprocessing = model_preprocessing(resolve_model_path(model_ref, tracking_uri), prepared)
    models = {"model": (model, preprocessing)}
    if reference is not None:
        reference_pre = model_preprocessing(
            resolve_model_path(reference_ref, tracking_uri), prepared
        )
        models["reference"] = (reference, reference_pre)
    ids = evaluated_ids(prepared, split)
    subjects = raw_subjects(prepared, ids, "corrupted scans")
    scans = CorruptedScans(
        preprocessing,
        seed=seed,
        modalities=modalities,
        cache=Path(cache) if cache is not None else out / "corrupted",
    )
    tags = {"evaluation": "true", "corruptions": ",".join(corruptions), **parent}
    params = {
        "model": str(model_ref),
        "split": split,
        "data_hash": prepared.data_hash,
        "n_subjects": len(ids),
        "corruptions": ",".join(corruptions),
        "severities": ",".join(map(str, severities)),
        "corruption_seed": seed,
        "modalities": ",".join(modalities) if modalities else "all",
        "reference": str(reference_ref),
    }
    with scored_run(
        tracking_uri,
        experiment,
        run_name=run_name or "eval-corruptions",
        tags=tags,
        params=params,
    ) as run:
        if workers > 1:
            scans.prepare(
                [
                    (s, c, v)
                    for s in subjects
                    for c, v in [("none", 0)] + [(c, v) for c in corruptions for v in severities]
                ],
                workers=workers,
                progress=progress,
            )
        results = evaluate_corruptions(
            models, subjects, scans, corruptions, severities, native=native, progress=progress
        )
        rows = results["model"].rows
        reference_rows = results["reference"].rows if "reference" in results else None
        scores = corruption_scores(rows, reference_rows)
        tests = corruption_tests(rows)
        means = mean_dice(rows)
        summary = {
            **summary_head(model_ref, source, run, split),
            "data_hash": prepared.data_hash,
            "data": str(prepared.source) if prepared.source else None,
            "n_subjects": len(ids),
            "corruptions": list(corruptions),
            "severities": list(severities),
            "seed": seed,
            "modalities": list(modalities) if modalities else None,
            "reference": str(reference_ref) if reference_ref else None,
            "scores": _json_keys(scores),
            # each subject's Dice averaged over its corrupted scans, then over subjects (every
            # subject has the same scans, so this is the mean of the corrupted conditions)
            "corrupted_dice": {
                r: float(np.mean([v[r] for (_, level), v in means.items() if level > 0]))
                for r in REGIONS
            },
            "significant": sum(t["significant"] for t in tests),
            "tests": len(tests),
        }
        if reference_rows:
            summary["reference_scores"] = _json_keys(corruption_scores(reference_rows))
        run.write_text(out / "corruptions.csv", results["model"].rows_csv())
        if reference_rows:
            run.write_text(out / "corruptions_reference.csv", results["reference"].rows_csv())
        run.write_text(out / "corruption_tests.csv", tests_csv(tests))
        name = model_name(model_ref, tags)
        curves: dict = {}
        for (corruption, severity), by_region in means.items():
            if corruption != "none":
                curves.setdefault(corruption, {})[severity] = by_region
        run.keep(
            figures.corruption_severity_figure(
                curves, out / "fig_corruption_severity.png", model=name, clean=means[("none", 0)]
            )
        )
        example = results["model"].example
        if example is not None:
            run.keep(
                figures.corruption_grid_figure(
                    example,
                    out / "fig_corruption_grid.png",
                    corruptions,
                    [s for s in (1, 3, 5) if s in severities] or list(severities)[:3],
                    model=name,
                )
            )
        run.write_json(out / "corruption_summary.json", summary, default=float)
        run.log_metrics(metric_names(rows, scores))
    return summary


def _json_keys(value):
    """Severity keys as text (JSON object keys)."""
    if isinstance(value, dict):
        return {str(k): _json_keys(v) for k, v in value.items()}
    return value


def low_clean_dice_warning(clean: dict) -> list[str]:
    """A warning line when a region's clean Dice is below
    :data:`~keras_advseg.config.MIN_CLEAN_DICE` (the model does not segment it: what follows
    measures no robustness there); no line otherwise.

    Args:
        clean: ``{region: clean mean Dice}``.
    """
    from keras_advseg.config import MIN_CLEAN_DICE

    missed = [r for r in REGIONS if clean.get(r) is not None and clean[r] < MIN_CLEAN_DICE]
    if not missed:
        return []
    return [
        f"WARNING: clean Dice below {MIN_CLEAN_DICE:g} in {', '.join(r.upper() for r in missed)}: "
        "the model does not segment it, so the scores below measure no robustness there"
    ]


def summary_lines(summary: dict, out) -> list[str]:
    """What ``advseg evaluate --corruptions`` prints: clean Dice, the ROOD-MRI scores per region,
    the worst corruption, and what was written."""
    scores = summary["scores"]

    def per_region(key, fmt="{:.3f}"):
        values = scores[key]
        return ", ".join(
            f"{r.upper()} {fmt.format(values[r]) if values[r] is not None else 'n/a'}"
            for r in REGIONS
        )

    lines = [f"clean Dice {per_region('clean')}"]
    lines += low_clean_dice_warning(scores["clean"])
    if summary.get("corrupted_dice"):
        corrupted = summary["corrupted_dice"]
        lines.append(
            "mean Dice of the corrupted scans "
            + ", ".join(f"{r.upper()} {corrupted[r]:.3f}" for r in REGIONS)
        )
    from keras_advseg.corruptions.registry import every_severity

    if every_severity(summary.get("severities")):
        lines += [
            f"overall (ROOD-MRI, alpha 2/3) {per_region('overall')}",
            f"degradation (ROOD-MRI) {per_region('degradation')}",
        ]
    else:
        lines.append(
            "ROOD-MRI's overall and degradation are in corruption_summary.json: defined over "
            "severities 1-5, they are mostly the clean Dice with "
            + ", ".join(map(str, summary.get("severities", ())))
        )
    lines.append(f"resilience rate mRR (Robo3D) {per_region('mrr')}")
    if summary.get("reference"):
        lines.append(f"corruption error mCE vs {summary['reference']}: {per_region('mce')}")
    lines.append(
        "worst corruption: " + ", ".join(f"{r.upper()} {scores['worst'][r]}" for r in REGIONS)
    )
    lines.append(
        f"{summary['significant']} of {summary['tests']} corruption x severity x region tests "
        "differ from clean (Wilcoxon, Bonferroni)"
    )
    lines.append(
        f"wrote {Path(out) / 'corruptions.csv'} and {Path(out) / 'corruption_summary.json'}"
    )
    return lines
