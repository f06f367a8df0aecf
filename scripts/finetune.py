"""Rule finetune: the same fine-tuning budget for every method; masks stay zero; val picks the epoch."""
from pathlib import Path

from prunelab.data import load_prepared
from prunelab.io import load_json, load_model, save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.pipeline import dense_reference, model_fields
from prunelab.stages import finetune_model, finetune_split, masks_hold, val_and_test
from prunelab.train import pick_device

wc = snakemake.wildcards
job = Job.from_snakemake(snakemake, parent_wildcards={"arch": wc.arch, "regime": wc.regime, "seed": wc.seed})
p = script_params(snakemake)
device = pick_device(p.device)
data = load_prepared(snakemake.input.data)
model, arch, ckpt = load_model(snakemake.input.model, device)
masks = ckpt.get("masks")
_, epochs = finetune_split(p.finetune, p.prune)
result = finetune_model(model, masks, data, p.finetune, epochs, device, int(wc.seed), on_epoch=job.on_epoch)
if not masks_hold(model, masks):
    raise RuntimeError("masked weights became nonzero during fine-tuning")
save_model(snakemake.output.model, model, arch, **({"masks": masks} if masks else {}))
dense, _, _ = load_model(snakemake.input.dense, device)
dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
fields.update(val_and_test(model, data, device))
pruned = load_json(snakemake.input.pruned_metrics)
job.finish(job.record(stage="finetuned", epochs=epochs, schedule=p.prune["schedule"],
                      top1_test_before_finetune=pruned["top1_test"], layer_kept=pruned.get("layer_kept"),
                      method_config=pruned.get("method_config"), best_epoch=result.best_epoch if result else None,
                      wall_s=result.wall_s if result else 0.0,
                      file_size_bytes=Path(snakemake.output.model).stat().st_size, **fields),
           snakemake.output.metrics)
end_process()
