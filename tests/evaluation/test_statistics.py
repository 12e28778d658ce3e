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
