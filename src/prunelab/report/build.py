"""Assemble the report: tables/ (CSV, Markdown, LaTeX) and figures/ (PNG + PDF)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from ..provenance import provenance_warnings
from ..settings import check_values, section_defaults
from . import figures as F, figures_extra as FX, ranking as RK
from .agreement import agreement_frame, agreement_mean
from .collect import annotate, csv_frame, load_metrics, load_scores
from .pat import pat_dense, pat_frame
from .render import Section, agreement_sections, baseline_section, md_section, reference_section, tex_section
from .sections import comparison_text, controls_sections, excludes_zero_section, pat_sections, summary_sections
from .style import save
from .tables import baseline_frame, keyed, reference_frame, select_rows, summary_frame

DEFAULT_RATIOS = (0.5, 0.7, 0.9)
# name -> (what it shows, function of the report's frames)
FIGURES = {
    "top1_vs_compression": ("test top-1 vs compression, every regime",
                            lambda c: F.accuracy(c["summary"], c["base"], "compression", c["reference"])),
    "top1_vs_macs": ("test top-1 vs MACs reduction (dense / pruned MACs) per fine-tuning budget, standard training",
                     lambda c: F.accuracy(c["summary"], c["base"], "speedup_theoretical", c["reference"], "standard")),
    "finetune_recovery": ("top-1 before vs after fine-tuning", lambda c: F.recovery(c["sel"], c["reference"])),
    "speedup_measured_vs_theoretical": ("measured vs theoretical speedup (median over seeds, with spread)",
                                        lambda c: F.speedups(c["summary"], c["reference"])),
    "layer_kept": ("per-layer kept fraction at one ratio",
                   lambda c: F.layer_kept(c["df"], c["layer_ratio"], c["reference"])),
    "agreement_heatmap": ("Spearman agreement of methods' scores", lambda c: F.agreement_heatmap(c["amean"])),
    "critical_difference": ("mean ranks over the curves with the Nemenyi critical difference (Demšar 2006)",
                            lambda c: RK.cd_diagram(c["ranks"], c["rank_info"])),
    "space_edf": ("pruning-space error EDFs per MACs regime", lambda c: FX.space_edf(c["df"])),
    "space_error_vs_ratio": ("pruning-space error vs MACs/params ratio", lambda c: FX.space_scatter(c["df"])),
    "gradual_vs_oneshot": ("gradual vs one-shot: accuracy vs training cost",
                           lambda c: FX.gradual_cost(c["df"], c["reference"])),
}


@dataclass(frozen=True)
class ReportSettings:
    """Config section `report` (its defaults and help: the schema's): the reference method every other method is
    compared with, the multiple-comparison correction of a family ('holm', 'bh', 'none'), and the ratio the
    per-layer figure shows."""

    reference: str
    correction: str
    layer_kept_ratio: float

    @classmethod
    def of(cls, values: dict | None = None) -> ReportSettings:
        """Settings from config['report'] (checked against the schema; missing keys: its defaults)."""
        given = dict(values or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise KeyError(f"report: unknown setting(s) {unknown}; known: {sorted(names)}")
        check_values("report", given)
        return cls(**{**section_defaults("report"), **given})


def build_report(metrics_files, out_dir, score_files=(), config: dict | None = None,
                 figures: bool = True) -> list[Path]:
    """Write out_dir/tables/{results.csv, summary.md, summary.tex, methods_agreement.csv, ...} and
    out_dir/figures/*.png + *.pdf from metrics.json (and score) files; return the paths written.
    figures=False writes the tables only."""
    metrics_files = list(metrics_files)
    if not metrics_files:
        raise ValueError("build_report needs at least one metrics.json file")
    return build_from_frame(load_metrics(metrics_files), load_scores(score_files), out_dir, config, figures)


def _ratios(df: pd.DataFrame, config: dict) -> list[float]:
    r = df.loc[df["stage"].isin(["pruned", "finetuned"]), "ratio_requested"].dropna().astype(float)
    if len(r):
        return sorted(set(r.round(4)))
    cfg = config.get("ratios") or (config.get("prune") or {}).get("ratios")
    if isinstance(cfg, dict):  # {granularity: [ratios]}
        cfg = [x for v in cfg.values() for x in v]
    return sorted({float(x) for x in cfg}) if cfg else list(DEFAULT_RATIOS)


def build_from_frame(results: pd.DataFrame, scores: list[dict], out_dir, config: dict | None = None,
                     figures: bool = True) -> list[Path]:
    """build_report on an already loaded results frame (collect.records_frame) and score sets."""
    config = dict(config or {})
    out_dir = Path(out_dir)
    tdir, fdir = out_dir / "tables", out_dir / "figures"
    tdir.mkdir(parents=True, exist_ok=True)
    written = []

    def write_csv(frame: pd.DataFrame, name: str):
        frame.to_csv(tdir / name, index=False)
        written.append(tdir / name)

    rs = ReportSettings.of(config.get("report"))
    ref = reference_frame(config.get("reference"))  # bad input fails before any work
    write_csv(csv_frame(results), "results.csv")
    df = keyed(annotate(results))
    base, sel = baseline_frame(df), select_rows(df)
    summary = summary_frame(df, rs.reference, rs.correction)
    pat = pat_frame(sel, rs.correction)
    auc, (ranks, rank_info) = RK.auc_frame(sel), RK.rank_frame(summary)
    budgets = RK.budget_frame(summary)
    agr = agreement_frame(scores, _ratios(df, config))
    amean = agreement_mean(agr)
    ref = reference_frame(config.get("reference"), summary)
    write_csv(base, "baselines.csv")
    write_csv(summary, "summary.csv")
    write_csv(pat, "pat.csv")
    write_csv(auc, "curve_area.csv")
    write_csv(ranks, "ranking.csv")
    write_csv(rank_info["blocks"], "ranking_blocks.csv")
    write_csv(budgets, "budget_ranks.csv")
    write_csv(agr, "methods_agreement.csv")
    write_csv(amean, "methods_agreement_mean.csv")
    if not ref.empty:
        write_csv(ref, "reference.csv")
    else:
        (tdir / "reference.csv").unlink(missing_ok=True)

    ctx = dict(df=df, sel=sel, summary=summary, base=base, amean=amean, ranks=ranks, rank_info=rank_info,
               reference=rs.reference,
               layer_ratio=rs.layer_kept_ratio)
    made, skipped = [], []
    plan = dict(FIGURES)
    for b, k in FX.sweeps(sel):  # one figure per swept method option (method variants)
        plan[f"sweep_{b}_{k}"] = (f"{b}: test top-1 vs {k}", lambda c, b=b, k=k: FX.sweep(c["sel"], b, k))
    for stale in fdir.glob("sweep_*.*") if figures else ():
        if stale.stem not in plan:
            stale.unlink()
    for name, (what, fn) in plan.items() if figures else ():
        fig = fn(ctx)
        if isinstance(fig, str):
            skipped.append((name, what, fig))
            for ext in ("png", "pdf"):  # no stale figure from an earlier, fuller run
                (fdir / f"{name}.{ext}").unlink(missing_ok=True)
        else:
            written += save(fig, fdir, name)
            made.append((name, what))

    sections = _sections(df, base, summary, pat, amean, ref, scores, rs)
    sections += RK.sections(auc, ranks, rank_info, budgets)
    fig_md = ["## Figures", ""] + [f"- `figures/{n}.png` (+ `.pdf`): {w}" for n, w in made]
    fig_md += [f"- not made: {n} ({w}): {why}" for n, w, why in skipped]
    if not figures:
        fig_md.append("Figures were not built in this run (tables only).")
    experiment = config.get("experiment") or ", ".join(sorted(str(e) for e in results["experiment"].dropna().unique()))
    counts = ", ".join(f"{k}: {v}" for k, v in results["stage"].value_counts().sort_index().items())
    head = [f"# PruneLab report: {experiment or 'unnamed experiment'}", "",
            f"{len(results)} models ({counts}); {len(scores)} score files.", ""]
    head += [f"**Warning:** {w}\n" for w in provenance_warnings(results.to_dict("records"))]
    body = [md_section(s, caption=s.caption != (sections[i - 1].caption if i else None))
            for i, s in enumerate(sections)]
    md = "\n".join(head + body + fig_md) + "\n"
    (tdir / "summary.md").write_text(md)
    tex = ["% PruneLab report: " + str(experiment), "% needs \\usepackage{booktabs}", ""]
    tex += [tex_section(s, f"{i}-{_slug(s.title)}") for i, s in enumerate(sections) if s.headers]
    (tdir / "summary.tex").write_text("\n".join(tex))
    written += [tdir / "summary.md", tdir / "summary.tex"]
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _sections(df, base, summary, pat, amean, ref, scores, rs: ReportSettings) -> list[Section]:
    out = [baseline_section(base) if not base.empty else Section("Baselines", "No baseline models yet.")]
    if summary.empty:
        out.append(Section("Pruned models", "No pruned, fine-tuned, gradual or scratch models yet."))
    else:
        stages = sorted(set(summary["stage"]))
        out.append(Section("Pruned models", f"Stages shown: {', '.join(stages)} (fine-tuned where present, at each "
                                            "fine-tuning budget; pruned-only otherwise). "
                           + comparison_text(summary, rs.reference, rs.correction)))
        out += summary_sections(summary, rs.reference, rs.correction)
        out += controls_sections(summary, rs.reference, rs.correction)
    out += pat_sections(pat, pat_dense(df), rs.correction)
    if not summary.empty:
        out.append(excludes_zero_section(summary, pat, rs.correction))
    if not ref.empty:
        out.append(reference_section(ref))
    if amean.empty:
        why = "no score files" if not scores else "fewer than two methods per model"
        out.append(Section("Method agreement", f"Skipped: {why}."))
    else:
        out.append(Section("Method agreement", "Per layer and per seed in methods_agreement.csv; seed means in "
                                               "methods_agreement_mean.csv."))
        out += agreement_sections(amean)
    return out
