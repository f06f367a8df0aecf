"""Rule pruning_space: one random subnetwork of the standard baseline at a MACs regime, built and fine-tuned."""
from pathlib import Path

from prunelab.data import load_prepared
from prunelab.io import load_model, save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.pipeline import calibration_subset, dense_reference, model_fields, test_fields
from prunelab.space import SpaceModel, build_subnetwork, sample_counts, sample_rng
from prunelab.stages import finetune_model
from prunelab.train import pick_device

wc = snakemake.wildcards
job = Job.from_snakemake(snakemake, parent_wildcards={"arch": wc.arch, "regime": "standard", "seed": wc.seed})
p = script_params(snakemake)
device = pick_device(p.device)
seed, regime, sample = int(wc.seed), float(wc.macs), int(wc.sample)
data = load_prepared(snakemake.input.data)
dense, arch, _ = load_model(snakemake.input.model, device)
x, _ = calibration_subset(data, 64, seed, device)
space = SpaceModel(dense, x)
counts, fractions = sample_counts(space, regime, sample_rng(p.space["seed"], regime, sample))
model, new_arch, info = build_subnetwork(dense, arch, space, counts, x, p.space["init"], seed)
before = test_fields(model, data, device)["top1_test"] if p.space["init"] == "inherit" else None
result = finetune_model(model, None, data, p.train, p.space["epochs"], device, seed, on_epoch=job.on_epoch)
save_model(snakemake.output.model, model, new_arch, layer_kept=info["layer_kept"])
dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
job.finish(job.record(stage="space", regime="standard", granularity="structured", space_regime=regime,
                      sample=sample, space_init=p.space["init"], space_seed=p.space["seed"],
                      layer_kept=info["layer_kept"], kept_units=info["kept_units"],
                      sampled_fractions=[float(f) for f in fractions], macs_target=regime * space.dense_macs,
                      macs_params_ratio=fields["macs_effective"] / fields["params_total"],
                      top1_test_before_finetune=before, epochs=p.space["epochs"],
                      best_epoch=result.best_epoch if result else None,
                      file_size_bytes=Path(snakemake.output.model).stat().st_size, **fields),
           snakemake.output.metrics)
end_process()
