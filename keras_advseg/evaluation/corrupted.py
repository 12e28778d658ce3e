"""Segmentation under corruptions (simulated MRI artifacts and operator errors): per-subject
Dice, ROOD-MRI's scores, tests.

Every model is scored on the same corrupted scans (:class:`~keras_advseg.data.corrupted.
CorruptedScans`): the native scan corrupted, then the model's own preprocessing. The scores
summarise Dice against severity per corruption and region (Boone et al. 2023, ROOD-MRI;
Hendrycks & Dietterich 2019 for the corruption error):

* overall ``(D_0 + sum_s a^s D_s) / (1 + sum_s a^s)`` and degradation
  ``sum_s a^s (D_0 - D_s) / sum_s a^s``, with ``a = 2/3`` so that mild levels, the common
  ones, weigh most;
* the resilience rate ``RR = sum_s D_s / (n_s D_0)`` (1: no loss), averaged over corruptions
  as mRR: Robo3D's (Kong et al. 2023, "Robo3D: Towards Robust and Reliable 3D Perception
  against Corruptions") with Dice in place of mIoU; Hendrycks & Dietterich's relative mCE is a
  different quantity;
* with a reference model, the corruption error ``CE = sum_s (1 - D_s) / sum_s (1 - D_s^ref)``
  (below 1: fewer errors than the reference), averaged as mCE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.data.subject import MODALITIES
from keras_advseg.errors import InputError
from keras_advseg.io import rows_to_csv

ALPHA = 2 / 3
"""ROOD-MRI's severity weight: level ``s`` weighs ``ALPHA ** s``."""

DICE_FIELDS = tuple(f"dice_{r}" for r in REGIONS)
NATIVE_FIELDS = tuple(f"native_{m}_{r}" for m in ("dice", "hd95") for r in REGIONS)
ROW_FIELDS = ("subject", "corruption", "severity") + DICE_FIELDS
PARAMS_FIELD = "params"
"""The rows' last column: what the corruption drew for the subject, as JSON (the level's
parameters under ``level``, then per sequence or for the scan: the sequence dropped or swapped,
the spike's position, the motion path; ``{}`` for the clean scan)."""
TEST_FIELDS = (
    "corruption",
    "severity",
    "region",
    "n",
    "clean_mean",
    "corrupted_mean",
    "p",
    "p_bonferroni",
    "significant",
)


@dataclass
class CorruptionEvaluation:
    """One model's rows (one per subject x corruption x severity; the clean scan is corruption
    ``none`` at severity 0) and the first subject's slices for the grid figure."""

    rows: list[dict] = field(default_factory=list)
    example: dict | None = None

    def rows_csv(self) -> str:
        native = bool(self.rows) and NATIVE_FIELDS[0] in self.rows[0]
        return rows_to_csv(
            self.rows, ROW_FIELDS + (NATIVE_FIELDS if native else ()) + (PARAMS_FIELD,)
        )


def evaluate_corruptions(
    models: dict,
    subjects: list,
    scans,
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    *,
    native: bool = False,
    example_severities: tuple[int, ...] = (1, 3, 5),
    progress: bool | None = None,
) -> dict[str, CorruptionEvaluation]:
    """Scores every model on every subject's scan under each corruption and severity.

    Args:
        models: ``{name: (model, preprocessing)}``: Keras models (volumes in, logits out) with
            the :class:`~keras_advseg.inference.Preprocessing` whose statistics standardise
            their input (the crop and size are ``scans``').
        subjects: Raw :class:`~keras_advseg.data.Subject` with labels.
        scans: The :class:`~keras_advseg.data.corrupted.CorruptedScans` they share.
        corruptions: Registered corruption names.
        severities: Levels 1-5 (the clean scan is always scored).
        native: Also score Dice and HD95 (mm) on each scan's own grid.
        example_severities: The levels the grid figure shows.
        progress: Show a progress bar (None: on a terminal).

    Returns:
        ``{name: CorruptionEvaluation}``.

    Raises:
        InputError: a subject without labels. DataError: an unreadable scan.
    """
    from tqdm.auto import tqdm

    from keras_advseg.attacks.core import logits_function
    from keras_advseg.data.corrupted import spacing_of
    from keras_advseg.data.preprocess import resize, standardize
    from keras_advseg.inference import NativeGrid, probabilities_to_label_map
    from keras_advseg.metrics import brats_dice, logits_to_probabilities

    forwards = {name: (logits_function(m), p) for name, (m, p) in models.items()}
    results = {name: CorruptionEvaluation() for name in models}
    conditions = [("none", 0)] + [(c, s) for c in corruptions for s in severities]
    bar = tqdm(
        total=len(subjects) * len(conditions),
        desc="corruptions",
        unit="scan",
        disable=None if progress is None else not progress,
    )
    with bar:
        for index, subject in enumerate(subjects):
            image, labels = subject.load()
            if labels is None:
                raise InputError(f"subject {subject.subject_id} has no labels; scoring needs them")
            spacing = spacing_of(subject) if native else None
            for corruption, severity in conditions:
                scan = scans.get(subject, corruption, severity, image=image)
                model_labels = resize(labels[scan.box], scan.image.shape[:3], order=0)
                for name, (forward, preprocessing) in forwards.items():
                    mean = None if preprocessing.mean is None else np.asarray(preprocessing.mean)
                    std = None if preprocessing.std is None else np.asarray(preprocessing.std)
                    x = standardize(scan.image, scan.mask, mean, std)
                    logits = forward(x[None], training=False)
                    probabilities = np.asarray(logits_to_probabilities(logits))[0]
                    predicted = probabilities_to_label_map(probabilities)
                    dice = brats_dice(model_labels, predicted)
                    row = {
                        "subject": subject.subject_id,
                        "corruption": corruption,
                        "severity": severity,
                        **{f"dice_{r}": float(dice[r]) for r in REGIONS},
                        PARAMS_FIELD: json.dumps(scan.params, sort_keys=True),
                    }
                    if native:
                        grid = NativeGrid(scan.box, scan.native_shape, spacing, labels)
                        row.update(
                            {f"native_{k}": v for k, v in grid.scores(probabilities).items()}
                        )
                    results[name].rows.append(row)
                    if index == 0 and (severity == 0 or severity in example_severities):
                        _keep_example(
                            results[name],
                            subject,
                            model_labels,
                            scan,
                            predicted,
                            corruption,
                            severity,
                        )
                bar.update()
    return results


def _keep_example(result, subject, labels, scan, predicted, corruption, severity) -> None:
    """Keeps one axial slice (the clean labels' largest tumour section) of a condition."""
    if result.example is None:
        tumour = labels > 0
        z = int(np.argmax(tumour.sum(axis=(0, 1)))) if tumour.any() else labels.shape[2] // 2
        result.example = {
            "subject": subject.subject_id,
            "z": z,
            "labels": labels[:, :, z],
            "panels": {},
        }
    z = result.example["z"]
    result.example["panels"][(corruption, severity)] = (
        scan.image[:, :, z, :].copy(),
        predicted[:, :, z].copy(),
    )


def example_channel(example: dict, corruption: str) -> int:
    """The sequence a grid row shows: the one the corruption changed most in the slice at its
    highest level (FLAIR when none changed)."""
    clean = example["panels"].get(("none", 0))
    levels = [s for (c, s) in example["panels"] if c == corruption]
    if clean is None or not levels:
        return MODALITIES.index("flair")
    image = example["panels"][(corruption, max(levels))][0]
    change = np.abs(image - clean[0]).mean(axis=(0, 1))
    return int(np.argmax(change)) if change.max() > 0 else MODALITIES.index("flair")


def mean_dice(rows: list[dict], metric_prefix: str = "dice") -> dict:
    """``{(corruption, severity): {region: mean over subjects}}``."""
    grouped: dict = {}
    for row in rows:
        grouped.setdefault((row["corruption"], int(row["severity"])), []).append(row)
    return {
        key: {r: float(np.mean([g[f"{metric_prefix}_{r}"] for g in group])) for r in REGIONS}
        for key, group in grouped.items()
    }


def corruption_scores(
    rows: list[dict], reference_rows: list[dict] | None = None, alpha: float = ALPHA
) -> dict:
    """ROOD-MRI's overall and degradation scores, the resilience rate (Robo3D) and (with a reference
    model's rows on the same scans) the corruption error, per corruption and region, and their
    means over corruptions.

    Args:
        rows: A model's rows (:class:`CorruptionEvaluation`).
        reference_rows: The reference model's rows, or None.
        alpha: Severity weight (ROOD-MRI: 2/3).

    Returns:
        ``{"clean": {region: D_0}, "corruptions": {name: {region: {"dice": {s: D_s},
        "overall", "degradation", "rr", "ce"}}}, "overall", "degradation", "mrr", "mce":
        {region: mean over corruptions}, "worst": {region: the corruption with the lowest
        overall score}}``; ``ce``/``mce`` are None without a reference.

    Raises:
        InputError: no clean rows.
    """
    means = mean_dice(rows)
    if ("none", 0) not in means:
        raise InputError("corruption scores need the clean scans' rows (corruption none)")
    clean = means[("none", 0)]
    reference = mean_dice(reference_rows) if reference_rows else None
    names = list(dict.fromkeys(c for c, s in means if c != "none"))
    per: dict = {}
    for name in names:
        levels = sorted(s for c, s in means if c == name)
        per[name] = {}
        for r in REGIONS:
            d = {s: means[(name, s)][r] for s in levels}
            w = {s: alpha**s for s in levels}
            ce = None
            if reference is not None and all((name, s) in reference for s in levels):
                errors_ref = sum(1 - reference[(name, s)][r] for s in levels)
                errors = sum(1 - d[s] for s in levels)
                ce = errors / errors_ref if errors_ref > 0 else None
            per[name][r] = {
                "dice": d,
                "overall": (clean[r] + sum(w[s] * d[s] for s in levels)) / (1 + sum(w.values())),
                "degradation": sum(w[s] * (clean[r] - d[s]) for s in levels) / sum(w.values()),
                "rr": sum(d.values()) / (len(levels) * clean[r]) if clean[r] > 0 else None,
                "ce": ce,
            }

    def average(key):
        out = {}
        for r in REGIONS:
            values = [per[n][r][key] for n in names if per[n][r][key] is not None]
            out[r] = float(np.mean(values)) if values and len(values) == len(names) else None
        return out

    worst = {r: min(names, key=lambda n: per[n][r]["overall"]) if names else None for r in REGIONS}
    return {
        "alpha": alpha,
        "clean": clean,
        "corruptions": per,
        "overall": average("overall"),
        "degradation": average("degradation"),
        "mrr": average("rr"),
        "mce": average("ce"),
        "worst": worst,
    }


def corruption_tests(rows: list[dict]) -> list[dict]:
    """Each corruption and severity against the clean scans, per region: paired Wilcoxon
    signed-rank tests on the subjects' Dice, Bonferroni over every test in the table.

    Returns:
        One dict per test (:data:`TEST_FIELDS`).
    """
    from keras_advseg.evaluation.statistics import ALPHA as LEVEL
    from keras_advseg.evaluation.statistics import paired_tests

    by_key: dict = {}
    for row in rows:
        by_key.setdefault((row["corruption"], int(row["severity"])), {})[row["subject"]] = row
    clean = by_key.get(("none", 0), {})
    pairs = {}
    for (name, severity), subjects in by_key.items():
        if name == "none":
            continue
        for r in REGIONS:
            pairs[(name, severity, r)] = (
                {s: v[f"dice_{r}"] for s, v in subjects.items()},
                {s: v[f"dice_{r}"] for s, v in clean.items()},
            )
    raw, corrected = paired_tests(pairs)
    table = []
    for key, (corrupted, reference) in pairs.items():
        shared = sorted(set(corrupted) & set(reference))
        table.append(
            {
                "corruption": key[0],
                "severity": key[1],
                "region": key[2],
                "n": len(shared),
                "clean_mean": float(np.mean([reference[s] for s in shared])) if shared else None,
                "corrupted_mean": float(np.mean([corrupted[s] for s in shared]))
                if shared
                else None,
                "p": raw[key],
                "p_bonferroni": corrected[key],
                "significant": bool(corrected[key] < LEVEL),
            }
        )
    return table


def tests_csv(table: list[dict]) -> str:
    return rows_to_csv(table, TEST_FIELDS)


def metric_names(rows: list[dict], scores: dict) -> dict[str, float]:
    """MLflow names, like the attacks': ``dice_wt_motion_s3`` (mean over subjects),
    ``native_dice_wt_motion_s3``, and ``corruption_overall_wt``, ``corruption_degradation_wt``,
    ``corruption_mrr_wt``, ``corruption_mce_wt``."""
    flat = {}
    native = bool(rows) and NATIVE_FIELDS[0] in rows[0]
    prefixes = ["dice"] + (["native_dice", "native_hd95"] if native else [])
    for prefix in prefixes:
        for (name, severity), means in _finite_means(rows, prefix).items():
            suffix = "clean" if name == "none" else f"{name}_s{severity}"
            for r, value in means.items():
                flat[f"{prefix}_{r}_{suffix}"] = value
    for key in ("overall", "degradation", "mrr", "mce"):
        for r, value in scores[key].items():
            if value is not None:
                flat[f"corruption_{key}_{r}"] = value
    return flat


def _finite_means(rows, prefix) -> dict:
    grouped: dict = {}
    for row in rows:
        grouped.setdefault((row["corruption"], int(row["severity"])), []).append(row)
    out = {}
    for key, group in grouped.items():
        out[key] = {}
        for r in REGIONS:
            values = [float(g[f"{prefix}_{r}"]) for g in group]
            values = [v for v in values if np.isfinite(v)]
            if values:
                out[key][r] = float(np.mean(values))
    return out


def read_rows(path) -> list[dict]:
    """A ``corruptions.csv`` read back (untrusted input): severities as integers, Dice as floats.

    Raises:
        FileFormatError: a missing column, a non-number, a Dice outside [0, 1], a severity
            outside 0-5.
    """
    import csv
    import math

    from keras_advseg.io import FileFormatError, csv_original

    rows = []
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                parsed = {
                    "subject": csv_original(row["subject"]),
                    "corruption": row["corruption"],
                    "severity": int(row["severity"]),
                }
                for name in DICE_FIELDS:
                    value = float(row[name])
                    if not (math.isfinite(value) and 0 <= value <= 1):
                        raise ValueError(f"{name} {value} outside [0, 1]")
                    parsed[name] = value
                if not 0 <= parsed["severity"] <= 5:
                    raise ValueError(f"severity {parsed['severity']} outside 0-5")
                rows.append(parsed)
    except (OSError, KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise FileFormatError(
            f"{path}: malformed corruption table ({type(exc).__name__}: {exc})"
        ) from None
    return rows
