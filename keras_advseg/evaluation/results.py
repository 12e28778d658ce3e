"""Typed evaluation results: per-subject rows, their summary (float eps keys), and reading them back.

On disk an evaluation folder holds ``per_subject.csv`` (one row per subject x
attack x eps), ``iterations.csv`` and ``summary.json``; JSON keys are strings,
so :class:`Summary` converts eps keys to floats on reading and back on writing.
Columns that only some rows have (the native scores with ``native_rows="clean"``, the
clean row's lesion-wise scores) are empty elsewhere, and a column that an older
evaluation lacks is simply absent when it is read back.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_advseg.config import ATTACKS, DICE_METRICS, QUALITY_METRICS, REGIONS
from keras_advseg.io import FileFormatError, csv_original, read_json, rows_to_csv
from keras_advseg.lesionwise import LESION_METRICS

ROW_FIELDS = ("subject", "attack", "eps", "steps") + DICE_METRICS + QUALITY_METRICS
NATIVE_METRICS = tuple(f"native_{m}_{r}" for m in ("dice", "hd95") for r in REGIONS)
"""Scores in the scan's own space (``advseg evaluate --native``)."""
ITERATION_FIELDS = ("subject", "attack", "iteration") + DICE_METRICS + QUALITY_METRICS
SUMMARY_METRICS = DICE_METRICS + QUALITY_METRICS


def current_attack_name(name: str) -> str:
    """An attack name as written today: a deprecated spelling read from an older evaluation
    (``tifgsm``, ``pgd``, ``apgd-balanced``) becomes its current name."""
    return ATTACKS.aliases.get(name, name)


@dataclass
class Evaluation:
    """What :func:`~keras_advseg.evaluation.robustness` returns.

    Attributes:
        rows: One dict per subject x attack x eps (:data:`ROW_FIELDS`); the clean
            row has attack ``none`` and eps 0.
        iterations: One dict per subject x attack x iteration (:data:`ITERATION_FIELDS`).
        example: The first subject's arrays for the example figure, or None.
    """

    rows: list[dict] = field(default_factory=list)
    iterations: list[dict] = field(default_factory=list)
    example: dict | None = None

    def rows_csv(self) -> str:
        """``per_subject.csv`` text (with the native columns when the rows have them, the
        lesion-wise columns when the clean rows have them, and ``found_by``, the attack that
        found each worst case, when there are worst-case rows)."""
        native = bool(self.rows) and NATIVE_METRICS[0] in self.rows[0]
        lesions = any(LESION_METRICS[0] in row for row in self.rows)
        worst = any("found_by" in row for row in self.rows)
        fields = (
            ROW_FIELDS
            + (NATIVE_METRICS if native else ())
            + (LESION_METRICS if lesions else ())
            + (("found_by",) if worst else ())
        )
        return rows_to_csv(self.rows, fields)

    def iterations_csv(self) -> str:
        """``iterations.csv`` text."""
        return rows_to_csv(self.iterations, ITERATION_FIELDS)


@dataclass
class Summary:
    """Means and standard deviations of an evaluation.

    Attributes:
        n_subjects: Subjects evaluated.
        clean: ``{"dice_wt": {"mean", "sd", "n"}, ...}`` without attack (with
            ``lesion_dice_*`` and ``lesion_hd95_*`` when the clean rows have them).
        attacks: ``{attack: {eps (float): {metric: {"mean", "sd", "n"}, "dice_drop": {region: fraction}}}}``.
        iterations: ``{attack: {metric: [mean after iteration 1, 2, ...]}}``.
    """

    n_subjects: int
    clean: dict
    attacks: dict[str, dict[float, dict]]
    iterations: dict[str, dict[str, list[float]]]

    def mean(self, attack: str, eps: float, metric: str) -> float | None:
        """Mean of ``metric`` under ``attack`` at ``eps`` (``attack="none"``: clean)."""
        if attack == "none":
            return self.clean[metric]["mean"]
        return self.attacks[attack][float(eps)][metric]["mean"]

    def to_json(self) -> dict:
        """The JSON form (``summary.json``): eps keys written with ``:g``."""
        return {
            "n_subjects": self.n_subjects,
            "clean": self.clean,
            "attacks": {
                a: {eps_key(e): entry for e, entry in by_eps.items()}
                for a, by_eps in self.attacks.items()
            },
            "iterations": self.iterations,
        }

    @classmethod
    def from_json(cls, value: dict, path: str | Path = "summary.json") -> Summary:
        """Reads the JSON form back.

        Raises:
            FileFormatError: a field is missing or an eps key is not a number.
        """
        try:
            attacks = {
                current_attack_name(a): {float(e): entry for e, entry in by_eps.items()}
                for a, by_eps in value["attacks"].items()
            }
            iterations = {current_attack_name(a): v for a, v in value.get("iterations", {}).items()}
            return cls(int(value["n_subjects"]), dict(value["clean"]), attacks, iterations)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(
                f"{path}: not an evaluation summary ({type(exc).__name__}: {exc})"
            ) from None


def eps_key(eps: float) -> str:
    """The text form of a budget in files and metric names: ``0.05``, ``0.1``."""
    return f"{float(eps):g}"


def summarize(evaluation: Evaluation) -> Summary:
    """Mean and standard deviation per attack and eps, and the relative Dice drop from clean."""
    rows = evaluation.rows
    native = bool(rows) and NATIVE_METRICS[0] in rows[0]
    metrics = SUMMARY_METRICS + (NATIVE_METRICS if native else ())
    clean_rows = [r for r in rows if r["attack"] == "none"]
    clean = {f"dice_{r}": _stats([row[f"dice_{r}"] for row in clean_rows]) for r in REGIONS}
    if native:
        clean.update({m: _stats([row[m] for row in clean_rows]) for m in NATIVE_METRICS})
    if any(LESION_METRICS[0] in row for row in clean_rows):
        clean.update({m: _stats([row.get(m, "") for row in clean_rows]) for m in LESION_METRICS})
    grouped: dict = {}
    for row in rows:
        if row["attack"] != "none":
            grouped.setdefault(row["attack"], {}).setdefault(float(row["eps"]), []).append(row)
    attacks: dict = {}
    for attack, by_eps in grouped.items():
        attacks[attack] = {}
        for eps, group in sorted(by_eps.items()):
            entry = {m: _stats([g[m] for g in group if g.get(m, "") != ""]) for m in metrics}
            entry["dice_drop"] = {
                r: (clean[f"dice_{r}"]["mean"] - entry[f"dice_{r}"]["mean"])
                / clean[f"dice_{r}"]["mean"]
                if clean[f"dice_{r}"]["mean"]
                else None
                for r in REGIONS
            }
            attacks[attack][eps] = entry
    curves: dict = {}
    for attack in sorted({r["attack"] for r in evaluation.iterations}):
        chosen = [r for r in evaluation.iterations if r["attack"] == attack]
        steps = max(r["iteration"] for r in chosen)
        curves[attack] = {
            m: [
                float(np.mean([r[m] for r in chosen if r["iteration"] == k]))
                for k in range(1, steps + 1)
            ]
            for m in SUMMARY_METRICS
        }
    return Summary(len(clean_rows), clean, attacks, curves)


def metric_names(summary: Summary) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """Flat metric names for a tracking UI (``dice_et_fgsm_eps0.05``) and step series for the curves.

    Returns:
        ``(flat, series)``: ``{name: value}`` and ``{name: [(step, value), ...]}``; the FGSM
        sweep is a series at step ``1000 * eps``, the iteration curves at step k.
    """
    flat = {f"{m}_clean": v["mean"] for m, v in summary.clean.items() if v["mean"] is not None}
    series: dict[str, list[tuple[int, float]]] = {}
    for attack, by_eps in summary.attacks.items():
        for eps, entry in by_eps.items():
            for metric in [m for m in entry if m != "dice_drop"]:
                value = entry[metric]["mean"]
                if value is None or not math.isfinite(value):
                    continue
                if attack == "fgsm_sweep":
                    series.setdefault(f"sweep_fgsm_{metric}", []).append(
                        (int(round(eps * 1000)), value)
                    )
                else:
                    flat[f"{metric}_{attack}_eps{eps_key(eps)}"] = value
    for attack, curves in summary.iterations.items():
        for metric, values in curves.items():
            series[f"iterations_{attack}_{metric}"] = [(k + 1, v) for k, v in enumerate(values)]
    return flat, series


@dataclass
class EvalResults:
    """One evaluation folder read back: ``values[(attack, eps)][subject][metric]``."""

    name: str
    path: Path
    values: dict
    summary: Summary | None
    found_by: dict = field(default_factory=dict)
    """``{(attack, eps): {subject: the ensemble member that found the worst case}}``."""

    def subjects(self, attack: str = "none", eps: float = 0.0) -> set[str]:
        return set(self.values.get((attack, eps), {}))

    def series(self, attack: str, eps: float, metric: str) -> dict[str, float]:
        """``{subject: value}`` of ``metric`` under ``attack`` at ``eps``."""
        return {
            s: v[metric]
            for s, v in self.values.get((attack, eps), {}).items()
            if v.get(metric) is not None
        }

    def has(self, attack: str, eps: float) -> bool:
        return (attack, eps) in self.values or (attack == "fgsm" and eps == 0.0)


def load_results(path: str | Path, name: str | None = None) -> EvalResults:
    """Reads ``per_subject.csv`` and ``summary.json`` of an evaluation folder (untrusted input).

    Raises:
        FileFormatError: the folder is not an evaluation output, or a file in it is malformed.
    """
    path = Path(path)
    table = path / "per_subject.csv"
    if not table.is_file():
        raise FileFormatError(
            f"{path}: not an evaluation folder (no per_subject.csv); run 'advseg evaluate' first"
        )
    values: dict = {}
    found_by: dict = {}
    try:
        with open(table, newline="") as handle:
            for row in csv.DictReader(handle):
                row["subject"] = csv_original(row["subject"])
                key = (current_attack_name(row["attack"]), round(_finite(row["eps"]), 6))
                if row.get("found_by"):
                    winner = current_attack_name(row["found_by"])
                    found_by.setdefault(key, {})[row["subject"]] = winner
                values.setdefault(key, {})[row["subject"]] = {
                    k: (_finite(v) if v not in ("", None) else None)
                    for k, v in row.items()
                    if k not in ("subject", "attack", "eps", "steps", "found_by")
                }
    except (KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError, OSError) as exc:
        raise FileFormatError(
            f"{table}: malformed evaluation table ({type(exc).__name__}: {exc})"
        ) from None
    summary_path = path / "summary.json"
    summary = (
        Summary.from_json(read_json(summary_path, "evaluation summary"), summary_path)
        if summary_path.is_file()
        else None
    )
    return EvalResults(name or path.name, path, values, summary, found_by)


def _finite(text) -> float:
    """A float from a CSV cell; PSNR may be ``inf`` (identical inputs), anything else must be finite."""
    value = float(text)
    if math.isnan(value):
        raise ValueError(f"not a number: {text!r}")
    return value


def _stats(values) -> dict:
    values = [float(v) for v in values if v != "" and v is not None and math.isfinite(float(v))]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def average_results(results: list[EvalResults], name: str | None = None) -> EvalResults:
    """One evaluation's per-subject values averaged over its replicates (training seeds).

    Every value is the mean over the replicates of that subject, attack, budget and
    metric, so a paired test on the average compares subjects, not seeds; the summary's
    means and curves are averaged the same way. ``found_by`` keeps every replicate's
    winner, keyed ``"<subject> #<replicate>"``.

    Args:
        results: The replicates: the same evaluation of models trained at other seeds.
        name: The averaged result's name [the first replicate's].

    Returns:
        An :class:`EvalResults` (the first replicate itself when there is one).

    Raises:
        FileFormatError: the replicates' subjects differ under some attack and budget.
    """
    if not results:
        raise ValueError("average_results needs at least one evaluation")
    if len(results) == 1:
        return results[0]
    first = results[0]
    values = {}
    for key in set.intersection(*(set(r.values) for r in results)):
        subjects = set(first.values[key])
        for other in results[1:]:
            if set(other.values[key]) != subjects:
                raise FileFormatError(
                    f"{other.path}: its subjects under {key[0]} at eps {key[1]:g} differ from "
                    f"{first.path}'s; replicates must be evaluated on the same test split"
                )
        values[key] = {
            subject: _mean_tree([r.values[key][subject] for r in results]) for subject in subjects
        }
    summaries = [r.summary for r in results]
    summary = None
    if all(s is not None for s in summaries):
        summary = Summary(
            first.summary.n_subjects,
            _mean_tree([s.clean for s in summaries]),
            _mean_tree([s.attacks for s in summaries]),
            _mean_tree([s.iterations for s in summaries]),
        )
    found_by = {}
    for index, result in enumerate(results):
        for key, winners in result.found_by.items():
            for subject, attack in winners.items():
                found_by.setdefault(key, {})[f"{subject} #{index}"] = attack
    return EvalResults(name or first.name, first.path, values, summary, found_by)


def _mean_tree(trees: list):
    """The element-wise mean of equally shaped nested dicts / lists of numbers (None where
    any replicate has None or a key is missing from one)."""
    head = trees[0]
    if isinstance(head, dict):
        keys = set.intersection(*(set(t) for t in trees if isinstance(t, dict)))
        if not all(isinstance(t, dict) for t in trees):
            return None
        return {k: _mean_tree([t[k] for t in trees]) for k in head if k in keys}
    if isinstance(head, list):
        if not all(isinstance(t, list) and len(t) == len(head) for t in trees):
            return None
        return [_mean_tree(list(items)) for items in zip(*trees)]
    if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in trees):
        return float(np.mean(trees))
    return None
