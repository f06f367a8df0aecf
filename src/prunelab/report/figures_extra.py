"""Study figures: method option sweeps, pruning-space EDFs, gradual vs one-shot cost."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import finite_rows, granularities_in, logx_if_wide, methods_in
from .style import finish_figure, method_style, new_figure, panel_title, series_styles


def sweeps(sel: pd.DataFrame) -> list[tuple[str, str]]:
    """(base method, swept key) pairs with ≥ 2 values in the selected rows: one sweep figure each."""
    if sel.empty:
        return []
    d = sel[sel["vkey"].notna() & finite_rows(sel["vval"])]
    return sorted((b, k) for (b, k), g in d.groupby(["base", "vkey"]) if g["vval"].nunique() >= 2)


def sweep(sel: pd.DataFrame, base: str, key: str):
    """Test top-1 (mean over seeds, 95 % t-interval) vs a method's swept option value: a line per ratio, a panel per
    dataset × arch × regime × granularity holding ≥ 2 values."""
    from .significance import t_interval

    from .render import curve_title

    d = sel[(sel["base"] == base) & (sel["vkey"] == key) & finite_rows(sel["vval"], sel["top1_test"])] \
        if not sel.empty else sel
    keys = ["dataset", "arch", "regime", "gran", "target", "budget"]
    groups = d.groupby(keys, sort=False, dropna=False) if len(d) else []
    panels = [(k, g) for k, g in groups if g["vval"].nunique() >= 2]
    grank = {g: i for i, g in enumerate(granularities_in(d["gran"]))} if len(d) else {}
    panels.sort(key=lambda kg: (str(kg[0][0]), str(kg[0][1]), str(kg[0][2]), grank[kg[0][3]], str(kg[0][4]),
                                -1.0 if pd.isna(kg[0][5]) else float(kg[0][5])))
    if not panels:
        return f"no {base} {key} sweep (fewer than two values in one setting)"
    fig, axes = new_figure(1, len(panels))
    ratios = sorted(d["ratio"].dropna().unique())
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for j, ((ds, arch, regime, gran, target, budget), p) in enumerate(panels):
        ax = axes[0, j]
        for k, r in enumerate(ratios):
            q = p[p["ratio"] == r]
            if q.empty:
                continue
            per_seed = q.groupby(["vval", "seed"])["top1_test"].mean()
            pts = [(v, *t_interval(per_seed.loc[v].to_numpy())[:3]) for v in sorted(per_seed.index.unique(0))]
            x, m, lo, hi = (np.array(c, float) for c in zip(*pts))
            err = np.nan_to_num(np.vstack([m - lo, hi - m]))
            ax.errorbar(x, m, yerr=err, capsize=2, marker=method_style(base)["marker"], ms=5,
                        color=cmap(k / max(1, len(ratios) - 1)), label=f"ratio {r:.2f}")
        ax.set_xlabel(f"{base} option {key}")
        ax.set_ylabel("test top-1 (%)")
        panel_title(ax, curve_title(dict(dataset=ds, arch=arch, regime=regime, granularity=gran, target=target,
                                         budget=budget)))
    finish_figure(fig, axes, f"{base}: {key} sweep\n(mean over seeds, 95 % t-interval)")
    return fig


def _space(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["stage"] == "space"].copy()
    if d.empty:
        return d
    top1 = pd.to_numeric(d["top1_test"], errors="coerce").astype(float)
    val = pd.to_numeric(d["top1_val"], errors="coerce").astype(float)
    d["error"] = 100.0 - top1.fillna(val)  # samples scored on validation only still count
    d["sr"] = d["space_regime"] if "space_regime" in d else np.nan
    return d[np.isfinite(d["error"])]


def space_edf(df: pd.DataFrame):
    """Pruning-space test-error EDFs, one line per MACs regime, panel per arch."""
    d = _space(df)
    if d.empty:
        return "no pruning-space samples (stage 'space')"
    archs = list(dict.fromkeys(zip(d["dataset"], d["arch"])))
    fig, axes = new_figure(1, len(archs))
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    for j, (ds, arch) in enumerate(archs):
        ax, p = axes[0, j], d[(d["dataset"] == ds) & (d["arch"] == arch)]
        regimes = sorted(p["sr"].dropna().unique()) or [None]
        for k, sr in enumerate(regimes):
            e = np.sort(p["error"] if sr is None else p[p["sr"] == sr]["error"])
            lab = "all samples" if sr is None else f"MACs keep {float(sr):.2f} (n={len(e)})"
            ax.step(np.r_[e[0], e], np.r_[0, np.arange(1, len(e) + 1) / len(e)], where="post", lw=1.5,
                    color=cmap(0.85 * k / max(1, len(regimes) - 1)), label=lab)
        ax.set_xlabel("top-1 error (%, test; val where no test)")
        ax.set_ylabel("cumulative fraction of models")
        ax.set_ylim(0, 1.02)
        panel_title(ax, f"{arch} · {ds}")
    finish_figure(fig, axes, "Pruning space: error EDF per MACs regime")
    return fig


def space_scatter(df: pd.DataFrame):
    """Pruning-space test error vs kept MACs and vs the MACs/params ratio (the pruning-spaces conjecture: good
    subnetworks share a near-optimal MACs-to-parameter ratio), coloured by MACs regime."""
    d = _space(df)
    if d.empty:
        return "no pruning-space samples (stage 'space')"
    num = lambda c: pd.to_numeric(d[c], errors="coerce").astype(float) if c in d else np.nan  # noqa: E731
    d["macs_ratio"] = num("macs_effective") / num("macs_dense")
    d["mp_ratio"] = num("macs_effective") / num("params_nonzero")
    archs = list(dict.fromkeys(zip(d["dataset"], d["arch"])))
    fig, axes = new_figure(len(archs), 2)
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    for i, (ds, arch) in enumerate(archs):
        p = d[(d["dataset"] == ds) & (d["arch"] == arch)]
        regimes = sorted(p["sr"].dropna().unique()) or [None]
        for j, (col, name) in enumerate((("macs_ratio", "MACs"), ("mp_ratio", "MACs/params"))):
            ax = axes[i, j]
            for k, sr in enumerate(regimes):
                q = p if sr is None else p[p["sr"] == sr]
                q = q[np.isfinite(q[col])]
                ax.scatter(q[col], q["error"], s=14, alpha=0.8, color=cmap(0.85 * k / max(1, len(regimes) - 1)),
                           label="all samples" if sr is None else f"MACs keep {float(sr):.2f}")
            ax.set_xlabel("kept MACs (effective / dense)" if name == "MACs" else "MACs per parameter (MACs / params)")
            ax.set_ylabel("top-1 error (%)")
            panel_title(ax, f"{arch} · {ds}: error vs {name} ratio")
    finish_figure(fig, axes, "Pruning space: error vs kept MACs and vs MACs/params ratio")
    return fig


def gradual_cost(df: pd.DataFrame, reference: str | None = None):
    """Accuracy vs total training cost: in optimiser steps where every model records `steps_total`, else in
    seconds (one-shot = baseline wall_s + fine-tune wall_s of the same seed; gradual = its own wall_s). Mean ± std
    over seeds, per method × ratio (× fine-tuning budget); panel per arch (and per ≤ 7 series)."""
    from .figures import chunked, grid
    from .render import fmt_budget

    g = df[(df["stage"] == "gradual") & finite_rows(df["wall_s"], df["top1_test"])]
    if g.empty:
        return "no gradual model with wall_s and top1_test"
    ft = df[(df["stage"] == "finetuned") & finite_rows(df["wall_s"], df["top1_test"])
            & df["gran"].isin(set(g["gran"])) & (df["pair_regime"] == "standard")].copy()
    both = pd.concat([g, ft])
    steps = "steps_total" in both and bool(finite_rows(both["steps_total"]).all())
    if steps:
        both["cost"] = both["steps_total"].astype(float)
    else:
        base = df[(df["stage"] == "baseline") & finite_rows(df["wall_s"])]
        base_cost = base.groupby(["dataset", "arch", "pair_regime", "seed"])["wall_s"].mean().to_dict()
        both["cost"] = [w + (base_cost.get((d, a, r, s), np.nan) if st == "finetuned" else 0.0)
                        for w, d, a, r, s, st in zip(both["wall_s"], both["dataset"], both["arch"],
                                                     both["pair_regime"], both["seed"], both["stage"])]
        both = both[np.isfinite(both["cost"].astype(float))]
    both["series"] = [lab + (f" @ {fmt_budget(b)}" if fmt_budget(b) else "")
                      for lab, b in zip(both["label"], both["budget"])]
    panels = chunked(both, ["dataset", "arch"], "series", reference)
    fig, axes, flat = grid(panels, ncols=3)
    styles = series_styles(methods_in(both, "series"))
    for ax, ((ds, arch), p, chunk, k, n) in zip(flat, panels):
        for lab, _ in chunk:
            q = p[p["series"] == lab]
            agg = q.groupby(["ratio", "seed"])[["cost", "top1_test"]].mean().astype(float).groupby(level=0)
            m, sd = agg.mean(), agg.std(ddof=1)
            sty = styles[lab]
            ax.errorbar(m["cost"], m["top1_test"], xerr=np.nan_to_num(sd["cost"]), yerr=np.nan_to_num(sd["top1_test"]),
                        capsize=2, ms=5, lw=0, elinewidth=1, label=lab, color=sty["color"], marker=sty["marker"])
            for r, row in m.iterrows():
                ax.annotate(f"{r:.2f}", (row["cost"], row["top1_test"]), textcoords="offset points",
                            xytext=(4, 3), fontsize="x-small", color=sty["color"])
        logx_if_wide(ax, p["cost"].astype(float))
        ax.set_xlabel("optimiser steps in all" if steps else "total training cost (s): one-shot = baseline + fine-tune")
        ax.set_ylabel("test top-1 (%)")
        title = f"{arch} · {ds} ({', '.join(granularities_in(g['gran']))}; labels = ratio)"
        panel_title(ax, title + (f" ({k + 1}/{n})" if n > 1 else ""))
    finish_figure(fig, axes, "Gradual vs one-shot pruning: accuracy against training cost")
    return fig
