"""Rule report: the workflow's entry to the report (kept out of the package's own imports: the job wrapper
imports torch, which the report does not need)."""

from __future__ import annotations

from pathlib import Path

from prunelab.jobs import start_script
from prunelab.report.build import build_report


def report_job(smk) -> None:
    """Rule report: tables and figures from every metrics.json (and score file) of the experiment (called by its
    script with Snakemake's `snakemake` object, duck-typed)."""
    start_script(smk)
    out_dir = Path(smk.output.results).parent.parent
    build_report([Path(p) for p in smk.input.metrics], out_dir, score_files=[Path(p) for p in smk.input.scores],
                 config={"experiment": smk.params.experiment, "reference": smk.params.reference,
                         "report": smk.params.report})
    Path(smk.output.figures).mkdir(parents=True, exist_ok=True)
