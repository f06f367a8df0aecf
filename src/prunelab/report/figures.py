"""Accuracy figures: top-1 vs compression/speedup, fine-tuning recovery, speedups, layer profiles."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import method_rank
from .style import BASELINE_COLOR, chunk_series, finish_figure, new_figure, panel_title, series_styles

GRAN_ORDER = ("unstructured", "structured")


def granularities_in(values) -> list[str]:
    present = [v for v in pd.unique(values)]
    return [g for g in GRAN_ORDER if g in present] + sorted(str(g) for g in present if g not in GRAN_ORDER)


def methods_in(frame: pd.DataFrame, label="method", style="style") -> list[tuple[str, str]]:
    pairs = {(lab, st) for lab, st in zip(frame[label], frame[style])}
    return sorted(pairs, key=lambda p: method_rank(*p))


def finite_rows(*cols) -> np.ndarray:
    return np.logical_and.reduce([np.isfinite(pd.to_numeric(c, errors="coerce").astype(float)) for c in cols])


def logx(ax) -> None:
    """Log x axis with plain tick labels at 1, 2, 5 × 10^k (no overlapping minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def logx_if_wide(ax, values) -> None:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / v.min() > 10:
        logx(ax)


def at_budget(frame: pd.DataFrame, budget) -> pd.Series:
    """Rows of `frame` at a fine-tuning budget (NaN: not recorded)."""
    b = frame["budget"].astype(float)
    return b.isna() if pd.isna(budget) else b == float(budget)


def accuracy(summary: pd.DataFrame, base: pd.DataFrame, x: str, reference: str | None = None,
             regime: str | None = None):
    """Test top-1 vs `x` ('compression' or 'speedup_theoretical' = MACs reduction): a row of panels per curve
    (dataset · arch · regime · granularity · target; only `regime` where given and present), a panel per
    fine-tuning budget and per group of at most 7 methods (the reference in each; variants as shades of their
    method's colour), mean ± std over seeds, baseline as a band; controls (scratch, gradual) as their own points."""
    from .render import curve_title

    if summary.empty:
        return "no pruned or fine-tuned models yet"
    s = summary[finite_rows(summary[f"{x}_mean"], summary["top1_mean"])]
    if regime is not None and (s["regime"] == regime).any():
        s = s[s["regime"] == regime]
    if s.empty:
        return f"no model has both {x} and test top-1"
    curve = ["dataset", "arch", "regime", "granularity", "target"]
    layout = []
    for key, c in s.groupby(curve, sort=False):
        one = c[c["family"] == "one-shot"]
        budgets = sorted(one["budget"].unique(), key=lambda v: -1.0 if pd.isna(v) else float(v)) or [np.nan]
        chunks = chunk_series(methods_in(c), reference)
        layout.append((key, c, [(b, ch, k, len(chunks)) for b in budgets for k, ch in enumerate(chunks)]))
    fig, axes = new_figure(len(layout), max(len(p) for *_, p in layout))
    styles = series_styles(methods_in(s))
    xlabel = "compression (×, log scale)" if x == "compression" else "MACs reduction (dense / pruned MACs, ×)"
    for i, ((ds, arch, regime_, gran, target), c, panels) in enumerate(layout):
        b = base[(base["dataset"] == ds) & (base["arch"] == arch) & (base["regime"] == regime_)] \
            if not base.empty else base
        for j in range(len(panels), axes.shape[1]):
            axes[i, j].set_axis_off()
        for j, (budget, chunk, k, n_chunks) in enumerate(panels):
            ax = axes[i, j]
            if len(b) and np.isfinite(b["top1_test_mean"].iloc[0]):
                m, sd = b["top1_test_mean"].iloc[0], np.nan_to_num(b["top1_test_std"].iloc[0])
                ax.axhspan(m - sd, m + sd, color=BASELINE_COLOR, alpha=0.15, lw=0)
                ax.axhline(m, color=BASELINE_COLOR, ls="--", lw=1, label="baseline (mean ± std)")
            p = c[(c["family"] == "controls") | at_budget(c, budget)]
            for lab, st in chunk:
                q = p[p["method"] == lab].sort_values(f"{x}_mean")
                ax.errorbar(q[f"{x}_mean"], q["top1_mean"], xerr=np.nan_to_num(q[f"{x}_std"]),
                            yerr=np.nan_to_num(q["top1_std"]), capsize=2, ms=5, lw=1.2, label=lab, **styles[lab])
            if x == "compression":
                logx(ax)
            else:
                logx_if_wide(ax, c[f"{x}_mean"])
            title = curve_title(dict(dataset=ds, arch=arch, regime=regime_, granularity=gran, target=target,
                                     budget=budget))
            ax.set_title(title + (f" ({k + 1}/{n_chunks})" if n_chunks > 1 else ""), fontsize="small")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test top-1 (%)")
            ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Test top-1 vs " + ("compression" if x == "compression" else "MACs reduction")
                  + " (mean ± std over seeds)")
    return fig


def grid(panels: list, ncols: int = 4):
    """(figure, axes list) for a flat list of panels, `ncols` a row; unused axes switched off."""
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = new_figure(nrows, min(ncols, max(1, len(panels))))
    flat = list(axes.ravel())
    for ax in flat[len(panels):]:
        ax.set_axis_off()
    return fig, axes, flat


def chunked(frame: pd.DataFrame, keys: list[str], label: str = "label", reference: str | None = None) -> list:
    """[(key values, group rows, chunk of (label, style) pairs, chunk number, chunks)]: one panel per group of
    `keys` and per at most 7 of its series (`chunk_series`)."""
    out = []
    for key, g in frame.groupby(keys, sort=False, dropna=False):
        chunks = chunk_series(methods_in(g, label), reference)
        out += [(key if isinstance(key, tuple) else (key,), g, ch, k, len(chunks)) for k, ch in enumerate(chunks)]
    return out


def _part(title: str, k: int, n: int) -> str:
    return title + (f" ({k + 1}/{n})" if n > 1 else "")


def recovery(sel: pd.DataFrame, reference: str | None = None):
    """Top-1 before vs after fine-tuning, one point per model, panel per granularity × budget (and per ≤ 7
    methods)."""
    from .render import fmt_budget

    d = sel[(sel["stage"] == "finetuned") & finite_rows(sel["top1_test_before_finetune"], sel["top1_test"])] \
        if not sel.empty else sel
    if d.empty:
        return "no fine-tuned model with top1_test_before_finetune"
    if (d["regime"] == "standard").any():  # pruning-aware training has its own table
        d = d[d["regime"] == "standard"]
    grank = {g: k for k, g in enumerate(granularities_in(d["gran"]))}
    d = d.assign(_b=d["budget"].astype(float).fillna(-1.0)).sort_values(
        ["gran", "_b"], key=lambda c: c.map(grank) if c.name == "gran" else c, kind="mergesort")
    panels = chunked(d, ["gran", "budget"], reference=reference)
    fig, axes, flat = grid(panels)
    styles = series_styles(methods_in(d, "label"))
    for ax, ((gran, budget), p, chunk, k, n) in zip(flat, panels):
        for lab, _ in chunk:
            q = p[p["label"] == lab]
            sty = styles[lab]
            if sty["marker"] in ("x", "+"):  # unfilled markers take one colour
                paint = dict(color=sty["color"])
            else:  # variants hollow
                paint = dict(facecolors=sty["color"] if sty["linestyle"] == "-" else "none", edgecolors=sty["color"])
            ax.scatter(q["top1_test_before_finetune"], q["top1_test"], s=22, alpha=0.8, label=lab,
                       marker=sty["marker"], **paint)
        lo = float(min(p["top1_test_before_finetune"].min(), p["top1_test"].min()))
        hi = float(max(p["top1_test_before_finetune"].max(), p["top1_test"].max()))
        ax.plot([lo, hi], [lo, hi], color=BASELINE_COLOR, ls=":", lw=1, label="y = x (no recovery)")
        ax.set_title(_part(" · ".join(x for x in (str(gran), fmt_budget(budget)) if x), k, n), fontsize="medium")
        ax.set_xlabel("test top-1 before fine-tuning (%)")
        ax.set_ylabel("test top-1 after fine-tuning (%)")
        ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Recovery by fine-tuning (one point per model)")
    return fig


def speedups(summary: pd.DataFrame, reference: str | None = None):
    """Measured (latency) vs theoretical (MACs) speedup: median over seeds with its spread (IQR of per-round ratios)
    as a bar, hollow where the spread exceeds the effect |speedup − 1|; panel per arch × granularity (and per ≤ 7
    methods), y = x line. Latency does not depend on the fine-tuning budget: the smallest budget's rows."""
    d = summary[finite_rows(summary["speedup_measured_median"], summary["speedup_theoretical_mean"])] \
        if not summary.empty else summary
    if d.empty:
        return "no model with both measured and theoretical speedup"
    first = d.groupby(["dataset", "arch", "granularity"], dropna=False)["budget"].transform(
        lambda b: b.min() if b.notna().any() else np.nan)
    d = d[at_budget(d, np.nan) | (d["budget"] == first)]
    if (d["regime"] == "standard").any():  # pruning-aware training has its own table
        d = d[d["regime"] == "standard"]
    grank = {g: k for k, g in enumerate(granularities_in(d["granularity"]))}
    d = d.sort_values(["dataset", "arch", "granularity"], key=lambda c: c.map(grank) if c.name == "granularity" else c,
                      kind="mergesort")
    panels = chunked(d, ["dataset", "arch", "granularity"], "method", reference)
    fig, axes, flat = grid(panels, ncols=2)
    styles = series_styles(methods_in(d))
    for ax, ((ds, arch, gran), p, chunk, k, n) in zip(flat, panels):
        for lab, _ in chunk:
            q = p[p["method"] == lab]
            sty = styles[lab]
            for noisy, part in q.groupby("speedup_measured_noisy"):
                ax.errorbar(part["speedup_theoretical_mean"], part["speedup_measured_median"],
                            yerr=np.nan_to_num(part["speedup_measured_spread"].to_numpy(float)) / 2, capsize=2,
                            ls="none", marker=sty["marker"], color=sty["color"], ms=5,
                            mfc="none" if noisy else sty["color"], label=lab)
        hi = float(max(p["speedup_theoretical_mean"].max(), p["speedup_measured_median"].max(), 1.0))
        lo = float(min(p["speedup_theoretical_mean"].min(), p["speedup_measured_median"].min(), 1.0))
        ax.plot([lo, hi], [lo, hi], color=BASELINE_COLOR, ls=":", lw=1, label="y = x")
        if hi / lo > 10:
            logx(ax)
            ax.set_yscale("log")
        ax.set_title(_part(f"{arch} · {ds} · {gran}", k, n), fontsize="medium")
        ax.set_xlabel("theoretical speedup (MACs ratio, ×)")
        ax.set_ylabel("measured speedup (latency ratio, ×)")
        ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Measured vs theoretical speedup\nmedian over seeds; bar: IQR of per-round ratios\n"
                             "hollow: spread > effect |speedup − 1|")
    return fig


def layer_kept(df: pd.DataFrame, target: float = 0.5, reference: str | None = None):
    """Per-layer kept fraction for each method at the ratio closest to `target`, panel per arch × granularity (and
    per ≤ 7 methods)."""
    if "layer_kept" not in df:
        return "no metrics.json has layer_kept"
    d = df[[isinstance(v, dict) and len(v) > 0 for v in df["layer_kept"]]]
    d = d[d["stage"].isin(["pruned", "finetuned", "gradual", "scratch"]) & finite_rows(d["ratio"])]
    if d.empty:
        return "no metrics.json has layer_kept"
    if (d["pair_regime"] == "standard").any():
        d = d[d["pair_regime"] == "standard"]
    # one stage per method: pruned if present (kept fractions are fixed at pruning), at the ratio nearest `target`
    d = d.sort_values("stage", key=lambda c: c.map({"pruned": 0, "finetuned": 1}).fillna(2), kind="mergesort")
    parts = []
    for _, p in d.groupby(["dataset", "arch", "gran"], sort=False):
        r = min(sorted(p["ratio"].unique()), key=lambda v: (abs(v - target), v))
        parts.append(p[p["ratio"] == r])
    d = pd.concat(parts)
    grank = {g: k for k, g in enumerate(granularities_in(d["gran"]))}
    d = d.sort_values(["dataset", "arch", "gran"], key=lambda c: c.map(grank) if c.name == "gran" else c,
                      kind="mergesort")
    panels = chunked(d, ["dataset", "arch", "gran"], reference=reference)
    width = max(6.0, 0.25 * max(len(v) for v in d["layer_kept"]))
    fig, axes = new_figure(len(panels), 1, w=width, h=3.4)
    styles = series_styles(methods_in(d, "label"))
    for ax, ((ds, arch, gran), p, chunk, k, n) in zip(axes[:, 0], panels):
        layers: list[str] = list(dict.fromkeys(key for v in p["layer_kept"] for key in v))
        for lab, _ in chunk:
            q = p[p["label"] == lab]
            q = q[q["stage"] == q["stage"].iloc[0]]
            vals = np.array([[v.get(name, np.nan) for name in layers] for v in q["layer_kept"]], float)
            ax.plot(range(len(layers)), 100 * np.nanmean(vals, axis=0), lw=1.2, ms=4, label=lab, **styles[lab])
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=90, fontsize="x-small")
        ax.set_ylim(0, 105)
        ax.set_xlabel("layer")
        ax.set_ylabel("kept (%)")
        panel_title(ax, _part(f"{arch} · {ds} · {gran} · ratio {p['ratio'].iloc[0]:.2f} (mean over seeds)", k, n))
    finish_figure(fig, axes, "Per-layer kept fraction")
    return fig


def agreement_heatmap(mean: pd.DataFrame):
    """Overall Spearman ρ between methods' scores, mean over seeds, panel per arch × regime × granularity."""
    m = mean[mean["layer"] == "__all__"] if not mean.empty else mean
    if m.empty:
        return "no score files (or fewer than two methods per model)"
    panels = list(dict.fromkeys(zip(m["arch"], m["regime"], m["granularity"])))
    fig, axes = new_figure(1, len(panels), w=4.2, h=3.8)
    im = None
    for j, (arch, regime, gran) in enumerate(panels):
        ax = axes[0, j]
        p = m[(m["arch"] == arch) & (m["regime"] == regime) & (m["granularity"] == gran)]
        p = p.drop_duplicates(["method_a", "method_b"])
        names = sorted(set(p["method_a"]) | set(p["method_b"]), key=method_rank)
        idx = {n: k for k, n in enumerate(names)}
        mat = np.eye(len(names))
        for _, r in p.iterrows():
            mat[idx[r["method_a"]], idx[r["method_b"]]] = mat[idx[r["method_b"]], idx[r["method_a"]]] = r["spearman_mean"]
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        for a in range(len(names)):
            for b in range(len(names)):
                ax.text(b, a, "–" if math.isnan(mat[a, b]) else f"{mat[a, b]:.2f}", ha="center", va="center",
                        fontsize="small", color="white" if abs(np.nan_to_num(mat[a, b])) > 0.6 else "black")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.set_title(f"{arch} · {regime} · {gran}", fontsize="medium")
    fig.colorbar(im, ax=list(axes.ravel()), label="Spearman ρ of scores (all layers)", shrink=0.8)
    fig.suptitle("Agreement between methods' scores (mean over seeds)")
    return fig
