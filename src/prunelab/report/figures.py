"""Accuracy figures: top-1 vs compression/speedup, fine-tuning recovery, speedups, layer profiles."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import method_rank
from .style import BASELINE_COLOR, finish_figure, method_style, new_figure, panel_title

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


def scatter(ax, x, y, style: str, label: str) -> None:
    """One point per model in the method's colour and marker; variants (λ, iterative) hollow."""
    sty = method_style(style, label)
    face = sty["color"] if sty["linestyle"] == "-" else "none"
    ax.scatter(x, y, s=22, alpha=0.8, label=label, marker=sty["marker"], facecolors=face, edgecolors=sty["color"])


def accuracy(summary: pd.DataFrame, base: pd.DataFrame, x: str):
    """Test top-1 vs `x` ('compression' or 'speedup_theoretical'): panel per arch × regime × granularity,
    mean ± std over seeds, baseline as a band."""
    if summary.empty:
        return "no pruned or fine-tuned models yet"
    s = summary[finite_rows(summary[f"{x}_mean"], summary["top1_mean"])]
    if s.empty:
        return f"no model has both {x} and test top-1"
    rows = list(dict.fromkeys(zip(s["dataset"], s["arch"], s["regime"])))
    grans = granularities_in(s["granularity"])
    fig, axes = new_figure(len(rows), len(grans))
    xlabel = "compression (×, log scale)" if x == "compression" else "theoretical speedup (MACs, ×)"
    for i, (ds, arch, regime) in enumerate(rows):
        b = base[(base["dataset"] == ds) & (base["arch"] == arch) & (base["regime"] == regime)] if not base.empty else base
        for j, gran in enumerate(grans):
            ax = axes[i, j]
            p = s[(s["dataset"] == ds) & (s["arch"] == arch) & (s["regime"] == regime) & (s["granularity"] == gran)]
            if len(b) and np.isfinite(b["top1_test_mean"].iloc[0]):
                m, sd = b["top1_test_mean"].iloc[0], np.nan_to_num(b["top1_test_std"].iloc[0])
                ax.axhspan(m - sd, m + sd, color=BASELINE_COLOR, alpha=0.15, lw=0)
                ax.axhline(m, color=BASELINE_COLOR, ls="--", lw=1, label="baseline (mean ± std)")
            for lab, st in methods_in(p):
                q = p[p["method"] == lab].sort_values(f"{x}_mean")
                ax.errorbar(q[f"{x}_mean"], q["top1_mean"], xerr=np.nan_to_num(q[f"{x}_std"]),
                            yerr=np.nan_to_num(q["top1_std"]), capsize=2, ms=5, lw=1.2, label=lab,
                            **method_style(st, lab))
            if x == "compression":
                logx(ax)
            else:
                logx_if_wide(ax, p[f"{x}_mean"])
            ax.set_title(f"{arch} · {ds} · {regime} · {gran}", fontsize="medium")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test top-1 (%)")
            ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Test top-1 vs " + ("compression" if x == "compression" else "theoretical speedup")
                  + " (mean ± std over seeds)")
    return fig


def recovery(sel: pd.DataFrame):
    """Top-1 before vs after fine-tuning, one point per model, panel per granularity."""
    d = sel[(sel["stage"] == "finetuned") & finite_rows(sel["top1_test_before_finetune"], sel["top1_test"])] \
        if not sel.empty else sel
    if d.empty:
        return "no fine-tuned model with top1_test_before_finetune"
    grans = granularities_in(d["gran"])
    fig, axes = new_figure(1, len(grans))
    for j, gran in enumerate(grans):
        ax, p = axes[0, j], d[d["gran"] == gran]
        for lab, st in methods_in(p, "label"):
            q = p[p["label"] == lab]
            scatter(ax, q["top1_test_before_finetune"], q["top1_test"], st, lab)
        lo = float(min(p["top1_test_before_finetune"].min(), p["top1_test"].min()))
        hi = float(max(p["top1_test_before_finetune"].max(), p["top1_test"].max()))
        ax.plot([lo, hi], [lo, hi], color=BASELINE_COLOR, ls=":", lw=1, label="y = x (no recovery)")
        ax.set_title(f"{gran}", fontsize="medium")
        ax.set_xlabel("test top-1 before fine-tuning (%)")
        ax.set_ylabel("test top-1 after fine-tuning (%)")
        ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Recovery by fine-tuning (one point per model)")
    return fig


def speedups(summary: pd.DataFrame):
    """Measured (latency) vs theoretical (MACs) speedup: median over seeds with its spread (IQR of per-round ratios)
    as a bar, hollow where the spread exceeds the effect |speedup − 1|; panel per arch × granularity, y = x line."""
    d = summary[finite_rows(summary["speedup_measured_median"], summary["speedup_theoretical_mean"])] \
        if not summary.empty else summary
    if d.empty:
        return "no model with both measured and theoretical speedup"
    grans = granularities_in(d["granularity"])
    archs = list(dict.fromkeys(zip(d["dataset"], d["arch"])))
    fig, axes = new_figure(len(archs), len(grans))
    for i, (ds, arch) in enumerate(archs):
        for j, gran in enumerate(grans):
            ax, p = axes[i, j], d[(d["dataset"] == ds) & (d["arch"] == arch) & (d["granularity"] == gran)]
            if p.empty:
                ax.set_axis_off()
                continue
            for lab, st in methods_in(p):
                q = p[p["method"] == lab]
                sty = method_style(st, lab)
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
            ax.set_title(f"{arch} · {ds} · {gran}", fontsize="medium")
            ax.set_xlabel("theoretical speedup (MACs ratio, ×)")
            ax.set_ylabel("measured speedup (latency ratio, ×)")
            ax.grid(alpha=0.3)
    finish_figure(fig, axes, "Measured vs theoretical speedup\nmedian over seeds; bar: IQR of per-round ratios\n"
                             "hollow: spread > effect |speedup − 1|")
    return fig


def layer_kept(df: pd.DataFrame, target: float = 0.5):
    """Per-layer kept fraction for each method at the ratio closest to `target`, panel per arch × granularity."""
    if "layer_kept" not in df:
        return "no metrics.json has layer_kept"
    d = df[[isinstance(v, dict) and len(v) > 0 for v in df["layer_kept"]]]
    d = d[d["stage"].isin(["pruned", "finetuned", "gradual", "scratch"])]
    if d.empty:
        return "no metrics.json has layer_kept"
    if (d["pair_regime"] == "standard").any():
        d = d[d["pair_regime"] == "standard"]
    grank = {g: k for k, g in enumerate(granularities_in(d["gran"]))}
    panels = sorted(dict.fromkeys(zip(d["dataset"], d["arch"], d["gran"])), key=lambda p: (p[0], p[1], grank[p[2]]))
    fig, axes = new_figure(len(panels), 1, w=max(6.0, 0.25 * max(len(v) for v in d["layer_kept"])), h=3.4)
    for i, (ds, arch, gran) in enumerate(panels):
        ax = axes[i, 0]
        p = d[(d["dataset"] == ds) & (d["arch"] == arch) & (d["gran"] == gran) & finite_rows(d["ratio"])]
        if p.empty:
            ax.set_axis_off()
            continue
        ratios = sorted(p["ratio"].unique())
        r = min(ratios, key=lambda v: (abs(v - target), v))
        p = p[p["ratio"] == r]
        # one stage per method: pruned if present (kept fractions are fixed at pruning)
        p = p.sort_values("stage", key=lambda c: c.map({"pruned": 0, "finetuned": 1}).fillna(2), kind="mergesort")
        layers: list[str] = list(dict.fromkeys(k for v in p["layer_kept"] for k in v))
        for lab, st in methods_in(p, "label"):
            q = p[p["label"] == lab]
            q = q[q["stage"] == q["stage"].iloc[0]]
            vals = np.array([[v.get(n, np.nan) for n in layers] for v in q["layer_kept"]], float)
            ax.plot(range(len(layers)), 100 * np.nanmean(vals, axis=0), lw=1.2, ms=4, label=lab,
                    **method_style(st, lab))
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=90, fontsize="x-small")
        ax.set_ylim(0, 105)
        ax.set_xlabel("layer")
        ax.set_ylabel("kept (%)")
        panel_title(ax, f"{arch} · {ds} · {gran} · ratio {r:.2f} (mean over seeds)")
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
