"""Render numeric tables as Markdown and LaTeX (booktabs) sections."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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


TARGETS = {"units": "units", "params": "params", "macs": "MACs", "weights": "weights"}


def fmt_budget(budget) -> str:
    """'1600 steps' for a recorded fine-tuning budget, '' otherwise."""
    return f"{float(budget):g} steps" if _ok(budget) and np.isfinite(float(budget)) else ""


def curve_title(r, budget: bool = True) -> str:
    """'fnn · fashion_mnist · standard · structured (MACs) · 1600 steps': a curve (dataset · arch · regime ·
    granularity, with what a structured ratio is a fraction of) and, with budget, its fine-tuning budget."""
    gran = str(r["granularity"])
    if gran == "structured":
        gran += f" ({TARGETS.get(str(r['target']), str(r['target']))})"
    parts = [str(r["arch"]), str(r["dataset"])] + ([str(r["regime"])] if "regime" in r else []) + [gran]
    if budget and fmt_budget(r["budget"]):
        parts.append(fmt_budget(r["budget"]))
    return " · ".join(parts)


def fmt_steps(v) -> str:
    """Optimiser steps as an integer with thousands separators; '–' where not recorded."""
    return f"{float(v):,.0f}" if _ok(v) and np.isfinite(float(v)) else "–"


def baseline_section(base: pd.DataFrame) -> Section:
    headers = ["dataset", "arch", "regime", "n", "top-1 test (%)", "top-1 val (%)", "params (M)", "MACs (M)",
               "latency b1 (ms)", "latency b64 (ms)", "train time (s)"]
    steps = "steps_total_mean" in base and np.isfinite(base["steps_total_mean"].astype(float)).any()
    headers += ["steps"] if steps else []
    rows = [[(str(r["dataset"]), False), (str(r["arch"]), False), (str(r["regime"]), False),
             (str(r["n_seeds"]), False), (fmt_pm(r["top1_test_mean"], r["top1_test_std"]), False),
             (fmt_pm(r["top1_val_mean"], r["top1_val_std"]), False),
             (fmt_num(r["params_total_mean"], 3, 1e6), False), (fmt_num(r["macs_dense_mean"], 1, 1e6), False),
             (fmt_pm(r["latency_ms_b1_mean"], r["latency_ms_b1_std"]), False),
             (fmt_pm(r["latency_ms_b64_mean"], r["latency_ms_b64_std"]), False),
             (fmt_num(r["wall_s_mean"], 1), False)] + ([(fmt_steps(r["steps_total_mean"]), False)] if steps else [])
            for _, r in base.iterrows()]
    caption = "Dense baselines: mean ± std (sample std) over seeds" + ("; steps: optimiser steps of the baseline's "
                                                                       "training." if steps else ".")
    return Section("Baselines", caption, headers, rows)


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
        ("·", r"$\cdot$"), ("∩", r"$\cap$"), ("−", r"$-$"), ("∘", r"$^\circ$"), ("τ", r"$\tau$"),
        ("α", r"$\alpha$"), ("β", r"$\beta$"), ("κ", r"$\kappa$"), ("²", r"$^2$"), ("≤", r"$\leq$"),
        ("√", r"$\surd$")]


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
