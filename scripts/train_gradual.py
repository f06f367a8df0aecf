"""Rule train_gradual: FRS channel pruning while training from random init (Aketi et al. 2020); the physically
pruned model + metrics.json, with the dense model of the same architecture as the cost reference."""
from pathlib import Path

from prunelab.data import load_prepared
from prunelab.gradual import train_gradual
from prunelab.io import save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.models import build_model
from prunelab.pipeline import architecture_for, dense_reference, model_fields
from prunelab.train import pick_device

wc = snakemake.wildcards
job = Job.from_snakemake(snakemake)
p = script_params(snakemake)
device = pick_device(p.device)
data = load_prepared(snakemake.input.data)
model, arch, info, result = train_gradual(data, p.arch, p.train, p.gradual, float(wc.ratio), int(wc.seed), device,
                                          frs_cfg=p.frs, stats_cfg=p.stats, on_epoch=job.on_epoch)
save_model(snakemake.output.model, model, arch, history=result.history, layer_kept=info["layer_kept"])
dense = build_model(architecture_for(p.arch, data)).to(device)
dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
job.finish(job.record(stage="gradual", regime="standard", method="frs", granularity="structured",
                      epochs=p.train["epochs"], wall_s=result.wall_s,
                      best_epoch=result.best_epoch, schedule="gradual", method_config=p.frs,
                      gradual={k: p.gradual.get(k) for k in ("interval", "stop_epoch", "channels_per_step")},
                      file_size_bytes=Path(snakemake.output.model).stat().st_size, **info, **fields),
           snakemake.output.metrics)
end_process()
