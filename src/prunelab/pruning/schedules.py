"""Pruning-stage functions: prune a trained model at a ratio (one-shot or iterative) and fine-tune it.

Fine-tuning budget: every method of an experiment gets the same `finetune` config. With the iterative schedule
(Han et al. 2015 for weights; for channels as Molchanov et al. 2017 / Li et al. 2017 prune and retrain in
rounds) the k rounds share that budget: rounds 1..k-1 each fine-tune epochs // k inside
the pruning step (after re-scoring the current model with the same method), the final fine-tuning spends the rest.
"""

from __future__ import annotations

import math

from prunelab.pruning.selection import validate_ratio
from prunelab.settings import PruneSettings, TrainSettings





def finetune_split(finetune_cfg: TrainSettings | dict, prune_cfg: PruneSettings | dict) -> tuple[int, int]:
    """(epochs per intermediate pruning round, epochs left for the final fine-tuning)."""
    total = TrainSettings.of(finetune_cfg, "finetune").epochs
    prune_cfg = PruneSettings.of(prune_cfg)
    if not prune_cfg.iterative:
        return 0, total
    steps = prune_cfg.iterative_steps
    per_round = total // steps
    return per_round, total - per_round * (steps - 1)













def iterative_ratios(target: float, steps: int) -> list[float]:
    """Cumulative ratios (w.r.t. the dense model) for `steps` prune/fine-tune rounds reaching `target`.

    Rule: the kept fraction shrinks geometrically, kept_k = (1 - target)^(k/steps), so each round removes the
    same fraction 1 - (1 - target)^(1/steps) of what is left (Han et al. 2015 prune iteratively in steps).
    For a physically pruned model, pass that per-round fraction of the current units instead.
    """
    target = validate_ratio(target, "target ratio")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    out = [1.0 - (1.0 - target) ** (k / steps) for k in range(1, steps + 1)]
    out[-1] = target
    return out



# ------------------------------------------------------------------------------------------- schedule
def pruning_epochs(interval: int, stop_epoch: int | None, epochs: int) -> list[int]:
    """0-based epochs at whose start a pruning step runs: interval, 2·interval, ... ≤ stop_epoch.

    stop_epoch None → epochs // 2. stop_epoch must be < epochs (the rest is fine-tuning).
    """
    if stop_epoch is None:
        stop_epoch = epochs // 2
    for what, v in (("interval", interval), ("stop_epoch", stop_epoch), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"gradual: {what} must be a positive int, got {v!r}")
    if stop_epoch >= epochs:
        raise ValueError(f"gradual.stop_epoch ({stop_epoch}) must be below train.epochs ({epochs}): the epochs "
                         "after the last pruning step are the fine-tuning")
    if stop_epoch < interval:
        raise ValueError(f"gradual.stop_epoch ({stop_epoch}) is below gradual.interval ({interval}): no step")
    return list(range(interval, stop_epoch + 1, interval))


def cumulative_targets(total: int, steps: int, per_step: int | None = None) -> list[int]:
    """Channels pruned in all after each of `steps` steps, ending at `total` (see the module docstring)."""
    if per_step is None:
        return [int(math.floor(total * k / steps + 0.5)) for k in range(1, steps + 1)]
    if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 1:
        raise ValueError(f"gradual.channels_per_step must be a positive int or null, got {per_step!r}")
    if per_step * steps < total:
        raise ValueError(f"gradual: {steps} steps of {per_step} channels cannot reach the target of {total} "
                         "channels; raise channels_per_step or stop_epoch, or lower interval or the ratio")
    return [min(total, per_step * k) for k in range(1, steps + 1)]
