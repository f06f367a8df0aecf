"""Rule train_scratch: the structurally pruned architecture trained from random init for the baseline's plus the
fine-tuning's epochs (Liu et al. 2019 control); metrics against the dense baseline."""
from pathlib import Path

from prunelab.data import load_prepared
from prunelab.gradual import train_scratch
from prunelab.io import load_model, load_torch, save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.pipeline import dense_reference, model_fields
from prunelab.train import pick_device

wc = snakemake.wildcards
job = Job.from_snakemake(snakemake, parent_wildcards={"arch": wc.arch, "regime": wc.regime, "seed": wc.seed})
p = script_params(snakemake)
device = pick_device(p.device)
data = load_prepared(snakemake.input.data)
pruned = load_torch(snakemake.input.pruned, what="pruned model checkpoint")  # only its architecture is used
arch, epochs = pruned["arch"], p.train["epochs"] + p.finetune_epochs
model, result = train_scratch(arch, data, p.train, epochs, int(wc.seed), device, p.regularizer, on_epoch=job.on_epoch)
save_model(snakemake.output.model, model, arch, history=result.history)
dense, _, _ = load_model(snakemake.input.dense, device)
dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
job.finish(job.record(stage="scratch", granularity="structured", top1_test_before_finetune=None, epochs=epochs, wall_s=result.wall_s,
                      best_epoch=result.best_epoch, schedule="scratch", layer_kept=pruned.get("layer_kept"),
                      file_size_bytes=Path(snakemake.output.model).stat().st_size, **fields),
           snakemake.output.metrics)
end_process()
