"""Rule score: one method turns the statistics (+ weights) into per-layer scores → {method}.pt."""
from prunelab.io import load_model, save_torch
from prunelab.jobs import end_process, start_script
from prunelab.methods import score_model
from prunelab.stats import load_statistics

start_script(snakemake)
model, arch, _ = load_model(snakemake.input.model)
stats = load_statistics(snakemake.input.stats)
scores = score_model(model, stats, snakemake.wildcards.method, snakemake.params.method_config)
save_torch({**scores, "arch": arch["name"]}, snakemake.output.scores)
end_process()
