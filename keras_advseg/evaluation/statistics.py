"""Paired statistics and the paper's tables: ``advseg compare``.

Dice coefficients of two conditions are compared per subject with the
Wilcoxon signed-rank test (scipy), subjects matched by id, and p-values are
Bonferroni-corrected over the comparisons of each table (the number is
reported with the table).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from keras_advseg.config import QUALITY_METRICS, REGION_NAMES, REGIONS, attack_display
from keras_advseg.errors import InputError
from keras_advseg.evaluation.results import EvalResults

ALPHA = 0.05


def wilcoxon(a: dict[str, float], b: dict[str, float]) -> tuple[int, float]:
    """Paired Wilcoxon signed-rank test on the subjects both have; ``(n, p)``.

    All differences zero gives ``p = 1``; fewer than two subjects gives NaN.
    """
    subjects = sorted(set(a) & set(b))
    x = np.array([a[s] for s in subjects], float)
    y = np.array([b[s] for s in subjects], float)
    if len(subjects) < 2:
        return len(subjects), float("nan")
    if np.allclose(x, y):
        return len(subjects), 1.0
    return len(subjects), float(stats.wilcoxon(x, y).pvalue)


def bonferroni(p_values: list[float]) -> list[float]:
    """Bonferroni correction over the given comparisons: ``min(1, p * m)``."""
    m = len(p_values)
    return [min(1.0, p * m) if not math.isnan(p) else p for p in p_values]


def paired_tests(pairs: dict) -> tuple[dict, dict]:
    """Wilcoxon tests of ``{key: (a, b)}`` paired series, Bonferroni over all of them.

    Returns:
        ``(raw, corrected)``: p-values by key; ``len(pairs)`` is the number of comparisons.
    """
    raw = {key: wilcoxon(a, b)[1] for key, (a, b) in pairs.items()}
    return raw, dict(zip(raw, bonferroni(list(raw.values()))))


def mean_sd(values: dict[str, float]) -> tuple[float, float]:
    """Mean and sample standard deviation of ``{subject: value}``."""
    data = np.array(list(values.values()), float)
    return float(np.mean(data)), float(np.std(data, ddof=1)) if len(data) > 1 else 0.0


def mean_ci(values, level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and Student-t confidence interval of independent replicates (e.g. seeds).

    Returns:
        ``(mean, low, high)``; ``low`` and ``high`` are None with fewer than two values.
    """
    data = np.asarray(list(values), float)
    mean = float(np.mean(data))
    if len(data) < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + level / 2, len(data) - 1) * np.std(data, ddof=1)) / math.sqrt(
        len(data)
    )
    return mean, mean - half, mean + half


def check_same_subjects(results: list[EvalResults], baseline: EvalResults) -> None:
    """Checks that every evaluation scored the baseline's subjects.

    Raises:
        ValueError: naming the folder and the subjects that differ from the baseline's.
    """
    reference = baseline.subjects()
    for result in results:
        mine = result.subjects()
        if mine != reference:
            missing, extra = sorted(reference - mine), sorted(mine - reference)
            raise InputError(
                f"{result.path}: subjects differ from the baseline {baseline.path} "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"extra {extra[:3]}{'...' if len(extra) > 3 else ''}); evaluate on the same split"
            )


def attack_table(
    baseline: EvalResults,
    eps: float = 0.05,
    attacks: tuple[str, ...] = ("fgsm", "ifgsm", "targeted-ifgsm", "pgd-dice"),
) -> tuple[list[dict], int]:
    """Table 1: no attack vs each attack at ``eps``, Dice per region and input PSNR/SSIM/RMSE.

    Returns:
        ``(rows, m)``: table rows and the number of comparisons corrected for.
    """
    present = [a for a in attacks if (a, eps) in baseline.values]
    raw, corrected = paired_tests(
        {
            (attack, region): (
                baseline.series("none", 0.0, f"dice_{region}"),
                baseline.series(attack, eps, f"dice_{region}"),
            )
            for attack in present
            for region in REGIONS
        }
    )
    rows = []
    for attack in ["none"] + present:
        e = 0.0 if attack == "none" else eps
        row = {"attack": attack_display(attack), "eps": e}
        for region in REGIONS:
            mean, sd = mean_sd(baseline.series(attack, e, f"dice_{region}"))
            q = corrected.get((attack, region))
            row[f"dice_{region}"] = _cell(mean, sd, q)
            row[f"p_{region}"] = _p(raw.get((attack, region)))
            row[f"p_{region}_corrected"] = _p(q)
        for metric in QUALITY_METRICS:
            series = baseline.series(attack, e, metric)
            row[metric] = _cell(*mean_sd(series), None) if series else "-"
        rows.append(row)
    return rows, len(raw)


def defense_table(
    models: list[EvalResults],
    baseline: EvalResults,
    eps_values: tuple[float, ...] = (0.0, 0.05, 0.1),
) -> tuple[list[dict], int]:
    """Tables 2/3: every model vs the baseline (no defense) under FGSM at each eps, per region.

    FGSM at eps 0 is the clean evaluation. Returns ``(rows, m)``.
    """
    eps_values = tuple(e for e in eps_values if baseline.has("fgsm", e))
    raw, corrected = paired_tests(
        {
            (model.name, region, eps): (_fgsm(model, eps, region), _fgsm(baseline, eps, region))
            for model in models
            for region in REGIONS
            for eps in eps_values
            if model.has("fgsm", eps)
        }
    )
    rows = []
    for region in REGIONS:
        for model in [baseline] + models:
            row = {"region": REGION_NAMES[region], "model": model.name}
            for eps in eps_values:
                series = _fgsm(model, eps, region)
                q = corrected.get((model.name, region, eps)) if model is not baseline else None
                row[f"dice_eps{eps:g}"] = _cell(*mean_sd(series), q) if series else "-"
                row[f"p_eps{eps:g}"] = (
                    _p(raw.get((model.name, region, eps))) if model is not baseline else "-"
                )
                row[f"p_eps{eps:g}_corrected"] = _p(q) if model is not baseline else "-"
            rows.append(row)
    return rows, len(raw)


def sweep_curves(results: list[EvalResults]) -> dict[str, dict]:
    """Mean Dice per FGSM eps for each model: the sweep grid plus the table points."""
    curves = {}
    for result in results:
        points = {}
        for (attack, eps), by_subject in result.values.items():
            if attack in ("fgsm_sweep", "fgsm") or (attack == "none" and eps == 0.0):
                points[eps] = {
                    f"dice_{r}": float(np.mean([v[f"dice_{r}"] for v in by_subject.values()]))
                    for r in REGIONS
                }
        curves[result.name] = points
    return curves


def to_markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of ``rows`` (columns: the first row's keys unless given)."""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fgsm(result: EvalResults, eps: float, region: str) -> dict[str, float]:
    if eps == 0.0:
        return result.series("none", 0.0, f"dice_{region}")
    return result.series("fgsm", eps, f"dice_{region}")


def _cell(mean: float, sd: float, corrected_p: float | None) -> str:
    star = (
        "*"
        if corrected_p is not None and not math.isnan(corrected_p) and corrected_p <= ALPHA
        else ""
    )
    return f"{mean:.3f} ± {sd:.3f}{star}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    if math.isnan(p):
        return "n/a"
    return f"{p:.4g}"
