"""Rule prune_finetune: one baseline pruned at one ratio with one method (`prunelab.pruning.stage.prune_model`),
then fine-tuned with the budget every method gets (`prunelab.pruning.schedules.finetune_model`). Called by the
rule's script with Snakemake's `snakemake` object (duck-typed); this module only reads it, calls the library and
records."""

from __future__ import annotations

from pathlib import Path

from prunelab.data import load_prepared
from prunelab.io import load_model, load_torch, save_model
from prunelab.jobs import Job, script_params
from prunelab.measure.evaluation import budget_fields, dense_reference, model_fields
from prunelab.models import pick_device
from prunelab.pruning.masks import masks_hold
from prunelab.pruning.schedules import finetune_budgets, finetune_model, finetune_split
from prunelab.pruning.stage import prune_model, rescorer
from prunelab.settings import StatsSettings


def _with_masks(masks: dict | None) -> dict:
    return {"masks": masks} if masks else {}


def steps_after(baseline: dict, steps: int) -> dict:
    """train_steps (optimiser steps since pruning) and steps_total (the baseline's too; None for a baseline saved
    without its count)."""
    base = baseline.get("steps_total")
    return {"train_steps": steps, "steps_total": None if base is None else base + steps}


def prune_finetune_job(smk) -> None:
    """Rule prune_finetune: scores + ratio → pruned model and its metrics, then the fine-tuning budget (masks stay
    zero; validation picks the epoch) and the fine-tuned metrics. Two steps in one process (start-up and data
    loading cost about 2.5 s a process); each step is its own Job, with its own run.json and MLflow run (steps
    'prune' and 'finetune')."""
    wc, out = smk.wildcards, smk.output
    parent = {"arch": wc.arch, "regime": wc.regime, "seed": wc.seed}
    job = Job.from_snakemake(smk, out_key="pruned_metrics", rule="prune", without=("finetune",),
                             parent_wildcards=parent)
    p = script_params(smk)
    device = pick_device(p.device)
    seed, ratio = int(wc.seed), float(wc.ratio)
    data = load_prepared(smk.input.data)
    dense, arch, dense_ckpt = load_model(smk.input.model, device)
    scores = load_torch(smk.input.scores, what="score file")
    rescore = rescorer(wc.method, p.method_config, data, StatsSettings.from_config(p.iterative["stats"]), seed,
                       device) if p.iterative else None
    model, new_arch, masks, info = prune_model(dense, arch, scores, wc.granularity, ratio, data, p.prune, device,
                                               seed, rescore=rescore, finetune=p.finetune, on_epoch=job.on_epoch,
                                               resume_for=lambda k: job.resume_state(smk.input, part=f"round{k}"))
    save_model(out.pruned_model, model, new_arch, **_with_masks(masks), layer_kept=info["layer_kept"],
               prune_target=info.get("prune_target"), cost_removed=info.get("cost_removed"))
    dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
    pruned = job.record(stage="pruned", epochs=0, schedule=p.prune.schedule, layer_kept=info["layer_kept"],
                        method_config=p.method_config, prune_rounds=info.get("rounds", 1),
                        ratio_achieved=info.get("ratio_achieved"), round_to=info.get("round_to"),
                        prune_target=info.get("prune_target"), cost_removed=info.get("cost_removed"),
                        **steps_after(dense_ckpt, info["train_steps"]),
                        file_size_bytes=Path(out.pruned_model).stat().st_size,
                        **model_fields(model, data, dense_sizes, device, p.latency, dense_latency))
    job.finish(pruned, out.pruned_metrics)

    # Fine-tuning starts from the saved pruned model, exactly what a separate job would load; each budget's model
    # is the one selected on validation within its steps of the one run (the largest is the run's own choice).
    job = Job.from_snakemake(smk, rule="finetune", without=("method_config", "iterative"), parent_wildcards=parent)
    model, arch, ckpt = load_model(out.pruned_model, device)
    masks = ckpt.get("masks")
    _, epochs = finetune_split(p.finetune, p.prune)
    budgets = finetune_budgets(p.finetune, p.prune, len(data["train"]["y"]))
    result = finetune_model(model, masks, data, p.finetune, epochs, device, seed, on_epoch=job.on_epoch,
                            budgets=budgets, resume=job.resume_state(smk.input))
    if not masks_hold(model, masks):
        raise RuntimeError("masked weights became nonzero during fine-tuning")
    fields = model_fields(model, data, dense_sizes, device, p.latency, dense_latency)
    entries = budget_fields(model, result, budgets, fields, data, device)
    for e in entries:
        e.update(steps_after(dense_ckpt, pruned["train_steps"] + e["budget_steps"]))
    states = {e["budget_steps"]: result.snapshots[budgets[e["budget_steps"]]].state for e in entries[:-1]}
    save_model(out.model, model, arch, **_with_masks(masks), **({"budget_states": states} if states else {}))
    job.finish(job.record(stage="finetuned", epochs=epochs, schedule=p.prune.schedule,
                          top1_test_before_finetune=pruned["top1_test"], layer_kept=pruned.get("layer_kept"),
                          method_config=pruned.get("method_config"), prune_target=pruned.get("prune_target"),
                          cost_removed=pruned.get("cost_removed"), best_epoch=entries[-1]["best_epoch"],
                          wall_s=result.wall_s if result else 0.0, budgets=entries,
                          **{k: entries[-1][k] for k in ("budget_steps", "train_steps", "steps_total")},
                          file_size_bytes=Path(out.model).stat().st_size, **fields),
               out.metrics)
