"""Rules train_gradual, train_scratch and pruning_space: the models compared with one-shot pruning (gradual FRS
while training, the pruned architectures trained from scratch, random subnetworks of a pruning space); one
function per rule, called by its script with Snakemake's `snakemake` object, duck-typed."""

from __future__ import annotations

from pathlib import Path

from prunelab.data import calibration_subset, load_prepared
from prunelab.io import load_model, load_torch, save_model
from prunelab.jobs import Job, script_params
from prunelab.measure.evaluation import fields_against, test_fields
from prunelab.models import architecture_for, build_model, pick_device
from prunelab.pruning.gradual import train_gradual, train_scratch
from prunelab.pruning.schedules import finetune_model, scratch_steps
from prunelab.pruning.space import SpaceModel, build_subnetwork, sample_counts, sample_rng


def train_gradual_job(smk) -> None:
    """Rule train_gradual: FRS channel pruning while training from random init (Aketi et al. 2020); the physically
    pruned model + metrics.json, with the dense model of the same architecture as the cost reference."""
    wc = smk.wildcards
    job = Job.from_snakemake(smk)
    p = script_params(smk)
    device = pick_device(p.device)
    data = load_prepared(smk.input.data)
    model, arch, info, result = train_gradual(data, p.arch, p.train, p.gradual, float(wc.ratio), int(wc.seed),
                                              device, frs_cfg=p.frs, stats_cfg=p.stats, on_epoch=job.on_epoch,
                                              resume=job.resume_state(smk.input))
    save_model(smk.output.model, model, arch, history=result.history, layer_kept=info["layer_kept"])
    dense = build_model(architecture_for(p.arch, data)).to(device)
    fields = fields_against(model, dense, data, device, p.latency)
    job.finish(job.record(stage="gradual", regime="standard", method="frs", granularity="structured",
                          epochs=p.train.epochs, wall_s=result.wall_s, best_epoch=result.best_epoch,
                          train_steps=result.steps, steps_total=result.steps,
                          schedule="gradual", method_config=p.frs,
                          gradual={k: getattr(p.gradual, k) for k in ("interval", "stop_epoch", "channels_per_step")},
                          file_size_bytes=Path(smk.output.model).stat().st_size, **info, **fields),
               smk.output.metrics)


def train_scratch_job(smk) -> None:
    """Rule train_scratch: the structurally pruned architecture trained from random init (Liu et al. 2019 control)
    for the steps scratch.budget names (default: as many as the pruned and fine-tuned model has had); metrics
    against the dense baseline."""
    wc = smk.wildcards
    job = Job.from_snakemake(smk, parent_wildcards={"arch": wc.arch, "regime": wc.regime, "seed": wc.seed})
    p = script_params(smk)
    device = pick_device(p.device)
    data = load_prepared(smk.input.data)
    pruned = load_torch(smk.input.pruned, what="pruned model checkpoint")  # only its architecture is used
    dense, _, dense_ckpt = load_model(smk.input.dense, device)
    n_train = len(data["train"]["y"])
    baseline_steps = dense_ckpt.get("steps_total", p.train.run_steps(n_train))
    steps = scratch_steps(p.scratch_budget, baseline_steps, p.finetune, n_train)
    arch = pruned["arch"]
    model, result = train_scratch(arch, data, p.train, steps, int(wc.seed), device, p.regularizer,
                                  on_epoch=job.on_epoch, resume=job.resume_state(smk.input))
    save_model(smk.output.model, model, arch, history=result.history, steps_total=result.steps)
    fields = fields_against(model, dense, data, device, p.latency)
    job.finish(job.record(stage="scratch", granularity="structured", top1_test_before_finetune=None,
                          epochs=len(result.history), train_steps=result.steps, steps_total=result.steps,
                          scratch_budget=p.scratch_budget, prune_target=pruned.get("prune_target"),
                          cost_removed=pruned.get("cost_removed"),
                          wall_s=result.wall_s, best_epoch=result.best_epoch, schedule="scratch",
                          layer_kept=pruned.get("layer_kept"), file_size_bytes=Path(smk.output.model).stat().st_size,
                          **fields), smk.output.metrics)


def pruning_space_job(smk) -> None:
    """Rule pruning_space: one random subnetwork of the standard baseline at a MACs regime, built and
    fine-tuned."""
    wc = smk.wildcards
    job = Job.from_snakemake(smk, parent_wildcards={"arch": wc.arch, "regime": "standard", "seed": wc.seed})
    p = script_params(smk)
    device = pick_device(p.device)
    seed, regime, sample = int(wc.seed), float(wc.macs), int(wc.sample)
    data = load_prepared(smk.input.data)
    dense, arch, _ = load_model(smk.input.model, device)
    x, _ = calibration_subset(data, 64, seed, device)
    space = SpaceModel(dense, x)
    counts, fractions = sample_counts(space, regime, sample_rng(p.space["seed"], regime, sample))
    model, new_arch, info = build_subnetwork(dense, arch, space, counts, x, p.space["init"], seed)
    before = test_fields(model, data, device)["top1_test"] if p.space["init"] == "inherit" else None
    result = finetune_model(model, None, data, p.train, p.space["epochs"], device, seed, on_epoch=job.on_epoch,
                            resume=job.resume_state(smk.input))
    save_model(smk.output.model, model, new_arch, layer_kept=info["layer_kept"])
    fields = fields_against(model, dense, data, device, p.latency)
    job.finish(job.record(stage="space", regime="standard", granularity="structured", space_regime=regime,
                          sample=sample, space_init=p.space["init"], space_seed=p.space["seed"],
                          layer_kept=info["layer_kept"], kept_units=info["kept_units"],
                          sampled_fractions=[float(f) for f in fractions], macs_target=regime * space.dense_macs,
                          macs_params_ratio=fields["macs_effective"] / fields["params_total"],
                          top1_test_before_finetune=before, epochs=p.space["epochs"],
                          best_epoch=result.best_epoch if result else None,
                          file_size_bytes=Path(smk.output.model).stat().st_size, **fields), smk.output.metrics)
