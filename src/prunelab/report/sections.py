"""The report's comparison sections: one table per family (one-shot methods per curve and budget, the controls,
pruning-aware training), each caption stating what its family holds, its size, the correction and what it can
detect; and the differences whose interval excludes 0 without passing the correction, listed apart."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .families import CORRECTION_NAMES, CURVE, EXCLUDES_ZERO, IDENTICAL, SIGNIFICANT, TABLE, after, words
from .render import Section, curve_title, fmt_budget, fmt_ci, fmt_num, fmt_p, fmt_pm, fmt_steps
from .significance import ALPHA, CORRECTIONS, POWER, TEST

SIG, NEAR = "†", "∘"  # significant after the correction; 95 % interval excludes 0 but not significant


def mark(r) -> str:
    return SIG if r["verdict"] == SIGNIFICANT else NEAR if r["verdict"] == EXCLUDES_ZERO else ""


def verdict_cell(r) -> str:
    return f"identical to {r['identical_to']}" if r["verdict"] == IDENTICAL else str(r["verdict"])


def comparison_text(summary: pd.DataFrame, reference: str, correction: str) -> str:
    """What the comparisons are: reference, test, families, correction, marks (for summary.md)."""
    if summary.empty or not (summary["method"] == reference).any():
        return (f"The reference method `{reference}` (config `report.reference`) is not in this experiment: the "
                "comparisons against it are skipped.")
    pairs = sorted({int(n) for n in summary["n_pairs"] if n >= 1})
    return (f"Each method is compared with `{reference}` (config `report.reference`), paired by seed, with the {TEST} "
            f"(scipy.stats.ttest_rel) at every number of pairs; paired seeds per comparison: "
            f"{', '.join(map(str, pairs)) or '0'}. Each table below is one family: its comparisons are corrected "
            f"together by {CORRECTIONS[correction]} (config `report.correction`); rows identical in fact to another "
            f"row of the table (equal test top-1 and test loss on every seed) are marked and not tested; the controls "
            f"(scratch, gradual) form a family of their own per curve. {SIG} marks corrected p < {ALPHA}; {NEAR} a "
            f"difference whose 95 % interval excludes 0 but which is not significant {after(correction)} (listed "
            "again under \"Intervals that exclude 0\"). Δ columns are paired differences (mean over seeds [95 % "
            "t-interval]). Measured speedup: median over seeds (IQR of the per-round dense/pruned latency ratios "
            "within the job); ≈ marks a spread larger than the effect |speedup − 1|.")


def family_caption(g: pd.DataFrame, against: str, correction: str, holds: str, scope: str = "this table") -> str:
    """The family a table is: what it holds, m, the correction, and the difference it detects (and from what)."""
    m = int(np.nanmax(g["family_size"])) if np.isfinite(g["family_size"].astype(float)).any() else 0
    if m == 0:
        return f"No comparison with {against} here (none in this table, or fewer than 2 paired seeds)."
    same = g[g["verdict"] == IDENTICAL]
    twins = sorted({f"{a} = {b}" for a, b in zip(same["method"], same["identical_to"])})
    level = float(np.nanmax(g["family_level"]))
    where = (f"Holm's strictest step α/m = {ALPHA}/{m}" if correction == "holm" else
             f"BH's step for the smallest p, α/m = {ALPHA}/{m}" if correction == "bh" else f"α = {ALPHA}")
    text = (f"Family: {holds}, m = {m} comparison{'s' if m != 1 else ''} with {against} ({TEST}), p corrected "
            f"together by {CORRECTION_NAMES[correction]}.")
    if twins:
        text += f" Identical in fact, not tested: {'; '.join(twins)}."
    row = g[np.isfinite(g["mdd"].astype(float))]
    if row.empty:
        return text + " Detectable difference: undefined (fewer than 2 paired seeds)."
    r = row.iloc[0]
    return text + (f" {scope[0].upper() + scope[1:]} detects ≥ {r['mdd']:.2f} pp: the difference the {TEST} finds "
                   f"with {100 * POWER:.0f} % power at {where} (= {level:.2g}), with {int(r['mdd_n'])} paired seeds "
                   f"and the median paired sd of its tested comparisons, {r['mdd_sd']:.2f} pp.")


def summary_sections(summary: pd.DataFrame, reference: str, correction: str) -> list[Section]:
    """One table per dataset × arch × regime × granularity × target × budget: one family each."""
    s = summary[summary["family"] == "one-shot"] if not summary.empty else summary
    if s.empty:
        return []
    out = []
    for _, g in s.groupby(TABLE, sort=False, dropna=False):
        cost = np.isfinite(g["cost_removed_mean"].astype(float)).any()
        steps = np.isfinite(g["steps_total_mean"].astype(float)).any()
        headers = (["ratio", "method", "n", "top-1 (%)", "Δ top-1 (pp) [95 % CI]",
                    f"Δ vs {reference} (pp) [95 % CI]", f"p ({correction})", "verdict"]
                   + (["cost removed"] if cost else []) + ["compression (×)", "speedup theor. (×)",
                                                            "speedup meas. (×)", "top-1 before FT (%)"]
                   + (["steps"] if steps else []))
        rows = []
        for _, r in g.iterrows():
            b = bool(r["best"])
            meas = fmt_num(r["speedup_measured_median"])
            if np.isfinite(r["speedup_measured_spread"]):
                meas += f" (IQR {r['speedup_measured_spread']:.2f})" + ("≈" if r["speedup_measured_noisy"] else "")
            rows.append([(fmt_num(r["ratio"]), False), (str(r["method"]), b), (str(r["n_seeds"]), False),
                         (fmt_pm(r["top1_mean"], r["top1_std"]) + mark(r), b),
                         (fmt_ci(r["delta_mean"], r["delta_lo"], r["delta_hi"]), False),
                         (fmt_ci(r["dref_mean"], r["dref_lo"], r["dref_hi"]) + mark(r), False),
                         ("ref" if r["verdict"] == "reference" else fmt_p(r["p_adj"]), False), (verdict_cell(r), False)]
                        + ([(fmt_num(r["cost_removed_mean"], 3), False)] if cost else [])
                        + [(fmt_num(r["compression_mean"]), False), (fmt_num(r["speedup_theoretical_mean"]), False),
                           (meas, False), (fmt_pm(r["before_mean"], r["before_std"]), False)]
                        + ([(fmt_steps(r["steps_total_mean"]), False)] if steps else []))
        first = g.iloc[0]
        stage = "fine-tuned" + (f" {fmt_budget(first['budget'])}" if fmt_budget(first["budget"]) else "") \
            if first["stage"] == "finetuned" else "not fine-tuned (pruned only)"
        holds = f"every method × ratio of this table ({stage})"
        caption = ("Test top-1 mean ± std over seeds; bold: best mean top-1 per ratio"
                   + ("; steps: optimiser steps in all (baseline + fine-tuning)" if steps else "")
                   + ("; cost removed: achieved fraction of the target cost" if cost else "") + ". "
                   + family_caption(g, f"`{reference}`", correction, holds))
        out.append(Section(curve_title(first), caption, headers, rows, level=3))
    return out


def controls_sections(summary: pd.DataFrame, reference: str, correction: str) -> list[Section]:
    """One table per curve: the controls (scratch, gradual) with their steps, against the reference fine-tuned at
    the largest budget at the same ratio (its steps beside), in a family of their own."""
    s = summary[summary["family"] == "controls"] if not summary.empty else summary
    if s.empty:
        return []
    out = [Section("Controls", "Scratch (the pruned architecture retrained from random initialisation) and gradual "
                               f"pruning while training, each against `{reference}` fine-tuned at the largest budget "
                               "at the same ratio; every arm's optimiser steps beside its accuracy.")]
    headers = ["ratio", "control", "n", "top-1 (%)", "steps", f"{reference} fine-tuned at", f"{reference} steps",
               f"Δ vs {reference} (pp) [95 % CI]", f"p ({correction})", "verdict"]
    for _, g in s.groupby(CURVE, sort=False, dropna=False):
        rows = [[(fmt_num(r["ratio"]), False), (str(r["method"]), False), (str(r["n_seeds"]), False),
                 (fmt_pm(r["top1_mean"], r["top1_std"]), False), (fmt_steps(r["steps_total_mean"]), False),
                 (fmt_budget(r["ref_budget"]) or "–", False), (fmt_steps(r["ref_steps"]), False),
                 (fmt_ci(r["dref_mean"], r["dref_lo"], r["dref_hi"]) + mark(r), False), (fmt_p(r["p_adj"]), False),
                 (r["verdict"], False)] for _, r in g.iterrows()]
        caption = family_caption(g, f"`{reference}`", correction, "the controls of this curve", "this family")
        out.append(Section(f"Controls: {curve_title(g.iloc[0], budget=False)}", caption, headers, rows, level=3))
    return out


def pat_sections(pat: pd.DataFrame, dense: list[dict], correction: str) -> list[Section]:
    """Pruning-aware training against standard training, one table (family) per dataset · arch · granularity ·
    target · budget."""
    if pat.empty:
        return []
    ctx = "; ".join(f"{d['arch']} {d['regime']} − standard baselines {fmt_ci(d['mean'], d['lo'], d['hi'])} pp "
                    f"(n = {d['n']})" for d in dense)
    out = [Section("Pruning-aware training",
                   "Does training with the regulariser make the network more prunable than standard training, for "
                   "the same method? Paired by seed (same arch, method, granularity, ratio, budget): PaT − standard "
                   "test top-1 after pruning (and fine-tuning). In pat.csv."
                   + (f" The dense baselines' own difference, for context (not tested): {ctx}." if ctx else ""))]
    headers = ["method", "regime", "ratio", "n", "PaT top-1 (%)", "standard top-1 (%)", "Δ PaT − standard (pp) "
               "[95 % CI]", f"p ({correction})", "verdict"]
    for _, g in pat.groupby(["dataset", "arch", "granularity", "target", "budget"], sort=False, dropna=False):
        rows = [[(str(r["method"]), False), (str(r["regime"]), False), (fmt_num(r["ratio"]), False),
                 (str(r["n_pairs"]), False), (fmt_num(r["pat_top1_mean"]), False),
                 (fmt_num(r["standard_top1_mean"]), False),
                 (fmt_ci(r["dref_mean"], r["dref_lo"], r["dref_hi"]) + mark(r), False), (fmt_p(r["p_adj"]), False),
                 (verdict_cell(r), False)] for _, r in g.iterrows()]
        caption = family_caption(g, "standard training", correction,
                                 "every PaT regime × method × ratio of this table")
        title = curve_title(g.iloc[0].to_dict() | {"regime": "PaT − standard"})
        out.append(Section(f"PaT: {title}", caption, headers, rows, level=3))
    return out


def excludes_zero_section(summary: pd.DataFrame, pat: pd.DataFrame, correction: str) -> Section:
    """The differences whose 95 % interval excludes 0 but which are not significant after the correction: not noise,
    and not established either; each with its words."""
    frames = [f for f in (summary, pat) if not f.empty and "verdict" in f]
    rows = []
    for f in frames:
        for _, r in f[f["verdict"] == EXCLUDES_ZERO].iterrows():
            what = "PaT − standard" if "pat_top1_mean" in r else f"vs {r['reference']}"
            rows.append([(curve_title(r), False), (f"{r['method']} @ {r['ratio']:.2f}", False), (what, False),
                         (fmt_ci(r["dref_mean"], r["dref_lo"], r["dref_hi"]), False),
                         (words(r, correction, "this family" if r.get("family") != "one-shot" else "this table"),
                          False)])
    text = (f"Differences whose 95 % t-interval excludes 0 but whose p does not pass {CORRECTION_NAMES[correction]} "
            f"in their family: {len(rows)}.")
    return Section("Intervals that exclude 0", text, ["table", "method @ ratio", "comparison", "Δ (pp) [95 % CI]",
                                                      "in words"] if rows else [], rows)
