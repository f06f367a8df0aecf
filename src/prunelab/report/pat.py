"""Pruning-aware training against standard training: does training with the regulariser make the network more
prunable, for the same method? Paired (same dataset · arch · method · granularity · target · ratio · budget ·
seed) PaT − standard test top-1, one family per table (dataset · arch · granularity · target · budget)."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .families import compare, correct_family, identical, same_key, verdict
from .significance import ALPHA, paired_delta
from .tables import baseline_top1, per_seed

STANDARD = "standard"
_PAT = re.compile(r"^pat(?:-beta(?P<beta>.+))?$")  # `pat` (one β) or `pat-beta<value>` (a swept β)
TABLE = ["dataset", "arch", "granularity", "target", "budget"]
COLUMNS = ["dataset", "arch", "granularity", "target", "budget", "regime", "beta", "method", "ratio", "family",
           "identical_to", "seeds",
           "pat_top1_mean", "standard_top1_mean", "pat_steps_mean", "standard_steps_mean", "dref_mean", "dref_lo",
           "dref_hi", "dref_sd", "p_vs_ref", "test", "n_pairs", "p_adj", "family_size", "family_level", "mdd",
           "mdd_sd", "mdd_n", "correction", "significant", "excludes_zero", "verdict"]


def pat_beta(regime) -> str | None:
    """'' for `pat` (the config's one β), the value text for `pat-beta<value>`, None for any other regime."""
    m = _PAT.match(str(regime))
    return None if m is None else (m.group("beta") or "")


def pat_frame(sel: pd.DataFrame, correction: str) -> pd.DataFrame:
    """PaT − standard test top-1 per method × ratio (× β) from the report's selected rows (`select_rows`): mean,
    95 % t-interval, paired t-test, p corrected per table; rows of the same model in both regimes only. A method
    whose models equal another method's in both regimes (`families.identical`) is marked and not tested."""
    d = sel[sel["stage"].isin(("pruned", "finetuned"))] if not sel.empty else sel
    if d.empty or not d["regime"].map(lambda r: pat_beta(r) is not None).any():
        return pd.DataFrame(columns=COLUMNS)
    key = ["dataset", "arch", "gran", "target", "budget", "ratio", "label"]
    std = {k: g for k, g in d[d["regime"] == STANDARD].groupby(key, sort=False, dropna=False)}
    rows, seen = [], {}  # seen: point -> [(label, pat rows, standard rows)] of the methods tested there
    pats = d[d["regime"].map(lambda r: pat_beta(r) is not None)]
    for (regime, *k), g in pats.groupby(["regime"] + key, sort=False, dropna=False):
        k = tuple(k)
        other = next((v for kk, v in std.items() if all(same_key(a, b) for a, b in zip(kk, k))), None)
        if other is None:
            continue
        pat, ref = per_seed(g, "top1_test"), per_seed(other, "top1_test")
        ds, arch, gran, target, budget, ratio, label = k
        r = dict(dataset=ds, arch=arch, granularity=gran, target=target, budget=budget, regime=regime,
                 beta=pat_beta(regime), method=label, ratio=ratio, family="pat", identical_to=None,
                 seeds=" ".join(str(s) for s in sorted(set(pat.index) & set(ref.index))),
                 pat_top1_mean=float(pat.mean()), standard_top1_mean=float(ref.mean()),
                 pat_steps_mean=_mean(g, "steps_total"), standard_steps_mean=_mean(other, "steps_total"),
                 n_pairs=0, test=None)
        point = seen.setdefault(repr((regime, *k[:-1])), [])  # repr: a NaN budget is one key
        twin = next((lab for lab, gp, gs in point if _same_model(g, gp) and _same_model(other, gs)), None)
        if twin is None:
            point.append((label, g, other))
            r.update(compare(pat, ref))
        else:  # the same models as another method's in both regimes: the same question
            r["identical_to"] = twin
            r.update(dref_mean=math.nan, dref_lo=math.nan, dref_hi=math.nan, dref_sd=math.nan, p_vs_ref=math.nan)
        rows.append(r)
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(rows)
    for col in ("p_adj", "family_size", "family_level", "mdd", "mdd_sd", "mdd_n"):
        out[col] = math.nan
    out = out.sort_values(["dataset", "arch", "granularity", "target", "budget", "method", "beta", "ratio"],
                          kind="mergesort", na_position="first").reset_index(drop=True)
    for _, g in out.groupby(TABLE, sort=False, dropna=False):
        correct_family(out, g.index, correction)
    out["correction"] = correction
    out["significant"] = out["p_adj"].astype(float) < ALPHA
    out["excludes_zero"] = (out["dref_lo"].astype(float) > 0) | (out["dref_hi"].astype(float) < 0)
    out["verdict"] = [verdict(r, reference="") for _, r in out.iterrows()]
    return out[COLUMNS]


def pat_dense(df: pd.DataFrame) -> list[dict]:
    """The baselines' own difference, PaT − standard test top-1 paired by seed, per dataset · arch · PaT regime:
    context for the PaT table (not a test of prunability): {dataset, arch, regime, mean, lo, hi, n}."""
    base = baseline_top1(df)
    out = []
    for ds, arch, regime in sorted({k[:3] for k in base if pat_beta(k[2]) is not None}):
        seeds = sorted(s for (d, a, r, s) in base if (d, a, r) == (ds, arch, regime)
                       and (ds, arch, STANDARD, s) in base)
        if not seeds:
            continue
        mean, lo, hi, _, n = paired_delta([base[(ds, arch, regime, s)] for s in seeds],
                                          [base[(ds, arch, STANDARD, s)] for s in seeds])
        out.append(dict(dataset=ds, arch=arch, regime=regime, mean=mean, lo=lo, hi=hi, n=n))
    return out


def _same_model(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """`families.identical` of two groups of rows (per-seed test top-1 and loss)."""
    if "loss_test" not in a:
        return False
    return identical(per_seed(a, "top1_test"), per_seed(b, "top1_test"), per_seed(a, "loss_test"),
                     per_seed(b, "loss_test"))


def _mean(g: pd.DataFrame, col: str) -> float:
    v = per_seed(g, col) if col in g else pd.Series(dtype=float)
    return float(v.mean()) if len(v) else math.nan
