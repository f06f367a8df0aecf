"""The README's results section, generated from a finished report's tables (summary.csv, pat.csv,
budget_ranks.csv, baselines.csv): the findings first (at most ten lines, each with its number, interval and n, in
words that follow from its test), one compact table per architecture (Δ top-1 to the reference at matched cost per
method and ratio, at every fine-tuning budget, with intervals and marks), the accuracy-vs-MACs figure, the PaT
table, and the controls with every arm's steps. Everything else stays in the report, linked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .families import CORRECTION_NAMES, EXCLUDES_ZERO, IDENTICAL, SIGNIFICANT, after, words
from .ranking import rank_frame
from .render import curve_title, fmt_budget, fmt_steps
from .sections import NEAR, SIG
from .significance import FRIEDMAN_MIN_BLOCKS

MAX_FINDINGS, MAX_LINES = 10, 120
STANDARD = "standard"
FIGURE = ("top1_vs_macs", "test top-1 vs MACs reduction, per fine-tuning budget")


def _steps(v) -> str:
    """' (12,345 steps)', or '' where not recorded."""
    return f" ({fmt_steps(v)} steps)" if _ok(v) else ""


def _budgets_text(budgets: list) -> str:
    """'200 / 1,600 steps', or 'the one fine-tuning budget (not recorded)'."""
    known = [fmt_budget(b) for b in budgets if fmt_budget(b)]
    return " / ".join(known) if known else "the one fine-tuning budget (not recorded)"


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


def pp(mean, lo, hi, nd: int = 2) -> str:
    """'−1.64 pp [−2.18, −1.10]'."""
    return f"{mean:+.{nd}f} pp [{lo:+.{nd}f}, {hi:+.{nd}f}]"


def cell(r, nd: int = 1) -> str:
    """A compact table cell: 'Δ [lo, hi]' with its mark, '=' for a row identical to another, '' for none."""
    if r is None:
        return ""
    if r["verdict"] == IDENTICAL:
        return f"= {r['identical_to']}"
    if not _ok(r["dref_mean"]):
        return "–"
    mark = SIG if r["verdict"] == SIGNIFICANT else NEAR if r["verdict"] == EXCLUDES_ZERO else ""
    if not (_ok(r["dref_lo"]) and _ok(r["dref_hi"])):
        return f"{r['dref_mean']:+.{nd}f}{mark}"
    return f"{r['dref_mean']:+.{nd}f} [{r['dref_lo']:+.{nd}f}, {r['dref_hi']:+.{nd}f}]{mark}"


def budgets_of(frame: pd.DataFrame) -> list:
    """The fine-tuning budgets in a frame, ascending (NaN, not recorded, first)."""
    return sorted(frame["budget"].unique(), key=lambda b: -1.0 if pd.isna(b) else float(b))


def _at(frame: pd.DataFrame, budget) -> pd.DataFrame:
    return frame[frame["budget"].isna()] if pd.isna(budget) else frame[frame["budget"] == budget]


def _largest(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at the largest fine-tuning budget."""
    return _at(frame, budgets_of(frame)[-1]) if len(frame) else frame


def _table_line(g: pd.DataFrame, correction: str, others: pd.DataFrame) -> str:
    """One finding: a one-shot table at its largest budget, read from its verdicts."""
    first = g.iloc[0]
    ref = first["reference"]
    tested = g[g["p_adj"].notna()]
    n = int(np.median(tested["n_pairs"])) if len(tested) else 0
    head = (f"**{curve_title(first.to_dict() | {'regime': STANDARD})}** (m = {len(tested)}, {n} seeds, "
            f"{CORRECTION_NAMES[correction]}): ")
    sig = tested[tested["verdict"] == SIGNIFICANT]
    near = tested[tested["verdict"] == EXCLUDES_ZERO]
    if len(sig):
        worse, better = (sig["dref_mean"] < 0).sum(), (sig["dref_mean"] > 0).sum()
        top = sig.loc[sig["dref_mean"].abs().idxmax()]
        text = (f"{len(sig)} difference{'s' if len(sig) > 1 else ''} to {ref} significant {after(correction)} "
                f"({worse} worse, {better} better); "
                f"largest {top['method']} at {top['ratio']:.2f}: "
                f"{pp(top['dref_mean'], top['dref_lo'], top['dref_hi'])}")
    else:
        text = f"no difference to {ref} significant {after(correction)}"
        if len(tested):
            top = tested.loc[tested["dref_mean"].abs().idxmax()]
            text += (f"; largest {top['method']} at {top['ratio']:.2f}: {top['dref_mean']:+.2f} pp, "
                     f"{words(top, correction)}")
    if len(near):
        e = near.loc[near["dref_mean"].abs().idxmax()]
        text += (f"; {len(near)} more with an interval excluding 0 but not significant (listed in the report), e.g. "
                 f"{e['method']} at {e['ratio']:.2f}: {e['dref_mean']:+.2f} pp, {words(e, correction)}")
    elif len(sig) and np.isfinite(first["mdd"]):
        text += f"; this table detects ≥ {first['mdd']:.2f} pp"
    for b, o in others.groupby("budget", sort=True):
        k = int((o["verdict"] == SIGNIFICANT).sum())
        text += f" (at {fmt_budget(b)}: {k} of {int(o['p_adj'].notna().sum())} significant)"
    return head + text + "."


def findings(summary: pd.DataFrame, pat: pd.DataFrame, correction: str) -> list[str]:
    """At most MAX_FINDINGS lines, each with its number, interval and n: per standard-training table at its largest
    budget, the controls per arch, pruning-aware training, and the ranking over blocks."""
    out = []
    one = summary[(summary["family"] == "one-shot") & (summary["regime"] == STANDARD)]
    for _, c in one.groupby(["dataset", "arch", "granularity", "target"], sort=False):
        top = _largest(c)
        rest = c.drop(top.index) if len(budgets_of(c)) > 1 else c.iloc[:0]
        out.append(_table_line(top, correction, rest))
    ctl = summary[(summary["family"] == "controls") & (summary["regime"] == STANDARD) & summary["p_adj"].notna()]
    for (ds, arch), g in ctl.groupby(["dataset", "arch"], sort=False):
        ref = g.iloc[0]["reference"]
        items = [f"{r['method']} at {r['ratio']:.2f}{_steps(r['steps_total_mean'])} vs {ref} fine-tuned"
                 + (f" {fmt_budget(r['ref_budget'])}" if fmt_budget(r["ref_budget"]) else "")
                 + f"{_steps(r['ref_steps'])}: {pp(r['dref_mean'], r['dref_lo'], r['dref_hi'])}, "
                 f"{words(r, correction, 'this family')}" for _, r in g.iterrows()]
        out.append(f"**{arch} controls**: " + "; ".join(items) + ".")
    tested = pat[pat["p_adj"].notna()] if not pat.empty else pat
    if len(tested):
        sig = tested[tested["verdict"] == SIGNIFICANT]
        pool = sig if len(sig) else tested
        top = pool.loc[pool["dref_mean"].abs().idxmax()]
        n = int(np.median(tested["n_pairs"]))
        where = ", ".join(x for x in (str(top["regime"]), str(top["granularity"]), f"{top['ratio']:.2f}",
                                      fmt_budget(top["budget"])) if x)
        out.append(f"**Pruning-aware training − standard** (same method, ratio, budget and seed; m = {len(tested)} "
                   f"in {tested.groupby(['dataset', 'arch', 'granularity', 'target', 'budget'], dropna=False).ngroups}"
                   f" tables, {n} seeds): {len(sig)} significant {after(correction)}; largest"
                   f"{' significant' if len(sig) else ''}: {top['method']} ({where}) "
                   f"{pp(top['dref_mean'], top['dref_lo'], top['dref_hi'])}, {words(top, correction)}.")
    ranks, info = rank_frame(summary)
    if len(ranks):
        items = ", ".join(f"{r['method']} {r['mean_rank']:.2f} [{r['rank_min']:g}–{r['rank_max']:g}]"
                          for _, r in ranks.iterrows())
        test = (f"Friedman p = {info['p']:.2g}, Nemenyi CD = {info['cd']:.2f}" if info["applies"] else
                f"no Friedman test: {info['n']} blocks, fewer than the {FRIEDMAN_MIN_BLOCKS} Demšar 2006 asks for")
        out.append(f"**Mean rank** (1 = best) [range] over {info['n']} blocks (curve × budget; {test}): {items}.")
    return out[:MAX_FINDINGS]


def _compact(rows: pd.DataFrame, index: list[str], budgets: list) -> tuple[list[str], list[list[str]]]:
    """Columns: the ratios; a row per `index` value; a cell per point: its budgets' cells joined by ' / '."""
    ratios = sorted(rows["ratio"].unique())
    body = []
    for key, g in rows.groupby(index, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        cells = []
        for r in ratios:
            at = g[g["ratio"] == r]
            parts = [cell(next((x for _, x in _at(at, b).iterrows()), None)) for b in budgets]
            cells.append(" / ".join(parts) if any(parts) else "")
        body.append([str(k) for k in key] + cells)
    return [f"{r:g}" for r in ratios], body


def md(headers: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def arch_tables(summary: pd.DataFrame, correction: str) -> list[str]:
    """One compact table per architecture (standard training): Δ top-1 to the reference per method and ratio, at
    every budget, with 95 % intervals and marks."""
    one = summary[(summary["family"] == "one-shot") & (summary["regime"] == STANDARD)]
    out = []
    for (ds, arch), a in one.groupby(["dataset", "arch"], sort=False):
        ref = a.iloc[0]["reference"]
        budgets = budgets_of(a)
        rows = a[(a["method"] != ref) & (a["verdict"] != IDENTICAL)].copy()
        rows["curve"] = [curve_title(r.to_dict() | {"regime": STANDARD, "budget": np.nan}).split(" · ")[-1]
                         for _, r in rows.iterrows()]
        ratios, body = _compact(rows, ["curve", "method"], budgets)
        same = sorted({f"{m} = {t}" for m, t in a.loc[a["verdict"] == IDENTICAL, ["method", "identical_to"]]
                       .itertuples(index=False)})
        n = int(np.median(rows.loc[rows["p_adj"].notna(), "n_pairs"])) if rows["p_adj"].notna().any() else 0
        out += [f"**{arch}** ({ds}): Δ top-1 to {ref} (pp), mean [95 % t-interval] over {n} paired seeds, at "
                f"{_budgets_text(budgets)}; "
                f"{SIG} significant {after(correction)} in its table, {NEAR} interval excludes 0 but not significant."
                + (f" Identical in fact to another row, not tested: {'; '.join(same)}." if same else ""), ""]
        out += md(["granularity", "method"] + ratios, body) + [""]
    return out


def pat_table(pat: pd.DataFrame, correction: str) -> list[str]:
    """PaT − standard test top-1 per method × ratio × regime, at every budget."""
    if pat.empty:
        return []
    rows = pat.copy()
    rows["curve"] = [f"{r['arch']} · {curve_title(r.to_dict() | {'budget': np.nan}).split(' · ')[-1]}"
                     for _, r in rows.iterrows()]
    budgets = budgets_of(rows)
    ratios, body = _compact(rows, ["curve", "method", "regime"], budgets)
    return ([f"**Pruning-aware training**: PaT − standard test top-1 (pp) for the same method, ratio and seed, mean "
             f"[95 % t-interval], at {_budgets_text(budgets)}; {SIG} significant {after(correction)} in its table "
             f"(one per arch · granularity · budget), {NEAR} interval excludes 0 but not significant.", ""]
            + md(["arch · granularity", "method", "regime"] + ratios, body) + [""])


def arms_table(summary: pd.DataFrame, base: pd.DataFrame) -> list[str]:
    """Every arm's steps beside its accuracy: the dense baseline, the reference fine-tuned at each budget at the
    controls' ratio, and the controls with their Δ to the reference at the largest budget."""
    ctl = summary[(summary["family"] == "controls") & (summary["regime"] == STANDARD)]
    if ctl.empty:
        return []
    rows = []
    for (ds, arch), g in ctl.groupby(["dataset", "arch"], sort=False):
        ref = g.iloc[0]["reference"]
        b = base[(base["dataset"] == ds) & (base["arch"] == arch) & (base["regime"] == STANDARD)]
        if len(b):
            b = b.iloc[0]
            rows.append([arch, "dense baseline", "", str(b["n_seeds"]), f"{b['top1_test_mean']:.2f}",
                         fmt_steps(b.get("steps_total_mean")), ""])
        for ratio in sorted(g["ratio"].unique()):
            one = summary[(summary["family"] == "one-shot") & (summary["dataset"] == ds) & (summary["arch"] == arch)
                          & (summary["regime"] == STANDARD) & (summary["method"] == ref) & (summary["ratio"] == ratio)
                          & (summary["granularity"] == g.iloc[0]["granularity"])]
            top = budgets_of(one)[-1] if len(one) else None
            for _, r in one.iterrows():
                is_ref = (pd.isna(top) and pd.isna(r["budget"])) or r["budget"] == top
                rows.append([arch, f"{ref} fine-tuned {fmt_budget(r['budget'])}".strip(), f"{ratio:g}",
                             str(r["n_seeds"]), f"{r['top1_mean']:.2f}", fmt_steps(r["steps_total_mean"]),
                             "ref" if is_ref else ""])
            for _, r in g[g["ratio"] == ratio].iterrows():
                rows.append([arch, str(r["method"]), f"{ratio:g}", str(r["n_seeds"]), f"{r['top1_mean']:.2f}",
                             fmt_steps(r["steps_total_mean"]), cell(r, 2)])
    return (["**Controls and every arm's budget**: optimiser steps in all (baseline included); Δ to the reference "
             "fine-tuned at the largest budget (pp) [95 % t-interval], the controls in a family of their own.", ""]
            + md(["arch", "arm", "ratio", "n", "top-1 (%)", "steps", "Δ (pp) [95 % CI]"], rows) + [""])


def budget_lines(budgets: pd.DataFrame) -> list[str]:
    """The order of methods between budgets, per curve: Spearman ρ and Kendall τ (k methods)."""
    if budgets.empty:
        return []
    items = [f"{curve_title(r.to_dict() | {'budget': np.nan}).split(' · ', 2)[0]} · "
             f"{curve_title(r.to_dict() | {'budget': np.nan}).split(' · ')[-1]}"
             f" {r['budget_a']:g} vs {r['budget_b']:g} steps: ρ = {r['spearman']:.2f}, τ = {r['kendall']:.2f} "
             f"({int(r['n_methods'])} methods)" for _, r in budgets[budgets["regime"] == STANDARD].iterrows()]
    return ([f"Order of the methods' mean top-1 between budgets: {'; '.join(items)}.", ""] if items else [])


def body(report: Path, out_rel: str) -> list[str]:
    """The generated part of the section (after its provenance lines), from the report folder `report`."""
    tables = report / "tables"
    summary = pd.read_csv(tables / "summary.csv")
    pat = pd.read_csv(tables / "pat.csv") if (tables / "pat.csv").is_file() else pd.DataFrame()
    budgets = pd.read_csv(tables / "budget_ranks.csv") if (tables / "budget_ranks.csv").is_file() else pd.DataFrame()
    base = pd.read_csv(tables / "baselines.csv")
    if "verdict" not in summary or "correction" not in summary:
        raise ValueError(f"{tables / 'summary.csv'}: no `verdict` column (a report older than this publisher); "
                         "rebuild the report")
    correction = _correction(summary)
    for frame in (summary, pat):  # a method named like a number, a regime like "pat": text
        for col in ("method", "identical_to", "regime", "target", "granularity", "reference"):
            if col in frame:
                frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    lines = ["**Findings.**", ""] + [f"- {f}" for f in findings(summary, pat, correction)] + [""]
    lines += arch_tables(summary, correction) + budget_lines(budgets)
    if (report / "figures" / f"{FIGURE[0]}.png").exists():
        lines += [f"![{FIGURE[1]}]({out_rel}/figures/{FIGURE[0]}.png)", ""]
    lines += pat_table(pat, correction) + arms_table(summary, base)
    lines += [f"Everything else (every table with p-values and verdicts, the differences whose interval excludes 0, "
              f"curve areas, the ranking per block, method agreement, sweeps, per-layer and other figures): "
              f"[`{out_rel}/summary.md`]({out_rel}/summary.md) and [`{out_rel}/figures/`]({out_rel}/figures/); the "
              f"statistics are explained in [`docs/statistics.md`](docs/statistics.md)."]
    return lines


def _correction(summary: pd.DataFrame) -> str:
    """The correction the report used (summary.csv `correction`)."""
    used = sorted(set(summary["correction"].dropna()))
    if len(used) != 1:
        raise ValueError(f"summary.csv: expected one correction, found {used}")
    return str(used[0])
