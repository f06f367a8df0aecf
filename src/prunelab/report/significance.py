"""Paired tests across seeds, multiple-comparison corrections, intervals, power, and the across-settings
statistics (curve areas, Friedman, Nemenyi)."""
from __future__ import annotations

import math
import warnings

import numpy as np

ALPHA = 0.05
TEST = "paired t-test"  # the one test of every comparison (summary.csv `test`); scipy.stats.ttest_rel


def paired_test(a, b) -> tuple[float, str | None]:
    """Two-sided paired t-test of a vs b (aligned per seed): (p, TEST); (NaN, None) below 2 pairs.

    The paired t-test at every n ≥ 2, because its power grows with every seed: the exact Wilcoxon signed-rank
    test cannot give p below 2/2ⁿ (0.031 at 6 pairs), which no correction over a table of comparisons lets
    pass. Equal samples give p = 1; a constant non-zero difference (zero spread) gives p = 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two aligned 1-d samples, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return math.nan, None
    d = a - b
    if np.all(d == 0):
        return 1.0, TEST
    if np.all(d == d[0]):
        return 0.0, TEST
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_rel(a, b).pvalue
    return float(p), TEST


# ---- multiple comparisons, intervals, power ----------------------------------------------------

CORRECTIONS = {"holm": "Holm step-down (family-wise error)", "bh": "Benjamini–Hochberg (false discovery rate)",
               "none": "none (raw p)"}
POWER = 0.8


def adjust_p(p, method: str) -> np.ndarray:
    """Multiplicity-adjusted p-values of one family ('holm', 'bh' or 'none'); NaNs stay NaN and are not counted."""
    if method not in CORRECTIONS:
        raise ValueError(f"report.correction must be one of {sorted(CORRECTIONS)}, got {method!r}")
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0 or method == "none":
        out[ok] = p[ok]
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ps))
    else:
        adj = np.minimum.accumulate(np.minimum(1.0, m / np.arange(1, m + 1) * ps)[::-1])[::-1]
    out[order] = adj
    return out


def paired_delta(a, b, confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """Mean of a − b (paired), its t-interval (scipy.stats.ttest_rel(a, b).confidence_interval) and the sd of the
    differences: (mean, lo, hi, sd, n). Interval NaN below 2 pairs; a zero-spread difference has lo = hi = mean."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    sd = float(d.std(ddof=1))
    if sd == 0:
        return mean, mean, mean, 0.0, n
    from scipy import stats

    ci = stats.ttest_rel(a, b).confidence_interval(confidence)
    return mean, float(ci.low), float(ci.high), sd, n


def t_interval(x, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of x and its one-sample t-interval: (mean, lo, hi, n)."""
    x = np.asarray(x, float)
    mean, lo, hi, _, n = paired_delta(x, np.zeros_like(x), confidence)
    return mean, lo, hi, n


def paired_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs at level alpha for a standardized effect (true mean
    difference / sd of the differences): P(|T| > t_{1−α/2, n−1}), T noncentral t (n − 1 df, δ = effect·√n)."""
    from scipy import stats

    df = n - 1
    tc = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n)
    upper, lower = float(stats.nct.sf(tc, df, nc)), float(stats.nct.cdf(-tc, df, nc))
    return upper + (lower if np.isfinite(lower) else 0.0)  # scipy's nct gives NaN for a vanishing far tail


def family_level(m: int, correction: str, alpha: float = ALPHA) -> float:
    """The raw-p level one comparison must reach to pass a family of m corrected together, when it is the only
    real difference there: Holm's strictest (first) step α/m; BH's step for the smallest p, α·1/m; none: α."""
    if correction not in CORRECTIONS:
        raise ValueError(f"report.correction must be one of {sorted(CORRECTIONS)}, got {correction!r}")
    return alpha if correction == "none" or m <= 1 else alpha / m


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest true mean difference the two-sided paired t-test (n pairs, level alpha) detects with `power`, for
    a paired spread sd (same unit as sd); NaN below 2 pairs or without a finite sd. For a table, alpha is
    `family_level` (the level its correction applies) and sd the median paired sd of its tested comparisons."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    from scipy.optimize import brentq

    hi = 1.0
    while paired_power(hi, n, alpha) < power:
        hi *= 2
    d = brentq(lambda e: paired_power(e, n, alpha) - power, 1e-6, hi, xtol=1e-10)
    return float(d * sd)


# ---- across settings: curve areas, Friedman, Nemenyi ------------------------------------------

def log_auc(compression, top1) -> float:
    """Trapezoid area under top-1 (%) vs ln(compression) (points sorted by compression); unit %·ln(×)."""
    x, y = np.log(np.asarray(compression, float)), np.asarray(top1, float)
    o = np.argsort(x, kind="mergesort")
    x, y = x[o], y[o]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def friedman(values: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Friedman test on an N settings × k methods matrix (higher = better, rank 1 = best per setting).

    Returns (mean rank per method, χ²_F with scipy's tie correction, its p (χ², k−1 df), Iman–Davenport F)."""
    from scipy import stats

    v = np.asarray(values, float)
    n, k = v.shape
    ranks = np.vstack([stats.rankdata(-row) for row in v])
    mean_rank = ranks.mean(axis=0)
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(mean_rank ** 2) - k * (k + 1) ** 2 / 4)
    ties = sum(float(np.sum(c ** 3 - c)) for row in ranks for c in [np.unique(row, return_counts=True)[1]])
    corr = 1 - ties / (n * k * (k * k - 1))
    chi2 = chi2 / corr if corr > 0 else math.nan
    p = float(stats.chi2.sf(chi2, k - 1)) if np.isfinite(chi2) else math.nan
    denom = n * (k - 1) - chi2
    ff = (n - 1) * chi2 / denom if denom > 0 else math.inf
    return mean_rank, float(chi2), p, float(ff)


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """Demšar's (2006) q_α for k methods: studentized range quantile (∞ df) / √2."""
    from scipy import stats

    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


# Demšar (2006, §3.2.2): the Friedman statistic's χ² approximation holds "when N and k are big enough (as a rule of
# a thumb, N > 10 and k > 5)"; below that the report gives mean ranks with their spread and no test.
FRIEDMAN_MIN_BLOCKS, FRIEDMAN_MIN_METHODS = 11, 6


def friedman_applies(n_blocks: int, k: int) -> bool:
    """Demšar's rule of thumb for the Friedman test (and so the Nemenyi CD): N > 10 blocks and k > 5 methods."""
    return n_blocks >= FRIEDMAN_MIN_BLOCKS and k >= FRIEDMAN_MIN_METHODS


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of mean ranks: q_α √(k(k+1)/(6N)) for k methods over n settings."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))
