"""Rules prepare_data and train_baseline: the fixed data split and the dense baselines (one function per rule,
called by its script with Snakemake's `snakemake` object, duck-typed)."""

from __future__ import annotations

from prunelab.data import load_prepared, prepare_dataset, save_prepared
from prunelab.io import save_model
from prunelab.jobs import Job, script_params, start_script
from prunelab.measure.evaluation import dense_summary, model_fields
from prunelab.models import pick_device
from prunelab.training import train_baseline


def prepare_data_job(smk) -> None:
    """Rule prepare_data: load a dataset by name and save its fixed train/val/test split."""
    start_script(smk)
    cfg = smk.params.dataset
    data = prepare_dataset(cfg["name"], cfg["data_root"], download=cfg["download"], val_fraction=cfg["val_fraction"],
                           split_seed=cfg["split_seed"], image_size=cfg["image_size"], max_train=cfg["max_train"],
                           max_test=cfg["max_test"])
    save_prepared(data, smk.output[0])


def train_baseline_job(smk) -> None:
    """Rule train_baseline: train a dense model (regime standard or pat), write model.pt + metrics.json."""
    job = Job.from_snakemake(smk)
    p = script_params(smk)
    data = load_prepared(smk.input.data)
    device = pick_device(p.device)
    model, arch, result = train_baseline(data, p.arch, p.train, int(smk.wildcards.seed), device, p.regularizer,
                                         on_epoch=job.on_epoch, resume=job.resume_state(smk.input))
    save_model(smk.output.model, model, arch, history=result.history, steps_total=result.steps)
    fields = model_fields(model, data, dense_summary(model, data["in_shape"]), device, p.latency)
    job.finish(job.record(stage="baseline", epochs=p.train.epochs, best_epoch=result.best_epoch,
                          wall_s=result.wall_s, train_steps=result.steps, steps_total=result.steps, **fields),
               smk.output.metrics)
