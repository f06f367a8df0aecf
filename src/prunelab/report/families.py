"""Which comparisons with the reference method are questions, the family each is corrected in, and the words a
result earns.

- A row identical to another of its table in fact (equal test top-1 AND test loss on every seed, e.g.
  screening-lambda0 and magnitude, or two structured contribution κ) is marked "identical to <that row>" and not
  tested: it asks nothing the other row does not.
- One-shot rows (pruned, fine-tuned) are compared with the reference at the same point (dataset · arch · regime ·
  granularity · target · budget · ratio); a table (all but the ratio) is one family.
- Controls (scratch, gradual) are compared with the reference fine-tuned at the largest budget at the same ratio,
  in a family of their own per curve (dataset · arch · regime · granularity · target).
- Every comparison: the paired t-test, p corrected within its family (`report.correction`); a family's detectable
  difference is the one the test detects with 80 % power at the level the correction applies (`family_level`),
  from the median paired sd of its tested comparisons.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .significance import ALPHA, adjust_p, detectable_difference, family_level, paired_delta, paired_test

ONESHOT, CONTROLS = ("pruned", "finetuned"), ("gradual", "scratch")
CURVE = ["dataset", "arch", "regime", "granularity", "target"]
TABLE = CURVE + ["budget"]  # one table of the report = one family of one-shot comparisons
POINT = TABLE + ["ratio"]  # the methods compete here
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no correction"}
# summary.csv `verdict`
REFERENCE, IDENTICAL, SIGNIFICANT, EXCLUDES_ZERO, NOT_SIGNIFICANT, UNTESTED = (
    "reference", "identical", "significant", "interval excludes 0", "not significant", "untested")
COLUMNS = ("family", "identical_to", "ref_budget", "ref_steps", "dref_mean", "dref_lo", "dref_hi", "dref_sd",
           "p_vs_ref", "p_adj", "test", "n_pairs", "family_size", "family_level", "mdd", "mdd_sd", "mdd_n")


def identical(a: pd.Series, b: pd.Series, a_loss: pd.Series, b_loss: pd.Series) -> bool:
    """Two rows are the same model in fact: the same seeds, and equal test top-1 and test loss on every one."""
    if len(a) == 0 or list(a.index) != list(b.index) or list(a_loss.index) != list(a.index) \
            or list(b_loss.index) != list(a.index):
        return False
    return bool(np.array_equal(a.to_numpy(), b.to_numpy()) and np.array_equal(a_loss.to_numpy(), b_loss.to_numpy()))


def compare(top1: pd.Series, ref: pd.Series) -> dict:
    """Paired comparison of a row's per-seed top-1 with the reference's on their common seeds."""
    seeds = sorted(set(ref.index) & set(top1.index))
    a, b = top1[seeds].to_numpy(float), ref[seeds].to_numpy(float)
    p, test = paired_test(a, b)
    mean, lo, hi, sd, n = paired_delta(a, b)
    return dict(dref_mean=mean, dref_lo=lo, dref_hi=hi, dref_sd=sd, p_vs_ref=p, n_pairs=n, test=test)


def same_key(a, b) -> bool:
    """Equal key values, NaN equal to NaN (a budget not recorded)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _control_reference(s: pd.DataFrame, row, reference: str):
    """Index of the reference row a control is compared with: the same dataset · arch · regime · granularity ·
    ratio (its own target where the reference has it), fine-tuned at the largest budget; None when absent."""
    ref = s[(s["method"] == reference) & s["stage"].isin(ONESHOT)]
    ref = ref[[all(same_key(r[k], row[k]) for k in ("dataset", "arch", "regime", "granularity", "ratio"))
               for _, r in ref.iterrows()]]
    if (ref["target"] == row["target"]).any():
        ref = ref[ref["target"] == row["target"]]
    if ref.empty:
        return None
    return ref["budget"].fillna(-math.inf).astype(float).idxmax()


def mark(s: pd.DataFrame, reference: str, correction: str) -> pd.DataFrame:
    """summary_frame's rows with: best (max mean top-1 among the one-shot rows of a point), identical_to, the
    paired comparison with the reference (dref_*, p_vs_ref, test, n_pairs), family ('one-shot' | 'controls'), p
    corrected per family (p_adj, family_size, family_level), the family's detectable difference (mdd, from the
    median paired sd mdd_sd at mdd_n pairs), significant (p_adj < ALPHA), excludes_zero and verdict.
    `s` carries per-seed top-1 and test loss in `_top1` / `_loss`."""
    s = s.copy()
    for col in COLUMNS:
        s[col] = math.nan
    s["family"] = ["controls" if st in CONTROLS else "one-shot" for st in s["stage"]]
    s["identical_to"] = s["test"] = None
    s["reference"], s["correction"], s["best"], s["n_pairs"] = reference, correction, False, 0
    oneshot = s[s["family"] == "one-shot"]
    for _, g in oneshot.groupby(POINT, sort=False, dropna=False):
        top = g["top1_mean"].max()
        if np.isfinite(top):
            s.loc[g.index[g["top1_mean"] == top], "best"] = True
        order = sorted(g.index, key=lambda i: g.at[i, "method"] != reference)  # the reference represents its copies
        kept: list = []
        for i in order:
            twin = next((j for j in kept if identical(g.at[i, "_top1"], g.at[j, "_top1"], g.at[i, "_loss"],
                                                      g.at[j, "_loss"])), None)
            if twin is None:
                kept.append(i)
            else:
                s.at[i, "identical_to"] = g.at[twin, "method"]
        ref = g[g["method"] == reference]
        if ref.empty:
            continue
        for i in g.index:
            if g.at[i, "method"] != reference and s.at[i, "identical_to"] is None:
                for k, v in compare(g.at[i, "_top1"], ref["_top1"].iloc[0]).items():
                    s.at[i, k] = v
    for i in s.index[s["family"] == "controls"]:
        j = _control_reference(s, s.loc[i], reference)
        if j is not None:
            for k, v in compare(s.at[i, "_top1"], s.at[j, "_top1"]).items():
                s.at[i, k] = v
            s.at[i, "ref_budget"], s.at[i, "ref_steps"] = s.at[j, "budget"], s.at[j, "steps_total_mean"]
    for _, g in s[s["family"] == "one-shot"].groupby(TABLE, sort=False, dropna=False):
        correct_family(s, g.index, correction)
    for _, g in s[s["family"] == "controls"].groupby(CURVE, sort=False, dropna=False):
        correct_family(s, g.index, correction)
    s["n_pairs"] = s["n_pairs"].astype(int)
    s["significant"] = s["p_adj"].astype(float) < ALPHA
    s["excludes_zero"] = (s["dref_lo"].astype(float) > 0) | (s["dref_hi"].astype(float) < 0)
    s["verdict"] = [verdict(r, reference) for _, r in s.iterrows()]
    return s


def correct_family(s: pd.DataFrame, idx, correction: str) -> None:
    """Correct one family's p-values together and state its detectable difference."""
    p = s.loc[idx, "p_vs_ref"].astype(float).to_numpy()
    m = int(np.isfinite(p).sum())
    s.loc[idx, "p_adj"] = adjust_p(p, correction)
    s.loc[idx, "family_size"] = m
    if m == 0:
        return
    level = family_level(m, correction)
    s.loc[idx, "family_level"] = level
    g = s.loc[idx]
    sd = g["dref_sd"].astype(float)
    ok = np.isfinite(p) & np.isfinite(sd) & (g["n_pairs"].astype(float) >= 2)
    if ok.any():
        med, n = float(np.median(sd[ok])), int(np.median(g.loc[ok, "n_pairs"].astype(float)))
        s.loc[idx, ["mdd", "mdd_sd", "mdd_n"]] = [detectable_difference(med, n, alpha=level), med, n]


def verdict(r, reference: str) -> str:
    """One row's verdict (summary.csv `verdict`)."""
    if r["family"] == "one-shot" and r["method"] == reference:
        return REFERENCE
    if isinstance(r["identical_to"], str):
        return IDENTICAL
    if not np.isfinite(float(r["p_adj"])):
        return UNTESTED
    if float(r["p_adj"]) < ALPHA:
        return SIGNIFICANT
    lo, hi = float(r["dref_lo"]), float(r["dref_hi"])
    return EXCLUDES_ZERO if lo > 0 or hi < 0 else NOT_SIGNIFICANT


def after(correction: str) -> str:
    """'after Holm', 'after Benjamini–Hochberg' or '(uncorrected)'."""
    return "(uncorrected)" if correction == "none" else f"after {CORRECTION_NAMES[correction]}"


def words(r, correction: str, scope: str = "this table") -> str:
    """What a comparison shows, in words that follow from its numbers: "significant after Holm (n seeds)", or "not
    significant after Holm; 95 % interval [a, b]; this table detects ≥ X pp"; "identical to <row>" for a row not
    tested. Never "noise"."""
    v = r["verdict"]
    if v == REFERENCE:
        return "reference"
    if v == IDENTICAL:
        return f"identical to {r['identical_to']} (not tested)"
    if v == UNTESTED:
        return "not tested (fewer than 2 paired seeds)" if int(r["n_pairs"]) else "not tested (no reference model)"
    if v == SIGNIFICANT:
        return f"significant {after(correction)} ({int(r['n_pairs'])} seeds)"
    detects = f"; {scope} detects ≥ {float(r['mdd']):.2f} pp" if np.isfinite(float(r["mdd"])) else ""
    return (f"not significant {after(correction)}; 95 % interval [{float(r['dref_lo']):+.2f}, "
            f"{float(r['dref_hi']):+.2f}]{detects}")
