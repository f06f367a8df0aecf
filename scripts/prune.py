"""Rule prune: scores + ratio → pruned model (masks or physical removal) and its metrics, before fine-tuning."""
from pathlib import Path

from prunelab.data import load_prepared
from prunelab.io import load_model, load_torch, save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.pipeline import dense_reference, model_fields
from prunelab.stages import prune_model, rescorer, val_and_test
from prunelab.train import pick_device

wc = snakemake.wildcards
job = Job.from_snakemake(snakemake, parent_wildcards={"arch": wc.arch, "regime": wc.regime, "seed": wc.seed})
p = script_params(snakemake)
device = pick_device(p.device)
seed, ratio = int(wc.seed), float(wc.ratio)
data = load_prepared(snakemake.input.data)
dense, arch, _ = load_model(snakemake.input.model, device)
scores = load_torch(snakemake.input.scores, what="score file")
rescore = rescorer(wc.method, p.method_config, data, p.iterative["stats"], seed, device) if p.iterative else None
model, new_arch, masks, info = prune_model(dense, arch, scores, wc.granularity, ratio, data, p.prune, device, seed,
                                           rescore=rescore, finetune_cfg=p.iterative and p.iterative["finetune"],
                                           on_epoch=job.on_epoch)
save_model(snakemake.output.model, model, new_arch, **({"masks": masks} if masks else {}),
           layer_kept=info["layer_kept"])
dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
fields.update(val_and_test(model, data, device))
job.finish(job.record(stage="pruned", epochs=0, schedule=p.prune["schedule"], layer_kept=info["layer_kept"],
                      method_config=p.method_config, prune_rounds=info.get("rounds", 1),
                      ratio_achieved=info.get("ratio_achieved"), round_to=info.get("round_to"),
                      file_size_bytes=Path(snakemake.output.model).stat().st_size, **fields),
           snakemake.output.metrics)
end_process()
