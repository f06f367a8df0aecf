"""Rules collect_stats and score: the calibration statistics of a baseline and each method's scores (one
function per rule, called by its script with Snakemake's `snakemake` object, duck-typed)."""

from __future__ import annotations

from prunelab.data import load_prepared
from prunelab.io import load_model, save_torch
from prunelab.jobs import script_params, start_script
from prunelab.methods import score_model
from prunelab.models import pick_device
from prunelab.stats import collect_baseline_statistics, load_statistics, save_statistics


def collect_stats_job(smk) -> None:
    """Rule collect_stats: one calibration pass over the train split → stats.pt (what the methods declare)."""
    start_script(smk)
    p = script_params(smk)
    device = pick_device(p.device)
    data = load_prepared(smk.input.data)
    model, _, _ = load_model(smk.input.model, device)
    stats = collect_baseline_statistics(model, data, p.needs, p.stats, int(smk.wildcards.seed), device, p.lrp)
    save_statistics(stats, smk.output.stats)


def score_job(smk) -> None:
    """Rule score: one method turns the statistics (+ weights) into per-layer scores → {method}.pt."""
    start_script(smk)
    model, arch, _ = load_model(smk.input.model)
    stats = load_statistics(smk.input.stats)
    scores = score_model(model, stats, smk.wildcards.method, smk.params.method_config)
    save_torch({**scores, "arch": arch["name"]}, smk.output.scores)
