"""Do methods agree? Spearman correlation of scores and Jaccard overlap of pruned sets."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from .collect import method_rank

OVERALL = "__all__"  # layer name of the global comparison (all layers concatenated, as global pruning ranks)
GRANULARITIES = ("unstructured", "structured")


def pruned_set(scores: np.ndarray, ratio: float, order: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the round(ratio·n) lowest-scoring entries (ties: lower index first).
    `order` is a precomputed stable argsort of scores."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    order = np.argsort(scores, kind="stable") if order is None else order
    mask = np.zeros(scores.size, bool)
    mask[order[: int(round(ratio * scores.size))]] = True
    return mask


def average_ranks(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged (scipy.stats.rankdata 'average'), from a stable argsort."""
    sv = values[order]
    new = np.r_[True, sv[1:] != sv[:-1]]
    group = np.cumsum(new)
    bounds = np.r_[np.flatnonzero(new), len(sv)]
    ranks = np.empty(len(values))
    ranks[order] = 0.5 * (bounds[group] + bounds[group - 1] + 1)
    return ranks


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks; NaN when both are empty."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else math.nan


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else math.nan


class _Ranked:
    """Scores of one method; one stable sort per scope (a layer tuple) gives ranks and pruned sets.
    Sorting a multi-layer scope also yields each of its layers' orders (no second sort)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self._order: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._cache: dict = {}

    def sorted(self, layers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(values, stable argsort) of the concatenated layers."""
        if layers not in self._order:
            parts = [self.arrays[n] for n in layers]
            values = parts[0] if len(parts) == 1 else np.concatenate(parts)
            order = np.argsort(values, kind="stable")
            self._order[layers] = values, order
            if len(layers) > 1:  # regroup the global order by layer: a radix sort of small ints
                sizes = [p.size for p in parts]
                ids = np.repeat(np.arange(len(parts), dtype=np.int16 if len(parts) < 2**15 else np.int64), sizes)
                grouped = order[np.argsort(ids[order], kind="stable")]
                start = np.r_[0, np.cumsum(sizes)]
                for i, n in enumerate(layers):
                    if (n,) not in self._order:
                        self._order[(n,)] = parts[i], grouped[start[i]:start[i + 1]] - start[i]
        return self._order[layers]

    def ranks(self, layers):
        if ("r", layers) not in self._cache:
            self._cache[("r", layers)] = average_ranks(*self.sorted(layers))
        return self._cache[("r", layers)]

    def mask(self, layers, ratio):
        if ("m", layers, ratio) not in self._cache:
            values, order = self.sorted(layers)
            self._cache[("m", layers, ratio)] = pruned_set(values, ratio, order)
        return self._cache[("m", layers, ratio)]


def agreement_frame(score_sets: list[dict], ratios) -> pd.DataFrame:
    """One row per (arch, regime, seed, granularity, layer, method pair, ratio): spearman, jaccard.

    Spearman (= scipy.stats.spearmanr: Pearson of average ranks) does not depend on the ratio; the
    pruned set at a ratio is the lowest-scoring fraction (ties: lower index first).
    layer == OVERALL compares all layers the two methods share, concatenated.
    """
    ratios = sorted({round(float(r), 4) for r in ratios})
    cols = ["arch", "regime", "seed", "granularity", "layer", "method_a", "method_b", "ratio", "n",
            "spearman", "jaccard"]
    rows = []
    groups: dict[tuple, dict[str, dict]] = {}
    for s in score_sets:
        groups.setdefault((s["arch"], s["regime"], s["seed"]), {})[s["method"]] = s
    for (arch, regime, seed), by_method in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        methods = sorted(by_method, key=method_rank)
        for gran in GRANULARITIES:
            ranked = {m: _Ranked({n: e[gran] for n, e in by_method[m]["layers"].items() if e.get(gran) is not None})
                      for m in methods}
            for a, b in itertools.combinations(methods, 2):
                ra, rb = ranked[a], ranked[b]
                order = [n for n in ra.arrays if n in rb.arrays]  # layer order of method a's file
                if not order:
                    continue
                for n in order:
                    if ra.arrays[n].shape != rb.arrays[n].shape:
                        raise ValueError(f"{arch}/{regime}/seed{seed} {gran} layer {n!r}: {a} scores "
                                         f"{ra.arrays[n].shape} vs {b} scores {rb.arrays[n].shape}")
                for layer, layers in [(OVERALL, tuple(order))] + [(n, (n,)) for n in order]:
                    rho = _pearson(ra.ranks(layers), rb.ranks(layers))
                    size = ra.sorted(layers)[0].size
                    for r in ratios:
                        jac = jaccard(ra.mask(layers, r), rb.mask(layers, r))
                        rows.append([arch, regime, seed, gran, layer, a, b, r, size, rho, jac])
    return pd.DataFrame(rows, columns=cols)


def agreement_mean(df: pd.DataFrame) -> pd.DataFrame:
    """Average over seeds: spearman/jaccard mean and std (ddof=1) and n_seeds."""
    keys = ["arch", "regime", "granularity", "layer", "method_a", "method_b", "ratio"]
    if df.empty:
        return pd.DataFrame(columns=keys + ["n_seeds", "spearman_mean", "spearman_std",
                                            "jaccard_mean", "jaccard_std"])
    g = df.groupby(keys, sort=False)
    out = g.agg(n_seeds=("seed", "nunique"), spearman_mean=("spearman", "mean"),
                spearman_std=("spearman", "std"), jaccard_mean=("jaccard", "mean"),
                jaccard_std=("jaccard", "std"))
    return out.reset_index()
