"""The pruning stage: one dense model, its scores and a ratio → the pruned model (masks or physical removal), one-shot
or in iterative rounds with re-scoring. The one route a workflow job, a benchmark, a test and a notebook use:

    from prunelab.pruning.stage import prune_model
    model, arch, masks, info = prune_model(dense, arch, scores, "structured", 0.5, data, {"scope": "global"}, "cpu", 0)

Fine-tuning budget of the iterative schedule (Han et al. 2015 for weights; for channels as Molchanov et al. 2017 /
Li et al. 2017 prune and retrain in rounds): the k rounds share the `finetune` budget; rounds 1..k-1 each fine-tune
epochs // k inside this stage (after re-scoring the current model with the same method), the final fine-tuning
(`prunelab.pruning.schedules.finetune_model`) spends the rest.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

from prunelab.data import calibration_subset
from prunelab.methods import GRANULARITIES, required_statistics, score_model
from prunelab.measure import count_macs, count_params
from prunelab.models import classifier_name, place, prunable_layers
from prunelab.pruning.masks import MaskKeeper, prune_unstructured
from prunelab.pruning.removal import prune_selected
from prunelab.pruning.schedules import finetune_split, iterative_ratios
from prunelab.pruning.selection import select_structured_groups, validate_scores
from prunelab.settings import FinetuneSettings, PruneSettings, StatsSettings, round_half_up
from prunelab.stats import collect_baseline_statistics
from prunelab.training import train_model

log = logging.getLogger("prunelab.pruning.stage")


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


def prune_model(dense: nn.Module, arch: dict, scores: dict, granularity: str, ratio: float, data: dict | None = None,
                prune: PruneSettings | dict | None = None, device="cpu", seed: int = 0, rescore=None,
                finetune: FinetuneSettings | dict | None = None, on_epoch=None, example_input=None,
                resume_for=None):
    """Prune a copy of `dense` → (model, arch, masks | None, info).

    unstructured: keep-masks baked into the weights (masks returned); structured: physical removal with the
    equivalence check against the masked dense model (new arch returned). Iterative: `rescore(model) -> scores`
    re-scores the current model before each later round (optional for unstructured, where it falls back to
    the first scores; required for structured with > 1 round, as the pruned model changes shape; `rescorer`
    builds one), with `finetune` epochs // k between rounds (their optimiser steps: info["train_steps"]). Ratios
    are always fractions of the DENSE model's prunable weights (unstructured) or of its prunable units, params or
    MACs (structured, prune.target); structured widths are rounded up to multiples of prune.round_to.
    data: a prepared dataset (prunelab.data), for the calibration batch that traces a structured model and for the
    fine-tuning between iterative rounds; `example_input` (a batch (N, *in_shape)) replaces the calibration batch.
    resume_for(k) -> a ResumeState for the fine-tuning after round k (prunelab.training.resume), or None.
    """
    prune = PruneSettings.of(prune)
    check_prune_request(dense, scores, granularity)
    targets = iterative_ratios(ratio, prune.iterative_steps) if prune.iterative else [ratio]
    if granularity == "structured" and len(targets) > 1 and rescore is None:
        raise ValueError(f"the iterative structured schedule ({len(targets)} rounds) needs a rescore function: "
                         f"the pruned model changes shape between rounds, so the first round's scores no longer "
                         f"fit it (pass rescore=..., e.g. prunelab.pruning.stage.rescorer, or use iterative_steps: 1)")
    model = place(copy.deepcopy(dense), device)
    per_round, _ = finetune_split(finetune or {"epochs": 0}, prune)
    steps = []  # optimiser steps of the fine-tuning between rounds

    def between_rounds(model, k, masks=None):
        if k < len(targets) - 1 and per_round > 0:
            keeper = MaskKeeper(model, masks) if masks else None
            round_cfg = FinetuneSettings.of(finetune).replace(epochs=per_round)
            steps.append(train_model(model, data, round_cfg, device, seed + 1000 * (k + 1),
                                     after_step=keeper.apply if keeper else None, on_epoch=on_epoch,
                                     resume=resume_for(k) if resume_for else None).steps)
            if keeper is not None:
                keeper.remove()

    if granularity == "structured":
        x = example_input if example_input is not None else calibration_subset(data, 64, seed, device)[0]
        out = _structured_rounds(model, arch, scores, targets, x, prune, device, rescore, between_rounds)
        out[3]["train_steps"] = sum(steps)
        return out
    masks = None
    for k, target in enumerate(targets):
        if k > 0 and rescore is not None:
            scores = rescore(model)
        model, masks, info = prune_unstructured(model, scores, target, prune, prior=masks)
        log.info("round %d/%d: sparsity %.4f (target %.4f)", k + 1, len(targets), info["sparsity_achieved"], target)
        between_rounds(model, k, masks)
    info.update(rounds=len(targets), train_steps=sum(steps))
    return model, arch, masks, info


def model_cost(model: nn.Module, kind: str, in_shape) -> float:
    """The model's `kind` cost as a prune target counts it: units (prunable output units, classifier aside), params
    (every parameter) or macs (Conv2d + Linear, one input)."""
    if kind == "params":
        return float(count_params(model))
    if kind == "macs":
        return float(count_macs(model, in_shape))
    head = classifier_name(model)
    return float(sum(m.weight.shape[0] for n, m in prunable_layers(model) if n != head))


def _structured_rounds(model, arch, scores, targets, x, prune: PruneSettings, device, rescore, between_rounds):
    """Physical removal in len(targets) rounds; round k removes units until targets[k] of the DENSE model's
    prunable units (prune.target units) or of its params / MACs are gone (its ratio w.r.t. the current model
    follows), re-scoring the current model first. With prune.round_to each round's kept units per group are
    rounded up to a multiple of it, so every width stays a multiple (or the group's dense width); a round that
    keeps more than asked leaves the rest to the next round (the counts are of units or cost actually removed),
    the last round's shortfall stays in ratio_achieved / cost_removed. Each round checks the pruned model against
    the masked current model on the batch `x`. → (model, arch, None, info)."""
    in_shape = tuple(x.shape[1:])
    dense_units = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    dense_cost = model_cost(model, prune.target, in_shape)
    n0, removed, rounds, info = None, 0, [], {}
    for k, target in enumerate(targets):
        round_ratio = target
        if k > 0:
            if prune.target == "units":
                left = round_half_up(target * n0) - removed    # units this round still has to remove
                if left < 1:
                    continue
                round_ratio = left / (n0 - removed)
            else:
                now = model_cost(model, prune.target, in_shape)
                round_ratio = (target * dense_cost - (dense_cost - now)) / now
                if round_ratio <= 0:
                    continue
            scores = rescore(model)  # prune_model refuses rescore=None with more than one round
        remove, groups, counts = select_structured_groups(model, scores, round_ratio, prune, example_input=x)
        model, arch, info = prune_selected(model, arch, remove, groups, x)
        model = place(model, device)
        n0 = counts["n_prunable"] if n0 is None else n0
        removed += counts["n_removed"]
        rounds.append(info.pop("removed"))
        log.info("round %d/%d: %d of %d units removed (target %.4f of the %s)", k + 1, len(targets), removed, n0,
                 target, prune.target)
        between_rounds(model, k)
    after = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    info.update(granularity="structured", ratio_requested=float(targets[-1]), ratio_achieved=removed / n0,
                n_prunable=n0, n_removed=removed, layer_kept={n: after[n] / dense_units[n] for n in dense_units},
                rounds=len(targets), removed_rounds=rounds, round_to=prune.round_to, prune_target=prune.target,
                normalize=prune.normalize,
                cost_removed=1.0 - model_cost(model, prune.target, in_shape) / dense_cost)
    if len(targets) == 1:
        info["removed"] = rounds[0]
    return model, arch, None, info


def rescorer(method: str, method_cfg: dict, data: dict, stats: StatsSettings | dict, seed: int, device):
    """A function model -> scores that re-collects the statistics `method` needs on the current model."""
    needs = required_statistics([method], {method: method_cfg})
    lrp = method_cfg if "relevance" in needs else None

    def rescore(model: nn.Module) -> dict:
        collected = collect_baseline_statistics(model, data, needs, stats, seed, device, lrp)
        return score_model(model, collected, method, method_cfg)

    return rescore
