"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from keras_advseg.evaluation.statistics import bonferroni, wilcoxon


def test_statistics_match_scipy_and_bonferroni():
    rng = np.random.default_rng(0)
    a = {f"s{i}": float(v) for i, v in enumerate(rng.random(12))}
    b = {k: v - 0.1 - 0.05 * rng.random() for k, v in a.items()}
    n, p = wilcoxon(a, b)
    keys = sorted(a)
    assert n == 12 and p == pytest.approx(
        stats.wilcoxon([a[k] for k in keys], [b[k] for k in keys]).pvalue
    )
    assert wilcoxon(a, a) == (12, 1.0)
    assert bonferroni([0.01, 0.2, 0.6]) == pytest.approx([0.03, 0.6, 1.0])


def test_the_smallest_attainable_p_is_the_exact_tests_and_sizes_what_a_family_can_reach():
    from keras_advseg.evaluation.statistics import reachable, smallest_p

    for n in range(1, 11):
        d = np.arange(1, n + 1) / 100  # every difference of one sign: the most extreme outcome
        assert smallest_p(n) == pytest.approx(stats.wilcoxon(d).pvalue)
        assert smallest_p(n, "greater") == pytest.approx(
            stats.wilcoxon(d, alternative="greater").pvalue
        )
    assert smallest_p(8) == 2 / 2**8 and smallest_p(0) == 1.0
    # 8 subjects: Bonferroni over 4 can reach 0.05 (0.031), over 20 cannot (0.156)
    assert reachable(8, 4) and not reachable(8, 20)
    assert reachable(8, 3) and 3 * smallest_p(8) == pytest.approx(0.0234375)
    assert not reachable(5, 1) and reachable(5, 1, "greater")
    with pytest.raises(ValueError, match="Received: alternative='up'"):
        smallest_p(3, "up")


def test_hodges_lehmann_is_the_walsh_median_and_its_interval_inverts_scipys_test():
    from keras_advseg.evaluation.statistics import hodges_lehmann

    rng = np.random.default_rng(3)
    for n, level in ((6, 0.9), (12, 1 - 2 * 0.05 / 6), (15, 0.95)):
        d = rng.normal(0.01, 0.03, n)
        walsh = [(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)]
        estimate, low, high = hodges_lehmann(d, level)
        assert estimate == pytest.approx(np.median(walsh))
        assert low < estimate < high
        tail = (1 - level) / 2
        # below the lower end the one-sided test rejects, above it it does not
        assert stats.wilcoxon(d - (low - 1e-9), alternative="greater").pvalue <= tail
        assert stats.wilcoxon(d - (low + 1e-9), alternative="greater").pvalue > tail
        assert stats.wilcoxon(d - (high + 1e-9), alternative="less").pvalue <= tail
        assert stats.wilcoxon(d - (high - 1e-9), alternative="less").pvalue > tail
    # too few differences for the level: no finite interval
    assert hodges_lehmann([0.1, 0.2, 0.3], 0.95)[1:] == (-np.inf, np.inf)
    with pytest.raises(ValueError, match="Received: 0"):
        hodges_lehmann([])


def test_noninferiority_is_scipys_one_sided_test_on_the_shifted_differences():
    from keras_advseg.evaluation.statistics import noninferiority, noninferiority_family

    rng = np.random.default_rng(4)
    b = {f"s{i}": float(v) for i, v in enumerate(rng.uniform(0.5, 0.8, 12))}
    a = {k: v - 0.005 + 0.01 * rng.standard_normal() for k, v in b.items()}
    keys = sorted(b)
    d = np.array([a[k] - b[k] for k in keys])
    n, p = noninferiority(a, b, 0.02)
    assert n == 12 and p == pytest.approx(stats.wilcoxon(d + 0.02, alternative="greater").pvalue)
    # a shifted difference of exactly zero is dropped (zero_method="wilcox")
    a_tie = dict(a, s0=b["s0"] - 0.02)
    d_tie = np.array([a_tie[k] - b[k] for k in keys]) + 0.02
    d_tie[0] = 0.0
    n, p = noninferiority(a_tie, b, 0.02)
    assert n == 11 and p == pytest.approx(
        stats.wilcoxon(d_tie, alternative="greater", zero_method="wilcox").pvalue
    )
    # a family: Bonferroni over its comparisons, the interval at 1 - 2 alpha / m
    family = noninferiority_family({"x": (a, b), "y": (b, a), "z": (a, a)}, 0.02)
    assert family["x"].p == pytest.approx(
        min(1, 3 * stats.wilcoxon(d + 0.02, alternative="greater").pvalue)
    )
    assert family["x"].m == 3 and family["x"].significant == (family["x"].low > -0.02)
    with pytest.raises(ValueError, match="Received: margin=-0.1"):
        noninferiority(a, b, -0.1)


def test_a_comparison_prints_its_shift_and_interval_with_unbounded_ends():
    from keras_advseg.evaluation.statistics import superiority_family

    a = {"s0": 0.5, "s1": 0.6}
    b = {"s0": 0.4, "s1": 0.4}
    (c,) = superiority_family({"x": (a, b)}).values()
    walsh = [0.1, 0.15, 0.2]  # (d_i + d_j) / 2 over i <= j of d = (0.1, 0.2)
    assert c.shift == pytest.approx(np.median(walsh)) and not c.reachable and c.n == 2
    assert c.interval() == "+0.150 [-inf, +inf]"
