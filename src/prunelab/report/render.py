"""Render numeric tables as Markdown and LaTeX (booktabs) sections."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .significance import ALPHA, CORRECTIONS, TEST_NAMES, WILCOXON_MIN_PAIRS

Cell = tuple[str, bool]  # (text, bold)


@dataclass
class Section:
    title: str
    caption: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    level: int = 2


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and not pd.isna(v)


def fmt_pm(mean, std=math.nan, nd: int = 2, sign: bool = False) -> str:
    """'mean ± std' (std omitted when undefined); '–' when there is no mean."""
    if not _ok(mean):
        return "–"
    f = f"{{:{'+' if sign else ''}.{nd}f}}"
    return f.format(mean) + (f" ± {std:.{nd}f}" if _ok(std) else "")


def fmt_num(v, nd: int = 2, scale: float = 1.0) -> str:
    return f"{v / scale:.{nd}f}" if _ok(v) else "–"


def fmt_ci(mean, lo, hi, nd: int = 2) -> str:
    """'mean [lo, hi]' with signs (interval omitted when undefined); '–' without a mean."""
    if not _ok(mean):
        return "–"
    return f"{mean:+.{nd}f}" + (f" [{lo:+.{nd}f}, {hi:+.{nd}f}]" if _ok(lo) and _ok(hi) else "")


def fmt_p(p) -> str:
    return "–" if not _ok(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def comparison_text(summary: pd.DataFrame, reference: str, correction: str) -> str:
    """What the per-table comparisons are: reference, tests used, correction, seeds (for summary.md)."""
    rule = (f"paired t-test below {WILCOXON_MIN_PAIRS} paired seeds, Wilcoxon signed-rank test from "
            f"{WILCOXON_MIN_PAIRS} on")
    if summary.empty or not (summary["method"] == reference).any():
        return (f"The reference method `{reference}` (config `report.reference`) is not in this experiment: the "
                "comparisons against it are skipped.")
    used = sorted(set(summary["test"].dropna()))
    tests = " and ".join(TEST_NAMES[t] for t in used) if used else "none possible (a test needs ≥ 2 paired seeds)"
    pairs = sorted({int(n) for n in summary["n_pairs"] if n >= 1})
    seeds = ", ".join(str(n) for n in pairs) if pairs else "0"
    return (f"Each method is compared with `{reference}` (config `report.reference`), paired by seed: test used "
            f"here {tests} (rule: {rule}); paired seeds per comparison: {seeds}. The p-values of one table (every "
            f"method × ratio of one dataset · arch · regime · granularity) form one family, corrected by "
            f"{CORRECTIONS[correction]} (config `report.correction`); † marks corrected p < {ALPHA}. Δ columns are "
            "paired differences (mean over seeds [95 % t-interval, scipy.stats.ttest_rel(...).confidence_interval()]). "
            "Measured speedup: median over seeds (IQR of the per-round dense/pruned latency ratios within the "
            "job); ≈ marks a spread larger than the effect |speedup − 1|.")


def summary_sections(summary: pd.DataFrame, reference: str, correction: str) -> list[Section]:
    """One table per dataset × arch × regime × granularity (one correction family each)."""
    if summary.empty:
        return []
    headers = ["ratio", "method", "stage", "n", "top-1 (%)", "Δ top-1 (pp) [95 % CI]",
               f"Δ vs {reference} (pp) [95 % CI]", f"p ({correction})", "compression (×)", "speedup theor. (×)",
               "speedup meas. (×)", "top-1 before FT (%)"]
    out = []
    for (ds, arch, regime, gran), g in summary.groupby(["dataset", "arch", "regime", "granularity"], sort=False):
        rows = []
        for _, r in g.iterrows():
            b = bool(r["best"])
            top1 = fmt_pm(r["top1_mean"], r["top1_std"]) + ("†" if r["significant"] else "")
            meas = fmt_num(r["speedup_measured_median"])
            if _ok(r["speedup_measured_spread"]):
                meas += f" (IQR {r['speedup_measured_spread']:.2f})" + ("≈" if r["speedup_measured_noisy"] else "")
            p = "ref" if r["method"] == reference else fmt_p(r["p_adj"]) + ("†" if r["significant"] else "")
            rows.append([(fmt_num(r["ratio"]), False), (str(r["method"]), b), (str(r["stage"]), False),
                         (str(r["n_seeds"]), False), (top1, b),
                         (fmt_ci(r["delta_mean"], r["delta_lo"], r["delta_hi"]), False),
                         (fmt_ci(r["dref_mean"], r["dref_lo"], r["dref_hi"]), False), (p, False),
                         (fmt_num(r["compression_mean"]), False), (fmt_num(r["speedup_theoretical_mean"]), False),
                         (meas, False), (fmt_pm(r["before_mean"], r["before_std"]), False)])
        out.append(Section(f"{arch} · {ds} · {regime} · {gran}", _table_caption(g, reference, correction),
                           headers, rows, level=3))
    return out


def _table_caption(g: pd.DataFrame, reference: str, correction: str) -> str:
    head = "Test top-1 mean ± std over seeds; bold: best mean top-1 per ratio."
    if not (g["method"] == reference).any():
        return head + f" No `{reference}` model here: no comparison."
    fam = int(np.nanmax(g["family_size"])) if np.isfinite(g["family_size"]).any() else 0
    head += f" {fam} comparisons with `{reference}`, p corrected together ({correction})."
    if not np.isfinite(g["mdd"]).any():
        return head + " Detectable difference: undefined (fewer than 2 paired seeds)."
    n = int(np.median(g.loc[np.isfinite(g["mdd"]) & (g["n_pairs"] >= 2), "n_pairs"]))
    return head + (f" Smallest Δ vs {reference} detectable at 80 % power with {n} paired seeds (paired t, two-sided "
                   f"α = {ALPHA}, pooled paired sd {g['mdd_sd'].iloc[0]:.2f} pp): {g['mdd'].iloc[0]:.2f} pp.")


def baseline_section(base: pd.DataFrame) -> Section:
    headers = ["dataset", "arch", "regime", "n", "top-1 test (%)", "top-1 val (%)", "params (M)", "MACs (M)",
               "latency b1 (ms)", "latency b64 (ms)", "train time (s)"]
    rows = [[(str(r["dataset"]), False), (str(r["arch"]), False), (str(r["regime"]), False),
             (str(r["n_seeds"]), False), (fmt_pm(r["top1_test_mean"], r["top1_test_std"]), False),
             (fmt_pm(r["top1_val_mean"], r["top1_val_std"]), False),
             (fmt_num(r["params_total_mean"], 3, 1e6), False), (fmt_num(r["macs_dense_mean"], 1, 1e6), False),
             (fmt_pm(r["latency_ms_b1_mean"], r["latency_ms_b1_std"]), False),
             (fmt_pm(r["latency_ms_b64_mean"], r["latency_ms_b64_std"]), False),
             (fmt_num(r["wall_s_mean"], 1), False)] for _, r in base.iterrows()]
    return Section("Baselines", "Dense baselines: mean ± std (sample std) over seeds.", headers, rows)


def reference_section(ref: pd.DataFrame) -> Section:
    headers = ["arch", "dataset", "method", "granularity", "ratio", "top-1 dense (%)", "top-1 pruned (%)",
               "Δ (pp)", "compression (×)", "FLOPs reduction", "ours top-1 (%)", "ours Δ (pp)", "source"]
    rows = []
    for _, r in ref.iterrows():
        txt = lambda v: str(v) if _ok(v) else "–"  # noqa: E731
        rows.append([(txt(r["arch"]), False), (txt(r["dataset"]), False), (txt(r["method"]), False),
                     (txt(r["granularity"]), False), (fmt_num(r["ratio"]), False),
                     (fmt_num(r["top1_dense"]), False), (fmt_num(r["top1_pruned"]), False),
                     (fmt_pm(r["delta"], sign=True), False), (fmt_num(r["compression"]), False),
                     (txt(r["flops_reduction"]), False), (fmt_num(r["ours_top1"]), False),
                     (fmt_pm(r["ours_delta"], sign=True), False), (txt(r["source"]), False)])
    return Section("Published reference numbers",
                   "As published (config `reference`); ours: the matching standard-regime row above.", headers, rows)


def agreement_sections(mean: pd.DataFrame) -> list[Section]:
    """Overall agreement per arch × regime × granularity: Spearman and Jaccard at each ratio."""
    if mean.empty:
        return []
    out = []
    m = mean[mean["layer"] == "__all__"]
    for (arch, regime, gran), g in m.groupby(["arch", "regime", "granularity"], sort=False):
        ratios = sorted(g["ratio"].unique())
        headers = ["method pair", "n seeds", "Spearman ρ"] + [f"Jaccard @ {r:.2f}" for r in ratios]
        rows = []
        for (a, b), p in g.groupby(["method_a", "method_b"], sort=False):
            p = p.set_index("ratio")
            first = p.iloc[0]
            rows.append([(f"{a} – {b}", False), (str(int(first["n_seeds"])), False),
                         (fmt_pm(first["spearman_mean"], first["spearman_std"]), False)]
                        + [(fmt_pm(p.loc[r, "jaccard_mean"], p.loc[r, "jaccard_std"]), False) for r in ratios])
        out.append(Section(f"Method agreement: {arch} · {regime} · {gran}",
                           "All layers together (global ranking); mean ± std over seeds. Jaccard overlap of the "
                           "pruned sets (lowest-scoring fraction).", headers, rows, level=3))
    return out


# ---- writers ----------------------------------------------------------------------------------

def md_table(headers: list[str], rows: list[list[Cell]]) -> str:
    esc = lambda t: t.replace("|", "\\|")  # noqa: E731
    cell = lambda c: f"**{esc(c[0])}**" if c[1] and c[0] != "–" else esc(c[0])  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def md_section(s: Section, caption: bool = True) -> str:
    parts = [f"{'#' * s.level} {s.title}", "", f"*{s.caption}*" if s.caption and caption else ""]
    if s.headers:
        parts += ["", md_table(s.headers, s.rows)]
    return "\n".join(parts).rstrip() + "\n"


_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"), ("{", r"\{"),
        ("}", r"\}"), ("$", r"\$"), ("`", ""), ("±", r"$\pm$"), ("†", r"$^\dagger$"), ("×", r"$\times$"),
        ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"), ("ρ", r"$\rho$"), ("≈", r"$\approx$"), ("χ", r"$\chi$"),
        ("≥", r"$\geq$"), ("—", "---"), ("–", "--"),
        ("·", r"$\cdot$"), ("∩", r"$\cap$")]


def tex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        for a, b in _TEX:
            if ch == a:
                ch = b
                break
        out.append(ch)
    return "".join(out)


def tex_section(s: Section, label: str) -> str:
    if not s.headers:
        return f"% {tex_escape(s.title)}: {tex_escape(s.caption)}\n"
    num = lambda t: re.sub(r"(?<![\w.])-(?=\d)", "$-$", tex_escape(t))  # noqa: E731 - minus, not hyphen
    cell = lambda c: rf"\textbf{{{num(c[0])}}}" if c[1] else num(c[0])  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(s.headers) + "}",
             r"\toprule", " & ".join(tex_escape(h) for h in s.headers) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in r) + r" \\" for r in s.rows]
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{tex_escape(s.title)}. {tex_escape(s.caption)}}}", rf"\label{{tab:{label}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
