"""Pruning-stage functions: prune a trained model at a ratio (one-shot or iterative) and fine-tune it.

Fine-tuning budget: every method of an experiment gets the same `finetune` config. With the iterative schedule
(Han et al. 2015 for weights; for channels as Molchanov et al. 2017 / Li et al. 2017 prune and retrain in
rounds) the k rounds share that budget: rounds 1..k-1 each fine-tune epochs // k inside
the pruning step (after re-scoring the current model with the same method), the final fine-tuning spends the rest.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from prunelab.models import classifier_name, place
from prunelab.pipeline import calibration_subset, split_tensors
from prunelab.prune import (MaskKeeper, iterative_ratios, prune_unstructured, validate_ratio, validate_round_to,
                            validate_scores)
from prunelab.settings import PruneSettings, TrainSettings
from prunelab.train import train_model

log = logging.getLogger("prunelab.stages")
GRANULARITIES = ("unstructured", "structured")


def check_prune_request(model: nn.Module, scores: dict, granularity: str, ratio: float,
                        prune_cfg: PruneSettings | dict) -> None:
    """Fail before any work: ratio in (0, 1), known granularity, scores for this architecture and granularity,
    a schedule the granularity supports, a valid prune.round_to (structured only, checked for both)."""
    prune_cfg = PruneSettings.of(prune_cfg)
    validate_ratio(ratio)
    validate_round_to(prune_cfg.round_to)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    layers = validate_scores(model, scores)
    steps = prune_cfg.iterative_steps
    if prune_cfg.iterative and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"prune.iterative_steps must be a positive int, got {steps!r}")
    # structured: the classifier's outputs are never removed, so it needs no score (bn_scale gives it none)
    needed = [n for n in layers if granularity == "unstructured" or n != classifier_name(model)]
    if any(layers[n].get(granularity) is None for n in needed):
        raise ValueError(f"method '{scores.get('method')}' gives no {granularity} scores; "
                         f"it cannot prune at that granularity")


def finetune_split(finetune_cfg: TrainSettings | dict, prune_cfg: PruneSettings | dict) -> tuple[int, int]:
    """(epochs per intermediate pruning round, epochs left for the final fine-tuning)."""
    total = TrainSettings.of(finetune_cfg, "finetune").epochs
    prune_cfg = PruneSettings.of(prune_cfg)
    if not prune_cfg.iterative:
        return 0, total
    steps = prune_cfg.iterative_steps
    per_round = total // steps
    return per_round, total - per_round * (steps - 1)


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
    check_prune_request(dense, scores, granularity, ratio, prune_cfg)
    targets = [ratio]
    if prune_cfg.iterative:
        targets = iterative_ratios(ratio, prune_cfg.iterative_steps)
    if granularity == "structured" and len(targets) > 1 and rescore is None:
        raise ValueError(f"the iterative structured schedule ({len(targets)} rounds) needs a rescore function: "
                         f"the pruned model changes shape between rounds, so the first round's scores no longer "
                         f"fit it (pass rescore=..., e.g. stages.rescorer, or use iterative_steps: 1)")
    model = place(copy.deepcopy(dense), device)
    scope, ignore = prune_cfg.scope, tuple(prune_cfg.ignore_layers)
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
    min_keep = prune_cfg.min_keep_fraction
    for k, target in enumerate(targets):
        if k > 0 and rescore is not None:
            scores = rescore(model)
        model, masks, info = prune_unstructured(model, scores, target, scope=scope, min_keep=min_keep,
                                                ignore=ignore, prior=masks)
        log.info("round %d/%d: sparsity %.4f (target %.4f)", k + 1, len(targets), info["sparsity_achieved"], target)
        between_rounds(model, k)
    info["rounds"] = len(targets)
    return model, arch, masks, info


def _structured_rounds(model, arch, scores, targets, data, prune_cfg, device, seed, rescore, between_rounds):
    """Physical removal in len(targets) rounds; round k removes units until targets[k] of the DENSE model's
    prunable units are gone (its ratio w.r.t. the current model follows), re-scoring the current model first.
    With prune_cfg["round_to"] each round's kept units per group are rounded up to a multiple of it, so every
    width stays a multiple (or the group's dense width); a round that keeps more than asked leaves the rest to
    the next round (the counts are of units actually removed), the last round's shortfall stays in
    ratio_achieved. Each round checks the pruned model against the masked current model.
    → (model, arch, None, info)."""
    from prunelab.models import prunable_layers
    from prunelab.structured import prune_structured

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
        model, arch, info = prune_structured(model, arch, scores, round_ratio, x, scope=prune_cfg.scope,
                                             min_keep=prune_cfg.min_keep_units, round_to=prune_cfg.round_to,
                                             ignore=tuple(prune_cfg.ignore_layers))
        model = place(model, device)
        n0 = info["n_prunable"] if n0 is None else n0
        removed += info["n_removed"]
        rounds.append(info.pop("removed"))
        log.info("round %d/%d: %d of %d units removed (target %.4f)", k + 1, len(targets), removed, n0, target)
        between_rounds(model, k)
    after = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    info.update(ratio_requested=float(targets[-1]), ratio_achieved=removed / n0, n_prunable=n0, n_removed=removed,
                layer_kept={n: after[n] / dense_units[n] for n in dense_units}, rounds=len(targets),
                removed_rounds=rounds)
    if len(targets) == 1:
        info["removed"] = rounds[0]
    return model, arch, None, info


def finetune_model(model: nn.Module, masks: dict | None, data: dict, finetune_cfg: TrainSettings | dict,
                   epochs: int, device, seed: int, on_epoch=None):
    """Fine-tune in place for `epochs` (masks kept at zero) → TrainResult, or None when epochs == 0."""
    if epochs <= 0:
        return None
    keeper = MaskKeeper(model, masks) if masks else None
    result = train_model(model, data, TrainSettings.of(finetune_cfg, "finetune").replace(epochs=epochs), device, seed,
                         after_step=keeper.apply if keeper else None, on_epoch=on_epoch)
    if keeper is not None:
        keeper.remove()
        keeper.apply()
    return result


def masks_hold(model: nn.Module, masks: dict | None) -> bool:
    """True when every masked weight of `model` is exactly zero."""
    if not masks:
        return True
    modules = dict(model.named_modules())
    return all(bool((modules[n].weight.detach()[~m.to(torch.bool)] == 0).all()) for n, m in masks.items())


def rescorer(method: str, method_cfg: dict, data: dict, stats_cfg: dict, seed: int, device):
    """A function model -> scores that re-collects the statistics `method` needs on the current model."""
    from prunelab.methods import required_statistics, score_model
    from prunelab.pipeline import collect_baseline_statistics

    needs = required_statistics([method], {method: method_cfg})
    lrp = method_cfg if "relevance" in needs else None

    def rescore(model: nn.Module) -> dict:
        stats = collect_baseline_statistics(model, data, needs, stats_cfg, seed, device, lrp)
        return score_model(model, stats, method, method_cfg)

    return rescore
