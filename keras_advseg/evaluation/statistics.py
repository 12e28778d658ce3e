"""Paired statistics and the paper's tables: ``advseg compare``.

Dice coefficients of two conditions are compared per subject with the
Wilcoxon signed-rank test (scipy), subjects matched by id, and p-values are
Bonferroni-corrected over the comparisons of each family (the number is
reported with the table). A zero paired difference is dropped (:data:`ZERO_METHOD`);
with ``n`` nonzero differences the exact test cannot go below :func:`smallest_p`, so a
family of ``m`` comparisons can only reach ``ALPHA`` where ``m * smallest_p(n) <= ALPHA``
(:func:`reachable`). The location of the paired differences that the signed-rank test
tests is estimated by the Hodges-Lehmann estimator, with the interval that inverts the
exact test (:func:`hodges_lehmann`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from keras_advseg.config import QUALITY_METRICS, REGION_NAMES, REGIONS, attack_display
from keras_advseg.errors import InputError
from keras_advseg.evaluation.results import EvalResults

ALPHA = 0.05

ZERO_METHOD = "wilcox"
"""How every signed-rank test here treats a zero paired difference (two equal Dice): it is
dropped, Wilcoxon's own rule and SciPy's default (``scipy.stats.wilcoxon(zero_method=
"wilcox")``), so the test's ``n`` is the number of subjects whose two values differ. With
ties or zeros at ``n <= 13`` SciPy runs the exact permutation test, above that the normal
approximation with the tie correction."""

TABLE1_ATTACKS = ("fgsm", "ifgsm", "targeted-ifgsm", "pgd-dice")
"""The attacks of Table 1, whose family is every one of them x region against no attack."""


def wilcoxon(a: dict[str, float], b: dict[str, float]) -> tuple[int, float]:
    """Paired two-sided Wilcoxon signed-rank test on the subjects both have.

    Zero differences are dropped (:data:`ZERO_METHOD`).

    Args:
        a: ``{subject: value}`` of one condition.
        b: ``{subject: value}`` of the other.

    Returns:
        ``(n, p)``: the number of shared subjects and the p-value. All differences zero gives
        ``p = 1``; fewer than two subjects gives NaN.
    """
    subjects = sorted(set(a) & set(b))
    x = np.array([a[s] for s in subjects], float)
    y = np.array([b[s] for s in subjects], float)
    if len(subjects) < 2:
        return len(subjects), float("nan")
    if np.allclose(x, y):
        return len(subjects), 1.0
    return len(subjects), float(stats.wilcoxon(x, y, zero_method=ZERO_METHOD).pvalue)


def paired_differences(a: dict[str, float], b: dict[str, float]) -> np.ndarray:
    """``a[s] - b[s]`` over the subjects both have, in sorted subject order.

    Args:
        a: ``{subject: value}``.
        b: ``{subject: value}``.

    Returns:
        The differences as a float array (empty when no subject is shared).
    """
    subjects = sorted(set(a) & set(b))
    return np.array([a[s] - b[s] for s in subjects], float)


def nonzero(differences) -> int:
    """The ``n`` a signed-rank test uses: the differences that are not zero (to 1e-12).

    Args:
        differences: Paired differences.

    Returns:
        Their number.
    """
    return int(np.count_nonzero(np.round(np.asarray(differences, float), 12)))


def smallest_p(n: int, alternative: str = "two-sided") -> float:
    """The smallest p-value the exact signed-rank test can give on ``n`` nonzero differences:
    every difference of one sign, ``1 / 2**n`` one-sided and ``2 / 2**n`` two-sided.

    Args:
        n: Nonzero paired differences.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.

    Returns:
        That p-value (1 with no difference).

    Raises:
        ValueError: an unknown alternative.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(
            f"alternative must be two-sided, greater or less. Received: alternative={alternative!r}"
        )
    if n < 1:
        return 1.0
    return min(1.0, (2.0 if alternative == "two-sided" else 1.0) / 2.0**n)


def reachable(n: int, m: int, alternative: str = "two-sided", alpha: float = ALPHA) -> bool:
    """Whether a test on ``n`` nonzero differences can reach ``alpha`` after Bonferroni over
    ``m`` comparisons: ``m * smallest_p(n) <= alpha``.

    Args:
        n: Nonzero paired differences.
        m: Comparisons in the family.
        alternative: As for :func:`smallest_p`.
        alpha: The family-wise level.

    Returns:
        True when a significant result is possible.
    """
    return m * smallest_p(n, alternative) <= alpha


def signed_rank_distribution(n: int) -> np.ndarray:
    """The exact null distribution of the signed-rank statistic ``T+`` on ``n`` differences.

    Args:
        n: The number of (nonzero, untied) differences.

    Returns:
        ``P(T+ = t)`` for ``t = 0 .. n (n + 1) / 2``.
    """
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    for rank in range(1, n + 1):  # each rank joins T+ with probability 1/2
        shifted = np.zeros_like(pmf)
        shifted[rank:] = pmf[:-rank]
        pmf = 0.5 * (pmf + shifted)
    return pmf


def hodges_lehmann(differences, level: float = 0.95) -> tuple[float, float, float]:
    """The Hodges-Lehmann estimate of the paired differences' location (the median of the
    Walsh averages ``(d_i + d_j) / 2``, ``i <= j``) and the interval that inverts the exact
    signed-rank test: ``[W_(M - c + 1), W_(c)]`` with ``c`` the smallest integer such that
    ``P(T+ >= c) <= (1 - level) / 2``. Without zero or tied differences, the one-sided test
    of ``d - theta > 0`` at ``(1 - level) / 2`` rejects exactly when ``theta`` is below the
    lower end.

    Args:
        differences: Paired differences (at least one).
        level: Two-sided confidence level.

    Returns:
        ``(estimate, low, high)``; an end is infinite when no interval of that level exists
        (too few differences).

    Raises:
        ValueError: no difference, or a level outside (0, 1).
    """
    d = np.asarray(differences, float)
    if d.size == 0:
        raise ValueError("hodges_lehmann needs at least one difference. Received: 0")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1). Received: level={level}")
    i, j = np.triu_indices(d.size)
    walsh = np.sort((d[i] + d[j]) / 2)
    total = walsh.size
    upper_tail = np.cumsum(signed_rank_distribution(d.size)[::-1])[::-1]  # P(T+ >= t)
    tail = (1 - level) / 2
    inside = np.nonzero(upper_tail <= tail + 1e-12)[0]
    c = int(inside[0]) if inside.size else total + 1
    if c < 1 or c > total:
        return float(np.median(walsh)), -math.inf, math.inf
    return float(np.median(walsh)), float(walsh[total - c]), float(walsh[c - 1])


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a family: means, the Hodges-Lehmann shift of ``mine -
    theirs`` with its interval at the family's corrected level, the Bonferroni-corrected p,
    the test's ``n`` (nonzero differences), the family's size ``m``, and whether the test
    could reach ``ALPHA`` at all (:func:`reachable`)."""

    mine: float
    theirs: float
    shift: float
    low: float
    high: float
    p: float
    n: int
    m: int
    reachable: bool

    @property
    def significant(self) -> bool:
        """Corrected p at most :data:`ALPHA`."""
        return not math.isnan(self.p) and self.p <= ALPHA

    def interval(self) -> str:
        """``+0.012 [-0.004, +0.031]``: the shift and its interval."""

        def end(value):
            return ("-inf" if value < 0 else "+inf") if math.isinf(value) else f"{value:+.3f}"

        return f"{self.shift:+.3f} [{end(self.low)}, {end(self.high)}]"


def superiority_family(pairs: dict) -> dict:
    """A family of paired two-sided signed-rank tests, ``{key: (mine, theirs)}`` per-subject
    series, Bonferroni over the family; each shift's interval is at level ``1 - ALPHA / m``,
    so that (without ties) it excludes 0 exactly when the corrected p is at most ``ALPHA``.

    Args:
        pairs: ``{key: ({subject: value}, {subject: value})}``.

    Returns:
        ``{key: Comparison}``.
    """
    _, corrected = paired_tests(pairs)
    m = len(pairs)
    out = {}
    for key, (a, b) in pairs.items():
        d = paired_differences(a, b)
        shift, low, high = hodges_lehmann(d, 1 - ALPHA / m) if d.size else (math.nan,) * 3
        n = nonzero(d)
        out[key] = Comparison(
            mean_sd(a)[0], mean_sd(b)[0], shift, low, high, corrected[key], n, m, reachable(n, m)
        )
    return out


def noninferiority(a: dict[str, float], b: dict[str, float], margin: float) -> tuple[int, float]:
    """One-sided paired Wilcoxon signed-rank test that ``a`` is not worse than ``b`` by
    ``margin`` or more: H0 the differences ``a - b`` are centred at ``-margin`` or below,
    tested on ``a - b + margin`` with ``alternative="greater"`` (zeros dropped,
    :data:`ZERO_METHOD`).

    Args:
        a: ``{subject: value}`` of the new condition.
        b: ``{subject: value}`` of the reference.
        margin: The largest loss that still counts as no loss (>= 0).

    Returns:
        ``(n, p)``: nonzero shifted differences and the one-sided p; p is 1 when every shifted
        difference is zero and NaN with fewer than two shared subjects.

    Raises:
        ValueError: a negative margin.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0. Received: margin={margin}")
    d = np.round(paired_differences(a, b) + margin, 12)
    n = nonzero(d)
    if d.size < 2:
        return n, float("nan")
    if n == 0:
        return 0, 1.0
    return n, float(stats.wilcoxon(d, alternative="greater", zero_method=ZERO_METHOD).pvalue)


def noninferiority_family(pairs: dict, margin: float) -> dict:
    """A family of :func:`noninferiority` tests, Bonferroni over the family; each shift's
    interval is at level ``1 - 2 ALPHA / m``, so that (without ties) its lower end is above
    ``-margin`` exactly when the corrected one-sided p is at most ``ALPHA``.

    Args:
        pairs: ``{key: ({subject: mine}, {subject: reference})}``.
        margin: The non-inferiority margin.

    Returns:
        ``{key: Comparison}`` (``p`` the corrected one-sided p).
    """
    raw = {key: noninferiority(a, b, margin) for key, (a, b) in pairs.items()}
    m = len(pairs)
    corrected = dict(zip(raw, bonferroni([p for _, p in raw.values()])))
    out = {}
    for key, (a, b) in pairs.items():
        d = paired_differences(a, b)
        level = max(1 - 2 * ALPHA / m, 1e-9)
        shift, low, high = hodges_lehmann(d, level) if d.size else (math.nan,) * 3
        n = raw[key][0]
        out[key] = Comparison(
            mean_sd(a)[0],
            mean_sd(b)[0],
            shift,
            low,
            high,
            corrected[key],
            n,
            m,
            reachable(n, m, "greater"),
        )
    return out


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
    half = t_half_width(float(np.std(data, ddof=1)), len(data), level)
    return mean, mean - half, mean + half


def t_half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half the width of the Student-t confidence interval of a mean of ``n`` values whose
    sample standard deviation is ``sd`` (``n`` at least 2)."""
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd) / math.sqrt(n)


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


def attack_tests(
    baseline: EvalResults, eps: float = 0.05, attacks: tuple[str, ...] = TABLE1_ATTACKS
) -> tuple[dict, dict]:
    """Table 1's family: no attack vs each of ``attacks`` the baseline has at ``eps``, per
    region, paired Wilcoxon tests Bonferroni over all of them. Finding (b) uses this family
    too, so that its verdict and Table 1's asterisks come from the same p-values.

    Args:
        baseline: The undefended model's evaluation.
        eps: The attacks' budget.
        attacks: The attacks of the table.

    Returns:
        ``(raw, corrected)``: p-values by ``(attack, region)``.
    """
    present = [a for a in attacks if (a, eps) in baseline.values]
    return paired_tests(
        {
            (attack, region): (
                baseline.series("none", 0.0, f"dice_{region}"),
                baseline.series(attack, eps, f"dice_{region}"),
            )
            for attack in present
            for region in REGIONS
        }
    )


def attack_table(
    baseline: EvalResults, eps: float = 0.05, attacks: tuple[str, ...] = TABLE1_ATTACKS
) -> tuple[list[dict], int]:
    """Table 1: no attack vs each attack at ``eps``, Dice per region and input PSNR/SSIM/RMSE.

    Args:
        baseline: The undefended model's evaluation.
        eps: The attacks' budget.
        attacks: The attacks of the table (those the baseline has at ``eps``).

    Returns:
        ``(rows, m)``: table rows and the number of comparisons corrected for
        (:func:`attack_tests`).
    """
    present = [a for a in attacks if (a, eps) in baseline.values]
    raw, corrected = attack_tests(baseline, eps, attacks)
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
