"""Paired tests across seeds: does a method differ from magnitude?"""
from __future__ import annotations

import math
import warnings

import numpy as np

ALPHA = 0.05
WILCOXON_MIN_PAIRS = 6  # Wilcoxon signed-rank from this many pairs on, paired t-test below
TEST_NAMES = {
    "t": "paired t-test (scipy.stats.ttest_rel)",
    "wilcoxon": "Wilcoxon signed-rank test (scipy.stats.wilcoxon)",
}


def test_for(n_pairs: int) -> str | None:
    """Which test a number of pairs gets: 't', 'wilcoxon', or None (fewer than 2 pairs)."""
    if n_pairs < 2:
        return None
    return "wilcoxon" if n_pairs >= WILCOXON_MIN_PAIRS else "t"


def paired_test(a, b) -> tuple[float, str | None]:
    """Two-sided paired test of a vs b (aligned per seed): (p, test). p is NaN when undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two aligned 1-d samples, got {a.shape} and {b.shape}")
    test = test_for(len(a))
    if test is None:
        return math.nan, None
    from scipy import stats

    d = a - b
    if np.all(d == 0):
        return 1.0, test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "t":
            p = stats.ttest_rel(a, b).pvalue
        else:
            p = stats.wilcoxon(a, b).pvalue
    return float(p), test
