"""Numeric summary tables: baselines, pruned methods (mean ± std over seeds), published references."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import method_rank
from .families import mark
from .significance import paired_delta

GROUP = ["dataset", "arch", "regime", "gran", "target", "ratio"]  # the methods compete here (at every budget)
MISSING = "—"


def keyed(df: pd.DataFrame) -> pd.DataFrame:
    """Copy with null string keys shown as MISSING, so groupby keeps them."""
    df = df.copy()
    for col in ("dataset", "arch", "regime", "gran", "target", "label"):
        df[col] = [MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in df[col]]
    return df


def _stat(values) -> tuple[float, float, int]:
    """(mean, sample std (ddof=1), n) of the finite values; NaN where undefined."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def per_seed(rows: pd.DataFrame, col: str) -> pd.Series:
    """Mean of `col` per seed (rows of one group), NaNs dropped, indexed by seed (ascending)."""
    vals = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    seeds = np.asarray(rows["seed"].tolist(), dtype=object)
    ok = np.isfinite(vals)
    vals, seeds = vals[ok], seeds[ok]
    if len(set(seeds)) == len(seeds):  # one value per seed (the usual case): no groupby
        order = sorted(range(len(seeds)), key=lambda i: seeds[i])
        return pd.Series(vals[order], index=list(seeds[order]), dtype=float)
    return pd.Series(vals, index=list(seeds)).groupby(level=0).mean().sort_index()


def baseline_top1(df: pd.DataFrame) -> dict:
    """{(dataset, arch, regime, seed): baseline test top-1} (mean if a seed repeats)."""
    base = keyed(df[df["stage"] == "baseline"])
    out = {}
    for key, rows in base.groupby(["dataset", "arch", "regime"], sort=False, dropna=False):
        for seed, v in per_seed(rows, "top1_test").items():
            out[(*key, seed)] = v
    return out


def baseline_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Baselines: mean ± std over seeds per dataset × arch × regime."""
    base = keyed(df[df["stage"] == "baseline"])
    rows = []
    for (ds, arch, regime), g in base.groupby(["dataset", "arch", "regime"], sort=True, dropna=False):
        r = dict(dataset=ds, arch=arch, regime=regime)
        for col in ("top1_test", "top1_val", "top5_test", "params_total", "macs_dense",
                    "latency_ms_b1", "latency_ms_b64", "wall_s", "steps_total", "train_steps"):
            if col in g:
                m, s, n = _stat(per_seed(g, col))
            else:
                m, s, n = math.nan, math.nan, 0
            r[f"{col}_mean"], r[f"{col}_std"] = m, s
            if col == "top1_test":
                r["n_seeds"] = n
        rows.append(r)
    return pd.DataFrame(rows)


def select_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows the summary compares: fine-tuned models of a comparison group (every budget), or its pruned-only
    models where none is fine-tuned yet; plus gradual and scratch models."""
    d = keyed(df[df["stage"].isin(["pruned", "finetuned", "gradual", "scratch"])])
    keep = []
    for _, g in d.groupby(GROUP, sort=False, dropna=False):
        oneshot = g[g["stage"].isin(["pruned", "finetuned"])]
        stage = "finetuned" if (oneshot["stage"] == "finetuned").any() else "pruned"
        keep.append(g[g["stage"].isin([stage, "gradual", "scratch"])])
    return pd.concat(keep) if keep else d.iloc[:0]


SUMMARY_KEY = ["dataset", "arch", "regime", "gran", "target", "budget", "ratio", "label"]
MEANS = (("compression", "compression"), ("speedup_theoretical", "speedup_theoretical"),
         ("sparsity_achieved", "sparsity"), ("top1_test_before_finetune", "before"), ("cost_removed", "cost_removed"),
         ("steps_total", "steps_total"), ("train_steps", "train_steps"))


def summary_frame(df: pd.DataFrame, reference: str, correction: str) -> pd.DataFrame:
    """One row per comparison group (dataset × arch × regime × granularity × target × budget × ratio) × method
    variant: top-1, paired Δ to the own baseline with its 95 % t-interval, cost and steps (mean over seeds), the
    comparison with the `reference` method in its family (`families.mark`: identical rows, the one-shot family
    per table, the controls' own family, p corrected by `correction`), measured speedup median and spread."""
    sel = select_rows(df)
    if sel.empty:
        return pd.DataFrame()
    base = baseline_top1(df)
    rows = []
    for key, g in sel.groupby(SUMMARY_KEY, sort=False, dropna=False):
        ds, arch, regime, gran, target, budget, ratio, label = key
        top1 = per_seed(g, "top1_test")
        pair_regime = g["pair_regime"].iloc[0]
        paired = [(v, base[(ds, arch, pair_regime, s)]) for s, v in top1.items() if (ds, arch, pair_regime, s) in base]
        r = dict(dataset=ds, arch=arch, regime=regime, granularity=gran, target=target, budget=budget, ratio=ratio,
                 method=label, style=g["style"].iloc[0], stage=g["stage"].iloc[0],
                 seeds=" ".join(str(s) for s in top1.index), _top1=top1,
                 _loss=per_seed(g, "loss_test") if "loss_test" in g else pd.Series(dtype=float))
        r["top1_mean"], r["top1_std"], r["n_seeds"] = _stat(top1)
        r["delta_mean"], r["delta_std"], r["n_delta"] = _stat([a - b for a, b in paired])
        _, r["delta_lo"], r["delta_hi"], _, _ = paired_delta([a for a, _ in paired], [b for _, b in paired])
        for col, name in MEANS:
            r[f"{name}_mean"], r[f"{name}_std"], _ = _stat(per_seed(g, col)) if col in g else (math.nan,) * 3
        r.update(measured_speedup(g))
        rows.append(r)
    grank = {"unstructured": 0, "structured": 1}
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["arch"]), str(r["regime"]),
                             (grank.get(r["granularity"], 2), str(r["granularity"])), str(r["target"]),
                             r["budget"] if np.isfinite(r["budget"]) else -1.0,
                             r["ratio"] if np.isfinite(r["ratio"]) else math.inf, method_rank(r["method"], r["style"])))
    return mark(pd.DataFrame(rows), reference, correction).drop(columns=["_top1", "_loss"])


def measured_speedup(g: pd.DataFrame) -> dict:
    """Measured (latency) speedup of one group's models: median over seeds, and its spread — the median over
    seeds of the within-job IQR of per-round ratios (latency_speedup_iqr) where recorded, else the IQR over seeds.
    noisy: the spread exceeds the effect |median − 1|."""
    sp = per_seed(g, "latency_speedup") if "latency_speedup" in g else pd.Series(dtype=float)
    if sp.empty:
        return dict(speedup_measured_median=math.nan, speedup_measured_spread=math.nan, speedup_measured_noisy=False)
    med = float(np.median(sp))
    iqr = per_seed(g, "latency_speedup_iqr") if "latency_speedup_iqr" in g else pd.Series(dtype=float)
    if len(iqr):
        spread = float(np.median(iqr))
    elif len(sp) > 1:
        q75, q25 = np.percentile(sp, [75, 25])
        spread = float(q75 - q25)
    else:
        spread = math.nan
    return dict(speedup_measured_median=med, speedup_measured_spread=spread,
                speedup_measured_noisy=bool(np.isfinite(spread) and spread > abs(med - 1)))


REFERENCE_REQUIRED = ("arch", "source")


def reference_frame(reference, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Published numbers (config['reference']) with their Δ, and ours where one row matches."""
    if reference is None:
        return pd.DataFrame()
    if not isinstance(reference, list):
        raise ValueError("config['reference'] must be a list of dicts")
    rows = []
    for i, ref in enumerate(reference):
        if not isinstance(ref, dict):
            raise ValueError(f"config['reference'][{i}] must be a dict, got {type(ref).__name__}")
        missing = [k for k in REFERENCE_REQUIRED if ref.get(k) is None]
        if missing:
            raise ValueError(f"config['reference'][{i}] misses {missing}")
        has_pair = ref.get("top1_dense") is not None and ref.get("top1_pruned") is not None
        if not has_pair and ref.get("top1_delta") is None:
            raise ValueError(f"config['reference'][{i}] needs top1_dense and top1_pruned, or top1_delta")
        r = {k: ref.get(k) for k in ("dataset", "arch", "method", "granularity", "ratio", "top1_dense",
                                      "top1_pruned", "compression", "flops_reduction", "source")}
        r["delta"] = (float(ref["top1_pruned"]) - float(ref["top1_dense"])) if has_pair else float(ref["top1_delta"])
        r["ours_top1"], r["ours_delta"] = math.nan, math.nan
        if summary is not None and not summary.empty and all(ref.get(k) is not None
                                                             for k in ("method", "granularity", "ratio")):
            m = summary[(summary["arch"] == ref["arch"]) & (summary["method"] == ref["method"])
                        & (summary["granularity"] == ref["granularity"])
                        & np.isclose(summary["ratio"].astype(float), float(ref["ratio"]))
                        & (summary["regime"] == "standard")]
            if ref.get("dataset") is not None:
                m = m[m["dataset"] == ref["dataset"]]
            if len(m) == 1:
                r["ours_top1"], r["ours_delta"] = m["top1_mean"].iloc[0], m["delta_mean"].iloc[0]
        rows.append(r)
    return pd.DataFrame(rows)
