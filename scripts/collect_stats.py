"""Rule collect_stats: one calibration pass over the train split → stats.pt (what the methods declare)."""
from prunelab.data import load_prepared
from prunelab.io import load_model
from prunelab.jobs import end_process, script_params, start_script
from prunelab.pipeline import collect_baseline_statistics
from prunelab.stats import save_statistics
from prunelab.train import pick_device

start_script(snakemake)
p = script_params(snakemake)
device = pick_device(p.device)
data = load_prepared(snakemake.input.data)
model, arch, _ = load_model(snakemake.input.model, device)
stats = collect_baseline_statistics(model, data, p.needs, p.stats, int(snakemake.wildcards.seed), device, p.lrp)
save_statistics(stats, snakemake.output.stats)
end_process()
