"""Rule space_summary: per MACs regime, error EDF, best sample, ratio-error correlations, structured matches."""
import csv

from prunelab.io import load_json, save_json
from prunelab.jobs import start_script
from prunelab.pruning.space import CSV_COLUMNS, csv_row, summarize_space

start_script(snakemake)
wc, p = snakemake.wildcards, snakemake.params
samples = [load_json(f) for f in snakemake.input.samples]
structured = [load_json(f) for f in snakemake.input.structured]
summary = summarize_space(samples, structured, p.macs_tol)
summary.update(arch=wc.arch, seed=int(wc.seed), experiment=p.experiment, space=p.space)
save_json(summary, snakemake.output.json)
with open(snakemake.output.csv, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(s) for s in summary["regimes"])
