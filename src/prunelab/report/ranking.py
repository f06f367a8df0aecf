"""Across settings: area under the accuracy-vs-compression curve per method, and the overall ranking
(mean ranks, Friedman test, Nemenyi critical difference, Demšar 2006) with its critical-difference diagram."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import method_rank
from .significance import ALPHA, critical_difference, friedman, log_auc, t_interval

TABLE = ["dataset", "arch", "regime", "gran"]
AUC_COLUMNS = ["dataset", "arch", "regime", "granularity", "method", "style", "ratios", "n_seeds", "auc", "auc_lo",
               "auc_hi", "auc_norm", "auc_norm_lo", "auc_norm_hi"]
RANK_COLUMNS = ["method", "mean_rank", "n_settings"]
ONESHOT = ("pruned", "finetuned")


def auc_frame(sel: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × arch × regime × granularity × method: trapezoid area under test top-1 (%) vs ln(compression)
    over the ratios every method of the table has (methods run at a single ratio left out), per seed, then mean and
    95 % t-interval over seeds.

    auc: %·ln(×); auc_norm: auc / ln-compression width (the curve's mean top-1, %). Tables where the methods share
    fewer than two ratios are left out."""
    d = sel[sel["stage"].isin(ONESHOT)] if not sel.empty else sel
    rows = []
    for (ds, arch, regime, gran), t in d.groupby(TABLE, sort=False, dropna=False):
        per = {lab: set(g["ratio"].dropna()) for lab, g in t.groupby("label", sort=False)}
        per = {lab: r for lab, r in per.items() if len(r) >= 2}  # a single point has no curve
        shared = sorted(set.intersection(*per.values())) if per else []
        if len(shared) < 2:
            continue
        for lab, g in t.groupby("label", sort=False):
            if lab not in per:
                continue
            g = g[g["ratio"].isin(shared)]
            areas, norms = [], []
            for _, s in g.groupby("seed"):
                c = s.groupby("ratio")[["compression", "top1_test"]].mean()
                if len(c) < len(shared) or not np.all(np.isfinite(c.to_numpy(float))):
                    continue
                a = log_auc(c["compression"], c["top1_test"])
                width = math.log(c["compression"].max()) - math.log(c["compression"].min())
                areas.append(a)
                norms.append(a / width if width > 0 else math.nan)
            m, lo, hi, n = t_interval(areas)
            nm, nlo, nhi, _ = t_interval(norms)
            rows.append(dict(dataset=ds, arch=arch, regime=regime, granularity=gran, method=lab,
                             style=g["style"].iloc[0], ratios=" ".join(f"{r:g}" for r in shared), n_seeds=n,
                             auc=m, auc_lo=lo, auc_hi=hi, auc_norm=nm, auc_norm_lo=nlo, auc_norm_hi=nhi))
    grank = {"unstructured": 0, "structured": 1}
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["arch"]), str(r["regime"]),
                             grank.get(r["granularity"], 2), str(r["granularity"]),
                             method_rank(r["method"], r["style"])))
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


def rank_frame(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Mean rank (1 = best mean top-1) of each method over every (dataset, arch, regime, granularity, ratio)
    setting of the one-shot tables that holds at least half the methods, among the methods present in all of
    those settings.

    Returns (frame method/mean_rank/n_settings, info {k, n, chi2, p, iman_davenport, cd, dropped})."""
    s = summary[summary["stage"].isin(ONESHOT)] if not summary.empty else summary
    info = dict(k=0, n=0, chi2=math.nan, p=math.nan, iman_davenport=math.nan, cd=math.nan, dropped=[],
                settings_dropped=0)
    if s.empty:
        return pd.DataFrame(columns=RANK_COLUMNS), info
    key = ["dataset", "arch", "regime", "granularity", "ratio"]
    wide = s.pivot_table(index=key, columns="method", values="top1_mean", aggfunc="mean")
    # settings holding fewer than half the methods (e.g. a regime run with one method only) are left out
    # first, so that they cannot remove every other method from the ranking
    present = wide.notna().sum(axis=1)
    rows = present >= present.max() / 2
    info["settings_dropped"] = int((~rows).sum())
    wide = wide[rows]
    complete = [m for m in wide.columns if wide[m].notna().all()]
    info["dropped"] = sorted(set(wide.columns) - set(complete))
    wide = wide[sorted(complete, key=method_rank)]
    if wide.shape[1] < 2 or wide.shape[0] < 2:
        return pd.DataFrame(columns=RANK_COLUMNS), info
    ranks, chi2, p, ff = friedman(wide.to_numpy(float))
    k, n = wide.shape[1], wide.shape[0]
    info.update(k=k, n=n, chi2=chi2, p=p, iman_davenport=ff, cd=critical_difference(k, n))
    out = pd.DataFrame(dict(method=list(wide.columns), mean_rank=ranks, n_settings=n))
    return out.sort_values("mean_rank", kind="mergesort").reset_index(drop=True), info


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
    differ by less than the Nemenyi CD (α = 0.05)."""
    from .style import method_style, new_figure

    if ranks.empty:
        return "fewer than two methods present in every setting (or fewer than two settings)"
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
    ax.set_title(f"Mean rank of test top-1 over {info['n']} settings (1 = best)\nFriedman χ² = {info['chi2']:.2f}, "
                 f"p = {info['p']:.3g}; bars: no significant difference (Nemenyi, α = {ALPHA})", fontsize="medium")
    return fig


def sections(auc: pd.DataFrame, ranks: pd.DataFrame, info: dict) -> list:
    """Report sections: curve areas per table, and the overall ranking with its Friedman test."""
    from .render import Section, fmt_num

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
        for (ds, arch, regime, gran), g in auc.groupby(["dataset", "arch", "regime", "granularity"], sort=False):
            rows = [[(str(r["method"]), False), (str(r["n_seeds"]), False), (ci(r["auc"], r["auc_lo"], r["auc_hi"]),
                     False), (ci(r["auc_norm"], r["auc_norm_lo"], r["auc_norm_hi"]), False)] for _, r in g.iterrows()]
            out.append(Section(f"Curve area: {arch} · {ds} · {regime} · {gran}",
                               f"Ratios {g['ratios'].iloc[0]}.", ["method", "n", "area (%·ln ×) [95 % CI]",
                                                                   "mean top-1 over the curve (%) [95 % CI]"],
                               rows, level=3))
    if ranks.empty:
        out.append(Section("Overall ranking", "Skipped: fewer than two methods present in every setting, or fewer "
                                              "than two settings."))
        return out
    dropped = f" Left out (missing in some setting): {', '.join(info['dropped'])}." if info["dropped"] else ""
    if info.get("settings_dropped"):
        dropped += (f" Settings left out (holding fewer than half the methods): {info['settings_dropped']}.")
    out.append(Section("Overall ranking",
                       f"Mean rank of test top-1 (mean over seeds; 1 = best, ties averaged) over {info['n']} settings "
                       f"(dataset × arch × regime × granularity × ratio) for {info['k']} methods. Friedman test: "
                       f"χ²_F = {info['chi2']:.2f} ({info['k'] - 1} df), p = {info['p']:.3g} (Iman–Davenport "
                       f"F = {info['iman_davenport']:.2f}). Nemenyi critical difference at α = {ALPHA}: "
                       f"{info['cd']:.2f} (Demšar 2006): methods whose mean ranks differ by less are not "
                       f"distinguishable; see figures/critical_difference.png.{dropped}",
                       ["method", "mean rank", "settings"],
                       [[(str(r["method"]), i == 0), (f"{r['mean_rank']:.2f}", i == 0), (str(r["n_settings"]), False)]
                        for i, (_, r) in enumerate(ranks.iterrows())]))
    return out
