"""Pruning schedules: cumulative ratios of the iterative schedule, the fine-tuning budget it splits, fine-tuning
with masks kept at zero, and the steps of gradual pruning while training.

Fine-tuning budget: every method of an experiment gets the same `finetune` config; the k rounds of the
iterative schedule share it (rounds 1..k-1 fine-tune epochs // k each, the final fine-tuning the rest).
"""

from __future__ import annotations

import math

from torch import nn

from prunelab.pruning.masks import MaskKeeper
from prunelab.settings import FinetuneSettings, PruneSettings, TrainSettings, round_half_up
from prunelab.training import train_model


def iterative_ratios(target: float, steps: int) -> list[float]:
    """Cumulative ratios (w.r.t. the dense model) for `steps` prune/fine-tune rounds reaching `target`.

    Rule: the kept fraction shrinks geometrically, kept_k = (1 - target)^(k/steps), so each round removes the
    same fraction 1 - (1 - target)^(1/steps) of what is left (Han et al. 2015 prune iteratively in steps).
    For a physically pruned model, pass that per-round fraction of the current units instead.
    """
    out = [1.0 - (1.0 - target) ** (k / steps) for k in range(1, steps + 1)]
    out[-1] = float(target)
    return out


def finetune_split(finetune_cfg: FinetuneSettings | dict, prune_cfg: PruneSettings | dict) -> tuple[int, int]:
    """(epochs per intermediate pruning round, epochs left for the final fine-tuning)."""
    total = FinetuneSettings.of(finetune_cfg).epochs
    prune_cfg = PruneSettings.of(prune_cfg)
    if not prune_cfg.iterative:
        return 0, total
    steps = prune_cfg.iterative_steps
    per_round = total // steps
    return per_round, total - per_round * (steps - 1)


def finetune_budgets(finetune_cfg: FinetuneSettings | dict, prune_cfg: PruneSettings | dict,
                     n_train: int) -> dict[int, int]:
    """{budget in optimiser steps: the epoch of the final fine-tuning it ends after}: finetune.budgets of a
    one-shot schedule; the iterative schedule's final fine-tuning is one budget (it shares the epochs with the
    rounds, `finetune_split`). {} when there is no fine-tuning."""
    finetune_cfg, prune_cfg = FinetuneSettings.of(finetune_cfg), PruneSettings.of(prune_cfg)
    _, epochs = finetune_split(finetune_cfg, prune_cfg)
    if epochs == 0:
        return {}
    if not prune_cfg.iterative:
        return finetune_cfg.budget_epochs(n_train)
    if finetune_cfg.budgets and len(finetune_cfg.budgets) > 1:
        raise ValueError("finetune.budgets: several budgets are read from one fine-tuning run, which the iterative "
                         "schedule splits between its rounds; expected one budget or prune.schedule: oneshot")
    return {epochs * finetune_cfg.epoch_steps(n_train): epochs}


def finetune_model(model: nn.Module, masks: dict | None, data: dict, finetune_cfg: TrainSettings | dict,
                   epochs: int, device, seed: int, on_epoch=None, budgets: dict[int, int] | None = None,
                   resume=None):
    """Fine-tune in place for `epochs` (masks kept at zero) → TrainResult, or None when epochs == 0. budgets:
    {steps: epoch} (`finetune_budgets`): result.snapshots holds the model selected within each budget's epochs.
    resume: a ResumeState (see train_model)."""
    if epochs <= 0:
        return None
    keeper = MaskKeeper(model, masks) if masks else None
    cfg = finetune_cfg if isinstance(finetune_cfg, TrainSettings) else FinetuneSettings.of(finetune_cfg)
    result = train_model(model, data, cfg.replace(epochs=epochs), device, seed,
                         after_step=keeper.apply if keeper else None, on_epoch=on_epoch,
                         snapshot_epochs=set((budgets or {}).values()), resume=resume)
    if keeper is not None:
        keeper.remove()
        keeper.apply()
    return result


def scratch_steps(budget: str, baseline_steps: int, finetune_cfg: FinetuneSettings | dict, n_train: int) -> int:
    """Optimiser steps of the scratch control (`scratch.budget`): equal_steps = the baseline's steps plus the whole
    fine-tuning run (the largest budget), as many as a pruned and fine-tuned model has had; baseline_epochs = the
    baseline's steps (Liu et al. 2019's Scratch-E)."""
    if budget == "baseline_epochs":
        return int(baseline_steps)
    finetune_cfg = FinetuneSettings.of(finetune_cfg)
    return int(baseline_steps) + finetune_cfg.run_steps(n_train)


def pruning_epochs(interval: int, stop_epoch: int, epochs: int) -> list[int]:
    """Gradual pruning: 0-based epochs at whose start a pruning step runs: interval, 2·interval, ... ≤ stop_epoch
    (`GradualSettings.stop_epoch_for` resolves a null stop_epoch). stop_epoch must be < epochs (the rest is
    fine-tuning).
    """
    if stop_epoch >= epochs:
        raise ValueError(f"gradual.stop_epoch ({stop_epoch}) must be below train.epochs ({epochs}): the epochs "
                         "after the last pruning step are the fine-tuning")
    if stop_epoch < interval:
        raise ValueError(f"gradual.stop_epoch ({stop_epoch}) is below gradual.interval ({interval}): no step")
    return list(range(interval, stop_epoch + 1, interval))


def cumulative_targets(total: int, steps: int, per_step: int | None = None) -> list[int]:
    """Gradual pruning: channels pruned in all after each of `steps` steps, ending at `total`: round(total·k/steps)
    (per_step None) or per_step more each step, capped at total."""
    if per_step is None:
        return [round_half_up(total * k / steps) for k in range(1, steps + 1)]
    if per_step * steps < total:
        raise ValueError(f"gradual: {steps} steps of {per_step} channels cannot reach the target of {total} "
                         "channels; raise channels_per_step or stop_epoch, or lower interval or the ratio")
    return [min(total, per_step * k) for k in range(1, steps + 1)]
