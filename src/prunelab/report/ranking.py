"""Across settings: area under the accuracy-vs-compression curve per method, the overall ranking over independent
blocks (one per curve and budget; Friedman test and Nemenyi critical difference only where Demšar 2006's rule of
thumb holds) with its critical-difference diagram, and the order of methods between fine-tuning budgets."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import method_rank
from .significance import (ALPHA, FRIEDMAN_MIN_BLOCKS, FRIEDMAN_MIN_METHODS, critical_difference, friedman,
                           friedman_applies, log_auc, t_interval)

TABLE = ["dataset", "arch", "regime", "gran", "target", "budget"]
CURVE = ["dataset", "arch", "regime", "granularity", "target"]
BLOCK = CURVE + ["budget"]  # one block of the ranking: a curve at one fine-tuning budget
AUC_COLUMNS = ["dataset", "arch", "regime", "granularity", "target", "budget", "method", "style", "ratios", "n_seeds",
               "auc", "auc_lo", "auc_hi", "auc_norm", "auc_norm_lo", "auc_norm_hi"]
RANK_COLUMNS = ["method", "mean_rank", "rank_sd", "rank_min", "rank_max", "n_blocks"]
BUDGET_COLUMNS = CURVE + ["budget_a", "budget_b", "n_methods", "ratios", "spearman", "spearman_p", "kendall",
                          "kendall_p"]
ONESHOT = ("pruned", "finetuned")


def auc_frame(sel: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × arch × regime × granularity × method: trapezoid area under test top-1 (%) vs ln(compression)
    over the ratios every method of the table has (methods run at a single ratio left out), per seed, then mean and
    95 % t-interval over seeds.

    auc: %·ln(×); auc_norm: auc / ln-compression width (the curve's mean top-1, %). Tables where the methods share
    fewer than two ratios are left out."""
    d = sel[sel["stage"].isin(ONESHOT)] if not sel.empty else sel
    rows = []
    for (ds, arch, regime, gran, target, budget), t in d.groupby(TABLE, sort=False, dropna=False):
        per = {lab: set(g["ratio"].dropna()) for lab, g in t.groupby("label", sort=False)}
        per = {lab: r for lab, r in per.items() if len(r) >= 2}  # a single point has no curve
        shared = sorted(set.intersection(*per.values())) if per else []
        if len(shared) < 2:
            continue
        for lab, g in t.groupby("label", sort=False):
            if lab not in per:
                continue
            g = g[g["ratio"].isin(shared)]
            points: dict = {}  # seed -> ratio -> [(compression, top-1)]
            comp = pd.to_numeric(g["compression"], errors="coerce").to_numpy(float, na_value=np.nan)
            top1 = pd.to_numeric(g["top1_test"], errors="coerce").to_numpy(float, na_value=np.nan)
            for seed, r, c, y in zip(g["seed"].tolist(), g["ratio"].tolist(), comp, top1):
                points.setdefault(seed, {}).setdefault(r, []).append((c, y))
            areas, norms = [], []
            for seed in sorted(points):
                c = np.array([np.mean(points[seed][r], axis=0) for r in sorted(points[seed])])
                if len(c) < len(shared) or not np.all(np.isfinite(c)):
                    continue
                a = log_auc(c[:, 0], c[:, 1])
                width = math.log(c[:, 0].max()) - math.log(c[:, 0].min())
                areas.append(a)
                norms.append(a / width if width > 0 else math.nan)
            m, lo, hi, n = t_interval(areas)
            nm, nlo, nhi, _ = t_interval(norms)
            rows.append(dict(dataset=ds, arch=arch, regime=regime, granularity=gran, target=target, budget=budget,
                             method=lab,
                             style=g["style"].iloc[0], ratios=" ".join(f"{r:g}" for r in shared), n_seeds=n,
                             auc=m, auc_lo=lo, auc_hi=hi, auc_norm=nm, auc_norm_lo=nlo, auc_norm_hi=nhi))
    grank = {"unstructured": 0, "structured": 1}
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["arch"]), str(r["regime"]),
                             grank.get(r["granularity"], 2), str(r["granularity"]), str(r["target"]),
                             r["budget"] if np.isfinite(r["budget"]) else -1.0, method_rank(r["method"], r["style"])))
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


def _block_means(g: pd.DataFrame) -> tuple[pd.Series, list[float]]:
    """One block's value per method: mean top-1 over the ratios every method of the block has (methods holding
    fewer than half of the block's ratios left out first, so that they cannot shrink the others' curve)."""
    wide = g.pivot_table(index="ratio", columns="method", values="top1_mean", aggfunc="mean")
    counts = wide.notna().sum()
    wide = wide[counts.index[counts >= counts.max() / 2]]
    shared = wide.dropna()
    return shared.mean(), sorted(shared.index)


def block_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per block (curve · budget; `block` numbers them) × method: its value (`_block_means`) and rank in the block
    (1 = best, ties averaged). Rows identical to another method's are not a method of their own (left out)."""
    from scipy import stats

    cols = ["block"] + BLOCK + ["method", "ratios", "value", "rank"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary[summary["stage"].isin(ONESHOT) & (summary["verdict"] != "identical")]
    rows = []
    block = 0
    for key, g in s.groupby(BLOCK, sort=False, dropna=False):
        means, ratios = _block_means(g)
        if len(means) == 0 or not ratios:
            continue
        ranks = stats.rankdata(-means.to_numpy(float))
        for (m, v), r in zip(means.items(), ranks):
            rows.append([block, *key, m, " ".join(f"{x:g}" for x in ratios), float(v), float(r)])
        block += 1
    return pd.DataFrame(rows, columns=cols)


def rank_frame(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Mean rank (1 = best) of each method over independent blocks: one per curve (dataset · arch · regime ·
    granularity · target) and budget, valued at matched cost (`_block_means`). Blocks holding fewer than half the
    methods of the fullest block are left out (a regime run with few methods); the methods ranked are those
    present in every block kept. Friedman + Nemenyi CD only where Demšar's (2006) rule of thumb holds
    (`friedman_applies`); otherwise mean ranks with their spread and no test.

    Returns (frame method/mean_rank/rank_sd/rank_min/rank_max/n_blocks, info {k, n, applies, chi2, p,
    iman_davenport, cd, dropped, blocks_dropped, blocks})."""
    blocks = block_frame(summary)
    info = dict(k=0, n=0, applies=False, chi2=math.nan, p=math.nan, iman_davenport=math.nan, cd=math.nan,
                dropped=[], blocks_dropped=0, blocks=blocks)
    if blocks.empty:
        return pd.DataFrame(columns=RANK_COLUMNS), info
    wide = blocks.pivot(index="block", columns="method", values="value")
    present = wide.notna().sum(axis=1)
    keep = present >= present.max() / 2
    info["blocks_dropped"] = int((~keep).sum())
    wide = wide[keep]
    complete = [m for m in wide.columns if wide[m].notna().all()]
    info["dropped"] = sorted(set(wide.columns) - set(complete), key=method_rank)
    wide = wide[sorted(complete, key=method_rank)]
    if wide.shape[1] < 2 or wide.shape[0] < 1:
        return pd.DataFrame(columns=RANK_COLUMNS), info
    from scipy import stats

    v = wide.to_numpy(float)
    ranks = np.vstack([stats.rankdata(-row) for row in v])
    k, n = v.shape[1], v.shape[0]
    info.update(k=k, n=n, applies=friedman_applies(n, k))
    if info["applies"]:
        _, chi2, p, ff = friedman(v)
        info.update(chi2=chi2, p=p, iman_davenport=ff, cd=critical_difference(k, n))
    out = pd.DataFrame(dict(method=list(wide.columns), mean_rank=ranks.mean(axis=0),
                            rank_sd=ranks.std(axis=0, ddof=1) if n > 1 else np.full(k, math.nan),
                            rank_min=ranks.min(axis=0), rank_max=ranks.max(axis=0), n_blocks=n))
    return out.sort_values("mean_rank", kind="mergesort").reset_index(drop=True), info


def budget_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Does a curve's order of methods survive a longer fine-tuning budget? Per curve with ≥ 2 budgets, each
    budget against the largest: Spearman ρ and Kendall τ (scipy, with their p) of the methods' mean top-1 over
    the ratios both budgets' blocks share."""
    from scipy import stats

    if summary.empty:
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    s = summary[(summary["stage"] == "finetuned") & (summary["verdict"] != "identical")]
    rows = []
    for key, c in s.groupby(CURVE, sort=False, dropna=False):
        budgets = sorted(b for b in c["budget"].unique() if np.isfinite(b))
        if len(budgets) < 2:
            continue
        top = budgets[-1]
        for b in budgets[:-1]:
            pair = c[c["budget"].isin((b, top))]
            wide = pair.pivot_table(index=["budget", "ratio"], columns="method", values="top1_mean", aggfunc="mean")
            ratios = sorted(set(wide.loc[b].dropna(axis=1, how="all").dropna().index)
                            & set(wide.loc[top].dropna(axis=1, how="all").dropna().index))
            methods = [m for m in wide.columns
                       if all(np.isfinite(wide.loc[(x, r), m]) for x in (b, top) for r in ratios)]
            if len(methods) < 3 or not ratios:
                continue
            va = [float(np.mean([wide.loc[(b, r), m] for r in ratios])) for m in methods]
            vb = [float(np.mean([wide.loc[(top, r), m] for r in ratios])) for m in methods]
            rho, tau = stats.spearmanr(va, vb), stats.kendalltau(va, vb)
            rows.append([*key, b, top, len(methods), " ".join(f"{r:g}" for r in ratios), float(rho.statistic),
                         float(rho.pvalue), float(tau.statistic), float(tau.pvalue)])
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def cliques(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of sorted mean ranks whose span is below cd (no significant difference inside)."""
    r = np.sort(np.asarray(ranks, float))
    runs = []
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


def cd_diagram(ranks: pd.DataFrame, info: dict):
    """Critical-difference diagram: methods on a mean-rank axis (1 = best, left), bars join methods whose mean ranks
    differ by less than the Nemenyi CD (α = 0.05); only where the Friedman test applies (`friedman_applies`)."""
    from .style import method_style, new_figure

    if ranks.empty:
        return "fewer than two methods present in every block (or no block)"
    if not info["applies"]:
        return (f"{info['n']} blocks and {info['k']} methods: Friedman and Nemenyi need N > {FRIEDMAN_MIN_BLOCKS - 1} "
                f"blocks and k > {FRIEDMAN_MIN_METHODS - 1} methods (Demšar 2006, §3.2.2)")
    k = info["k"]
    names, r = list(ranks["method"]), ranks["mean_rank"].to_numpy(float)
    half = (k + 1) // 2
    fig, axes = new_figure(1, 1, w=max(7.0, 1.0 * k + 4), h=2.2 + 0.3 * half)
    ax = axes[0, 0]
    ax.set_xlim(-1.2, k + 2.2)
    ax.set_ylim(-half * 0.55 - 0.6, 1.7)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", lw=1)
    for t in range(1, k + 1):
        ax.vlines(t, 0, 0.12, color="black", lw=1)
        ax.text(t, 0.2, str(t), ha="center", va="bottom", fontsize="small")
    for i, (name, v) in enumerate(zip(names, r)):
        left = i < half
        y = -(i + 1 if left else k - i) * 0.55 - 0.3
        x_text = 0.7 if left else k + 0.3
        color = method_style(name.split(" ")[0].split("-")[0], name)["color"]
        ax.plot([v, v, x_text], [0, y, y], color=color, lw=1)
        ax.text(x_text, y, f"{name} ({v:.2f})", ha="right" if left else "left", va="center", fontsize="small",
                color=color)
    for n_bar, (i, j) in enumerate(cliques(r, info["cd"])):
        y = -0.15 - 0.12 * n_bar
        ax.hlines(y, r[i] - 0.03, r[j] + 0.03, color="black", lw=3)
    ax.hlines(1.2, 1, 1 + info["cd"], color="black", lw=2)
    ax.text(1 + info["cd"] / 2, 1.3, f"CD = {info['cd']:.2f}", ha="center", va="bottom", fontsize="small")
    ax.set_title(f"Mean rank of test top-1 over {info['n']} blocks (curve · budget; 1 = best)\nFriedman χ² = "
                 f"{info['chi2']:.2f}, p = {info['p']:.3g}; bars: no significant difference (Nemenyi, α = {ALPHA})",
                 fontsize="medium")
    return fig


def ranking_text(info: dict) -> str:
    """What the ranking is over and which test it got, for the report and the README."""
    head = (f"Mean rank of test top-1 (1 = best, ties averaged) over {info['n']} block{'s' if info['n'] != 1 else ''}, "
            f"one per curve (dataset · "
            f"arch · regime · granularity · target) and fine-tuning budget (ratios along one curve are not "
            f"independent settings), each valued by the mean top-1 over the ratios every method of the block has: "
            f"matched cost where a ratio is a cost (unstructured: weights; structured: a params or MACs target), not "
            f"where it is a fraction of units; {info['k']} methods, those present in every block kept (blocks "
            f"holding fewer than half the methods of the fullest block are left out).")
    if info["applies"]:
        return head + (f" Friedman test: χ²_F = {info['chi2']:.2f} ({info['k'] - 1} df), p = {info['p']:.3g} "
                       f"(Iman–Davenport F = {info['iman_davenport']:.2f}); Nemenyi critical difference at "
                       f"α = {ALPHA}: {info['cd']:.2f} (Demšar 2006): methods whose mean ranks differ by less are "
                       "not distinguishable.")
    return head + (f" No Friedman test or critical difference: Demšar (2006, §3.2.2) gives N > "
                   f"{FRIEDMAN_MIN_BLOCKS - 1} blocks and k > {FRIEDMAN_MIN_METHODS - 1} methods as the rule of thumb "
                   f"for its χ² approximation, and here N = {info['n']}, k = {info['k']}; the spread of each "
                   "method's rank over the blocks is given instead.")


def sections(auc: pd.DataFrame, ranks: pd.DataFrame, info: dict, budgets: pd.DataFrame) -> list:
    """Report sections: curve areas per table, the overall ranking, and the order of methods between budgets."""
    from .render import Section, curve_title, fmt_num

    def ci(m, lo, hi):
        return fmt_num(m) + (f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else "")

    out = []
    if auc.empty:
        out.append(Section("Curve areas", "Skipped: no table whose methods share two or more ratios."))
    else:
        out.append(Section("Curve areas", "Area under test top-1 vs ln(compression) (trapezoid over the ratios every "
                                          "method of the table has; per seed, then mean [95 % t-interval] over "
                                          "seeds); also as the curve's mean top-1 (area / ln-compression width). "
                                          "In curve_area.csv."))
        for _, g in auc.groupby(CURVE + ["budget"], sort=False, dropna=False):
            rows = [[(str(r["method"]), False), (str(r["n_seeds"]), False), (ci(r["auc"], r["auc_lo"], r["auc_hi"]),
                     False), (ci(r["auc_norm"], r["auc_norm_lo"], r["auc_norm_hi"]), False)] for _, r in g.iterrows()]
            out.append(Section(f"Curve area: {curve_title(g.iloc[0])}",
                               f"Ratios {g['ratios'].iloc[0]}.", ["method", "n", "area (%·ln ×) [95 % CI]",
                                                                   "mean top-1 over the curve (%) [95 % CI]"],
                               rows, level=3))
    if ranks.empty:
        out.append(Section("Overall ranking", "Skipped: fewer than two methods present in every block, or no block."))
    else:
        dropped = f" Left out (missing in some block): {', '.join(info['dropped'])}." if info["dropped"] else ""
        if info.get("blocks_dropped"):
            dropped += f" Blocks left out (holding fewer than half the methods): {info['blocks_dropped']}."
        fig = " See figures/critical_difference.png." if info["applies"] else ""
        out.append(Section("Overall ranking", ranking_text(info) + dropped + fig + " Per block in ranking_blocks.csv.",
                           ["method", "mean rank", "sd", "range", "blocks"],
                           [[(str(r["method"]), i == 0), (f"{r['mean_rank']:.2f}", i == 0),
                             (fmt_num(r["rank_sd"]), False), (f"{r['rank_min']:g}–{r['rank_max']:g}", False),
                             (str(r["n_blocks"]), False)]
                            for i, (_, r) in enumerate(ranks.iterrows())]))
    if not budgets.empty:
        out.append(Section("Order of methods between budgets",
                           "Per curve: rank correlation of the methods' mean top-1 (over the ratios both budgets "
                           "share) between a budget and the largest (scipy.stats.spearmanr, kendalltau; p as scipy "
                           "gives it). In budget_ranks.csv.",
                           ["curve", "budgets (steps)", "methods", "Spearman ρ (p)", "Kendall τ (p)"],
                           [[(curve_title(r, budget=False), False), (f"{r['budget_a']:g} vs {r['budget_b']:g}", False),
                             (str(r["n_methods"]), False), (f"{r['spearman']:.2f} ({r['spearman_p']:.2g})", False),
                             (f"{r['kendall']:.2f} ({r['kendall_p']:.2g})", False)] for _, r in budgets.iterrows()]))
    return out
