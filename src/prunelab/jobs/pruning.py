"""Rule prune_finetune: pruning one baseline at one ratio with one method (one-shot or iterative), then
fine-tuning it. `prune_finetune_job` is called by the rule's script with Snakemake's `snakemake` object
(duck-typed); `prune_model` is the pruning stage for a notebook.

Fine-tuning budget: every method of an experiment gets the same `finetune` config. With the iterative schedule
(Han et al. 2015 for weights; for channels as Molchanov et al. 2017 / Li et al. 2017 prune and retrain in
rounds) the k rounds share that budget: rounds 1..k-1 each fine-tune epochs // k inside the pruning step
(after re-scoring the current model with the same method), the final fine-tuning spends the rest.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from torch import nn

from prunelab.data import calibration_subset, load_prepared
from prunelab.io import load_model, load_torch, save_model
from prunelab.jobs import Job, script_params
from prunelab.measure.evaluation import dense_reference, model_fields
from prunelab.methods import GRANULARITIES, required_statistics, score_model
from prunelab.models import classifier_name, pick_device, place, prunable_layers
from prunelab.pruning.masks import MaskKeeper, masks_hold, prune_unstructured
from prunelab.pruning.removal import prune_selected
from prunelab.pruning.schedules import finetune_model, finetune_split, iterative_ratios
from prunelab.pruning.selection import select_structured_groups, validate_scores
from prunelab.settings import PruneSettings, StatsSettings, TrainSettings
from prunelab.stats import collect_baseline_statistics
from prunelab.training import train_model

log = logging.getLogger("prunelab.jobs.pruning")


def _with_masks(masks: dict | None) -> dict:
    return {"masks": masks} if masks else {}


def prune_finetune_job(smk) -> None:
    """Rule prune_finetune: scores + ratio → pruned model (masks or physical removal) and its metrics, then the
    same fine-tuning budget for every method (masks stay zero; validation picks the epoch) and the fine-tuned
    metrics. Two steps in one process (start-up and data loading cost about 2.5 s a process); each step is its
    own Job, with its own run.json and MLflow run (steps 'prune' and 'finetune')."""
    wc, out = smk.wildcards, smk.output
    parent = {"arch": wc.arch, "regime": wc.regime, "seed": wc.seed}
    job = Job.from_snakemake(smk, out_key="pruned_metrics", rule="prune", without=("finetune",),
                             parent_wildcards=parent)
    p = script_params(smk)
    device = pick_device(p.device)
    seed, ratio = int(wc.seed), float(wc.ratio)
    data = load_prepared(smk.input.data)
    dense, arch, _ = load_model(smk.input.model, device)
    scores = load_torch(smk.input.scores, what="score file")
    stats = StatsSettings.from_config(p.iterative["stats"]) if p.iterative else None
    rescore = rescorer(wc.method, p.method_config, data, stats, seed, device) if p.iterative else None
    model, new_arch, masks, info = prune_model(dense, arch, scores, wc.granularity, ratio, data, p.prune, device,
                                               seed, rescore=rescore, finetune_cfg=p.finetune, on_epoch=job.on_epoch)
    save_model(out.pruned_model, model, new_arch, **_with_masks(masks), layer_kept=info["layer_kept"])
    dense_sizes, dense_latency = dense_reference(dense, data, device, p.latency)
    pruned = job.record(stage="pruned", epochs=0, schedule=p.prune.schedule, layer_kept=info["layer_kept"],
                        method_config=p.method_config, prune_rounds=info.get("rounds", 1),
                        ratio_achieved=info.get("ratio_achieved"), round_to=info.get("round_to"),
                        file_size_bytes=Path(out.pruned_model).stat().st_size,
                        **model_fields(model, data, dense_sizes, device, p.latency, dense_latency))
    job.finish(pruned, out.pruned_metrics)

    # Fine-tuning starts from the saved pruned model, exactly what a separate job would load.
    job = Job.from_snakemake(smk, rule="finetune", without=("method_config", "iterative"), parent_wildcards=parent)
    model, arch, ckpt = load_model(out.pruned_model, device)
    masks = ckpt.get("masks")
    _, epochs = finetune_split(p.finetune, p.prune)
    result = finetune_model(model, masks, data, p.finetune, epochs, device, seed, on_epoch=job.on_epoch)
    if not masks_hold(model, masks):
        raise RuntimeError("masked weights became nonzero during fine-tuning")
    save_model(out.model, model, arch, **_with_masks(masks))
    job.finish(job.record(stage="finetuned", epochs=epochs, schedule=p.prune.schedule,
                          top1_test_before_finetune=pruned["top1_test"], layer_kept=pruned.get("layer_kept"),
                          method_config=pruned.get("method_config"),
                          best_epoch=result.best_epoch if result else None, wall_s=result.wall_s if result else 0.0,
                          file_size_bytes=Path(out.model).stat().st_size,
                          **model_fields(model, data, dense_sizes, device, p.latency, dense_latency)),
               out.metrics)


def check_prune_request(model: nn.Module, scores: dict, granularity: str) -> None:
    """Fail before any work: a known granularity, scores for this architecture that the granularity can use
    (the ratio and the prune settings are the schema's to check)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    layers = validate_scores(model, scores)
    # structured: the classifier's outputs are never removed, so it needs no score (bn_scale gives it none)
    needed = [n for n in layers if granularity == "unstructured" or n != classifier_name(model)]
    if any(layers[n].get(granularity) is None for n in needed):
        raise ValueError(f"method '{scores.get('method')}' gives no {granularity} scores; "
                         f"it cannot prune at that granularity")


def prune_model(dense: nn.Module, arch: dict, scores: dict, granularity: str, ratio: float, data: dict,
                prune_cfg: PruneSettings | dict, device, seed: int, rescore=None,
                finetune_cfg: TrainSettings | dict | None = None, on_epoch=None):
    """Prune a copy of `dense` → (model, arch, masks | None, info).

    unstructured: keep-masks baked into the weights (masks returned); structured: physical removal with the
    equivalence check against the masked dense model (new arch returned). Iterative: `rescore(model) -> scores`
    re-scores the current model before each later round (optional for unstructured, where it falls back to
    the first scores; required for structured with > 1 round, as the pruned model changes shape), with
    `finetune_cfg` epochs // k between rounds. Ratios are always fractions of the DENSE model's prunable
    weights / units; structured widths are rounded up to multiples of prune_cfg.round_to.
    """
    prune_cfg = PruneSettings.of(prune_cfg)
    check_prune_request(dense, scores, granularity)
    targets = iterative_ratios(ratio, prune_cfg.iterative_steps) if prune_cfg.iterative else [ratio]
    if granularity == "structured" and len(targets) > 1 and rescore is None:
        raise ValueError(f"the iterative structured schedule ({len(targets)} rounds) needs a rescore function: "
                         f"the pruned model changes shape between rounds, so the first round's scores no longer "
                         f"fit it (pass rescore=..., e.g. jobs.pruning.rescorer, or use iterative_steps: 1)")
    model = place(copy.deepcopy(dense), device)
    per_round, _ = finetune_split(finetune_cfg or {"epochs": 0}, prune_cfg)

    def between_rounds(model, k):
        if k < len(targets) - 1 and per_round > 0:
            keeper = MaskKeeper(model, masks) if masks else None
            round_cfg = TrainSettings.of(finetune_cfg, "finetune").replace(epochs=per_round)
            train_model(model, data, round_cfg, device, seed + 1000 * (k + 1),
                        after_step=keeper.apply if keeper else None, on_epoch=on_epoch)
            if keeper is not None:
                keeper.remove()

    masks = None
    if granularity == "structured":
        return _structured_rounds(model, arch, scores, targets, data, prune_cfg, device, seed, rescore, between_rounds)
    for k, target in enumerate(targets):
        if k > 0 and rescore is not None:
            scores = rescore(model)
        model, masks, info = prune_unstructured(model, scores, target, prune_cfg, prior=masks)
        log.info("round %d/%d: sparsity %.4f (target %.4f)", k + 1, len(targets), info["sparsity_achieved"], target)
        between_rounds(model, k)
    info["rounds"] = len(targets)
    return model, arch, masks, info


def _structured_rounds(model, arch, scores, targets, data, prune_cfg: PruneSettings, device, seed, rescore,
                       between_rounds):
    """Physical removal in len(targets) rounds; round k removes units until targets[k] of the DENSE model's
    prunable units are gone (its ratio w.r.t. the current model follows), re-scoring the current model first.
    With prune_cfg.round_to each round's kept units per group are rounded up to a multiple of it, so every
    width stays a multiple (or the group's dense width); a round that keeps more than asked leaves the rest to
    the next round (the counts are of units actually removed), the last round's shortfall stays in
    ratio_achieved. Each round checks the pruned model against the masked current model.
    → (model, arch, None, info)."""
    x, _ = calibration_subset(data, 64, seed, device)
    dense_units = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    n0, removed, rounds, info = None, 0, [], {}
    for k, target in enumerate(targets):
        if k > 0:
            left = round(target * n0) - removed            # units this round still has to remove
            if left < 1:
                continue
            scores = rescore(model)  # prune_model refuses rescore=None with more than one round
            round_ratio = left / (n0 - removed)
        else:
            round_ratio = target
        remove, groups, counts = select_structured_groups(model, scores, round_ratio, prune_cfg, example_input=x)
        model, arch, info = prune_selected(model, arch, remove, groups, x)
        model = place(model, device)
        n0 = counts["n_prunable"] if n0 is None else n0
        removed += counts["n_removed"]
        rounds.append(info.pop("removed"))
        log.info("round %d/%d: %d of %d units removed (target %.4f)", k + 1, len(targets), removed, n0, target)
        between_rounds(model, k)
    after = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    info.update(granularity="structured", ratio_requested=float(targets[-1]), ratio_achieved=removed / n0,
                n_prunable=n0, n_removed=removed, layer_kept={n: after[n] / dense_units[n] for n in dense_units},
                rounds=len(targets), removed_rounds=rounds, round_to=prune_cfg.round_to)
    if len(targets) == 1:
        info["removed"] = rounds[0]
    return model, arch, None, info


def rescorer(method: str, method_cfg: dict, data: dict, stats_cfg: StatsSettings | dict, seed: int, device):
    """A function model -> scores that re-collects the statistics `method` needs on the current model."""
    needs = required_statistics([method], {method: method_cfg})
    lrp = method_cfg if "relevance" in needs else None

    def rescore(model: nn.Module) -> dict:
        stats = collect_baseline_statistics(model, data, needs, stats_cfg, seed, device, lrp)
        return score_model(model, stats, method, method_cfg)

    return rescore
