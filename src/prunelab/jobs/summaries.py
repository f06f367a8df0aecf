"""Rules space_summary and track: summaries over finished jobs (one function per rule, called by its script with
Snakemake's `snakemake` object, duck-typed)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from prunelab.io import load_json, save_json
from prunelab.jobs import read_tracking_settings, start_script
from prunelab.pruning.space import CSV_COLUMNS, csv_row, summarize_space
from prunelab.tracking import sync_results

log = logging.getLogger("prunelab")


def space_summary_job(smk) -> None:
    """Rule space_summary: per MACs regime, error EDF, best sample, ratio-error correlations, structured matches
    → summary.json and summary.csv."""
    start_script(smk)
    wc, p = smk.wildcards, smk.params
    samples = [load_json(f) for f in smk.input.samples]
    structured = [load_json(f) for f in smk.input.structured]
    summary = summarize_space(samples, structured, p.macs_tol)
    summary.update(arch=wc.arch, seed=int(wc.seed), experiment=p.experiment, space=p.space)
    save_json(summary, smk.output.json)
    with open(smk.output.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(s) for s in summary["regimes"])


def track_job(smk) -> None:
    """Rule track (deferred mode): log every finished job to MLflow in this one process; idempotent."""
    start_script(smk)
    results_dir = Path(smk.output[0]).parent.parent  # results/{exp}/tracking/synced.json
    settings = read_tracking_settings(smk.params.tracking_file, results_dir.name)
    counts = sync_results(results_dir, settings["uri"], settings["experiment"])
    save_json({"uri": settings["uri"], "experiment": settings["experiment"], **counts}, smk.output[0])
    log.info("track: %d finished jobs in %s -> MLflow experiment %r at %s: %d runs logged (%d replacing an outdated "
             "run), %d already up to date", len(smk.input.metrics), results_dir, settings["experiment"],
             settings["uri"], counts["logged"], counts["replaced"], counts["skipped"])
