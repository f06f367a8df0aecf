"""Rule train_baseline: train a dense model (regime standard or pat), write model.pt + metrics.json."""
from prunelab.data import load_prepared
from prunelab.io import save_model
from prunelab.jobs import Job, end_process, script_params
from prunelab.pipeline import model_fields, train_baseline
from prunelab.records import dense_summary
from prunelab.train import pick_device

job = Job.from_snakemake(snakemake)
p = script_params(snakemake)
data = load_prepared(snakemake.input.data)
device = pick_device(p.device)
model, arch, result = train_baseline(data, p.arch, p.train, int(snakemake.wildcards.seed), device,
                                     p.regularizer, on_epoch=job.on_epoch)
save_model(snakemake.output.model, model, arch, history=result.history)
fields = model_fields(model, data, dense_summary(model, data["in_shape"]), device, p.latency)
job.finish(job.record(stage="baseline", epochs=p.train["epochs"],
                      best_epoch=result.best_epoch, wall_s=result.wall_s, **fields),
           snakemake.output.metrics)
end_process()
