"""Schedules that train from random initialisation: gradual FRS channel pruning while training, and the
scratch control.

Gradual FRS (Aketi et al. 2020, arXiv 2002.09958; docs/methods.md). From a freshly initialised model, train
the normal schedule; at the start of 0-based epoch e in {interval, 2·interval, ...} up to `stop_epoch`
(i.e. after e epochs of training) score every prunable channel with FRS on the current model (LRP-αβ on
`stats.samples` train images, class weights from the model's current per-class accuracy on them) and mask
the lowest-scoring channels not yet pruned, globally. Masked channels stay exactly zero for the rest of
training (`ChannelKeeper`: weight rows, bias and the following BatchNorm's weight and bias, with their
gradients). Epochs after the last pruning step are the fine-tuning; with select='best_val' the validation
split picks the epoch among those only. At the end the masked channels are removed physically and the
pruned network must reproduce the masked model's logits.

Channel budget. N = prunable channels (coupled channels count once per member). Target T = round(ratio·N),
capped so every group keeps `min_keep_units`. With S steps: `channels_per_step` null → cumulative
round(T·k/S) after step k (equal steps, exact total); an int x → x per step until T (the last step may
be smaller; too few steps to reach T is an error before training starts). The paper uses x = 120 for
CIFAR ResNets and 160 for VGG-16 on CIFAR-10. With prune.target params or macs the ratio is a fraction of the
model's cost instead, and step k removes channels (same ranking) until ratio·k/S of it is gone
(`prunelab.pruning.costs`), so gradual and one-shot pruning meet at the same cost.

What is never pruned: the classifier's outputs, residual streams (groups that pass a residual add:
only the inner convs of residual blocks are prunable, `residual="inner"` in prunelab.pruning.selection), layers in
`ignore_layers`, and, automatically for VGG (any arch name containing "vgg"), the first two convolutions,
as in the paper.

Scratch (Liu et al. 2019): the pruned architecture ("shapes" of a structurally pruned checkpoint) built
fresh from a seed, the zoo's init re-applied, and trained with the baseline recipe for a number of optimiser
steps (`prunelab.pruning.schedules.scratch_steps`).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from prunelab.data import calibration_subset
from prunelab.methods import get_method, score_model
from prunelab.models import (TV_PREFIX, architecture, architecture_for, build_model, classifier_name, init_weights,
                             place, prunable_layers)
from prunelab.models.graph import following_bn, structured_groups
from prunelab.pruning.removal import check_equivalence, remove_units
from prunelab.pruning.schedules import cumulative_targets, pruning_epochs
from prunelab.pruning.costs import CostModel
from prunelab.pruning.selection import group_score, lowest_units, lowest_units_to_cost, protect_best, validate_ratio
from prunelab.settings import GradualSettings, StatsSettings, TrainSettings, round_half_up
from prunelab.stats import collect_statistics
from prunelab.training import TrainResult, seed_everything, train_model
from prunelab.training.regularizers import regularizer_loss

log = logging.getLogger("prunelab.pruning.gradual")


def auto_ignore(model: nn.Module, arch_name: str) -> list[str]:
    """Layers never pruned by gradual FRS on this architecture: VGG's first two convolutions."""
    if "vgg" not in arch_name.lower():
        return []
    return [n for n, m in prunable_layers(model) if isinstance(m, nn.Conv2d)][:2]


# ------------------------------------------------------------------------------------------- masks
class ChannelKeeper:
    """Holds pruned output channels at exactly zero while training (structured analogue of MaskKeeper).

    For each layer: its weight rows (dim 0) and bias, and the weight and bias of the BatchNorm that
    normalises its output, are zeroed for pruned channels; gradient hooks zero their gradients (so
    momentum built after pruning stays zero) and `apply()` re-zeroes them after each optimiser step
    (undoing momentum from before pruning and any decoupled decay). keep[layer]: bool U, True = alive.
    """

    def __init__(self, model: nn.Module, layers: list[str], bns: dict[str, str]):
        modules = dict(model.named_modules())
        self.keep: dict[str, torch.Tensor] = {}
        self.params: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.handles = []
        for name in layers:
            m = modules[name]
            keep = torch.ones(m.weight.shape[0], dtype=torch.bool, device=m.weight.device)
            self.keep[name] = keep
            owned = [m.weight, m.bias]
            if name in bns:
                bn = modules[bns[name]]
                if not bn.affine:
                    raise ValueError(f"BatchNorm '{bns[name]}' after '{name}' has no affine parameters: a masked "
                                     "channel would not output zero in eval mode")
                owned += [bn.weight, bn.bias]
            for p in owned:
                if p is None:
                    continue
                self.params.append((p, keep))
                self.handles.append(p.register_hook(lambda g, k=keep: g.masked_fill(~_rows(k, g), 0)))

    @torch.no_grad()
    def apply(self) -> None:
        """Re-zero every pruned channel's parameters (in place)."""
        for p, keep in self.params:
            p.masked_fill_(~_rows(keep, p), 0)

    def prune(self, remove: dict[str, torch.Tensor]) -> None:
        """Mark channels `remove[layer]` (indices) pruned and zero them."""
        for name, idx in remove.items():
            self.keep[name][torch.as_tensor(idx, dtype=torch.long, device=self.keep[name].device)] = False
        self.apply()

    def removed(self) -> dict[str, torch.Tensor]:
        """{layer: sorted indices of its pruned channels} (CPU LongTensors)."""
        return {n: torch.nonzero(~k).flatten().cpu() for n, k in self.keep.items()}

    def holds(self) -> bool:
        """True when every pruned channel's parameters are exactly zero."""
        return all(bool((p.detach()[~keep] == 0).all()) for p, keep in self.params)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _rows(keep: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """keep (U,) broadcast over the rows (dim 0) of t, on t's device."""
    return keep.to(t.device).view(-1, *([1] * (t.dim() - 1)))


# ------------------------------------------------------------------------------------------- selection
def select_channels(scores: dict, groups: list[dict], keep: dict[str, torch.Tensor], count: float,
                    min_keep: int, costs: CostModel | None = None, kind: str = "units") -> dict[str, torch.Tensor]:
    """The lowest-scoring alive channels over all groups → {layer: indices} (every group member), by the global
    ranking of one-shot structured pruning (`lowest_units`; each layer L2-normalised, a coupled group scored by
    the mean of its members): `count` channels (kind units), or channels until `count` more of the `kind` cost
    (params, macs) is removed (`lowest_units_to_cost`, `costs` the dense model's CostModel over `groups`). Pruned
    channels and each group's `min_keep` best alive channels are never chosen.
    """
    parts = []
    for g in groups:
        alive = keep[g["members"][0]].cpu()
        s = group_score(scores, g["members"], "l2")
        s[~alive] = math.inf
        parts.append(protect_best(s, min(min_keep, int(alive.sum())), alive))
    if kind == "units":
        chosen = lowest_units(parts, [len(g["members"]) for g in groups], int(count))
    else:
        alive = [int(keep[g["members"][0]].sum()) for g in groups]
        chosen = lowest_units_to_cost(parts, costs, kind, count, kept=alive)
    return {n: torch.nonzero(mask).flatten() for g, mask in zip(groups, chosen) for n in g["members"]}


class GradualFRS:
    """`before_epoch` / `after_step` hooks for `train_model` that prune channels by FRS while training.

    model: freshly initialised, on `device`. cfg: interval, stop_epoch, channels_per_step, ignore_layers,
    min_keep_units (see the module docstring). frs_cfg: {alpha, beta}; stats_cfg: {samples, batch_size}.
    Run train_model with select='last' (a best-val epoch before the last step has fewer channels masked;
    `train_gradual` selects among the later epochs); `finish` refuses a model whose masks do not hold.
    """

    def __init__(self, model: nn.Module, arch_name: str, data: dict, ratio: float, epochs: int,
                 cfg: GradualSettings | dict, frs_cfg: dict | None, stats_cfg: StatsSettings | dict, seed: int, device):
        cfg, self.stats_cfg = GradualSettings.of(cfg), StatsSettings.of(stats_cfg)
        self.ratio = validate_ratio(ratio)
        self.frs_cfg = get_method("frs").resolve_config(frs_cfg)  # the registry's one merge of the defaults
        self.device = device
        self.num_classes = int(data["num_classes"])
        self.x, self.y = calibration_subset(data, self.stats_cfg.samples, seed, device)
        self.example = self.x[:64]
        layers = dict(prunable_layers(model))
        own = list(cfg.ignore_layers)
        bad = [n for n in own if n not in layers]
        if bad:
            raise ValueError(f"gradual.ignore_layers names {bad}, which are not prunable layers; valid: {list(layers)}")
        self.ignored = sorted(set(own) | set(auto_ignore(model, arch_name)))
        skip = set(self.ignored) | {classifier_name(model)}
        self.groups = [g for g in structured_groups(model, self.example, "inner") if not skip & set(g["members"])]
        if not self.groups:
            raise ValueError("gradual: no prunable channels (every layer is the classifier, ignored or a residual "
                             "stream)")
        self.min_keep, self.kind = cfg.min_keep_units, cfg.target
        self.n_total = sum(g["units"] * len(g["members"]) for g in self.groups)
        cap = sum((g["units"] - min(self.min_keep, g["units"])) * len(g["members"]) for g in self.groups)
        self.target = min(round_half_up(self.ratio * self.n_total), cap)
        self.epochs_at = pruning_epochs(cfg.interval, cfg.stop_epoch_for(int(epochs)), int(epochs))
        self.costs = None
        if self.kind == "units":
            self.cumulative = cumulative_targets(self.target, len(self.epochs_at), cfg.channels_per_step)
        else:  # equal shares of the cost target, as one-shot pruning to a cost reaches it
            if cfg.channels_per_step is not None:
                raise ValueError(f"gradual.channels_per_step counts channels, but prune.target is {self.kind}: the "
                                 "steps remove equal shares of that cost; expected channels_per_step: null")
            self.costs = CostModel(model, self.example, self.groups)
            steps = len(self.epochs_at)
            self.cumulative = [self.ratio * self.costs.dense[self.kind] * k / steps for k in range(1, steps + 1)]
        members = [n for g in self.groups for n in g["members"]]
        self.keeper = ChannelKeeper(model, members, following_bn(model, self.example))
        self.steps: list[dict] = []

    def cost_removed(self) -> float:
        """The `kind` cost the masked channels remove (CostModel of the dense model)."""
        return self.costs.removed(self.kind, [int(self.keeper.keep[g["members"][0]].sum()) for g in self.groups])

    @property
    def n_pruned(self) -> int:
        """Channels pruned so far (coupled channels once per member)."""
        return sum(int((~k).sum()) for k in self.keeper.keep.values())

    def scores(self, model: nn.Module) -> dict:
        """FRS of every prunable layer of the current model on the calibration subset → {layer: {...}}."""
        stats = collect_statistics(model, self.x, self.y, {"relevance"}, self.num_classes,
                                   self.stats_cfg.batch_size, self.device,
                                   lrp_alpha=self.frs_cfg["alpha"], lrp_beta=self.frs_cfg["beta"])
        return score_model(model, stats, "frs", self.frs_cfg)["layers"]

    def before_epoch(self, epoch: int, model: nn.Module) -> None:
        if epoch not in self.epochs_at:
            return
        k = self.epochs_at.index(epoch)
        need = self.cumulative[k] - (self.n_pruned if self.costs is None else self.cost_removed())
        if need > 0:
            remove = select_channels(self.scores(model), self.groups, self.keeper.keep, need, self.min_keep,
                                     self.costs, self.kind)
            self.keeper.prune(remove)
        self.steps.append({"after_epochs": epoch, "pruned": self.n_pruned})
        log.info("gradual step %d/%d after %d epochs: %d of %d channels pruned (target %d)", k + 1,
                 len(self.epochs_at), epoch, self.n_pruned, self.n_total, self.target)

    def after_step(self) -> None:
        self.keeper.apply()

    def state(self) -> dict:
        """What a resumed run needs back (prunelab.training.resume): the channels pruned so far, the steps taken."""
        return {"keep": {n: k.detach().cpu().clone() for n, k in self.keeper.keep.items()},
                "steps": [dict(s) for s in self.steps]}

    def load_state(self, state: dict) -> None:
        """Put back what `state` returned (the masks in place: the keeper's gradient hooks hold them)."""
        for name, keep in state["keep"].items():
            self.keeper.keep[name].copy_(keep)
        self.steps = [dict(s) for s in state["steps"]]

    def finish(self, model: nn.Module, arch: dict, tol: float = 1e-4):
        """Remove the masked channels physically (a copy) → (pruned, new_arch, info); the pruned model must
        give the masked model's logits (EquivalenceError otherwise)."""
        self.keeper.remove()
        if not self.keeper.holds():
            raise RuntimeError("gradual: a pruned channel's parameters became nonzero during training")
        remove = self.keeper.removed()
        before = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
        pruned = remove_units(copy.deepcopy(model), remove, self.groups, self.example)
        diff = check_equivalence(pruned, model, self.example, tol)
        after = {n: m.weight.shape[0] for n, m in prunable_layers(pruned)}
        info = {"ratio_achieved": self.n_pruned / self.n_total, "n_prunable": self.n_total,
                "n_removed": self.n_pruned, "channels_target": self.target, "prune_steps": self.steps,
                "pruning_epochs": self.epochs_at, "ignored_layers": self.ignored,
                "layer_kept": {n: after[n] / before[n] for n in before}, "max_logit_diff": diff,
                "prune_target": self.kind,
                "cost_removed": self.n_pruned / self.n_total if self.costs is None else
                self.cost_removed() / self.costs.dense[self.kind]}
        return pruned, architecture(pruned, arch), info


def train_gradual(data: dict, spec: dict, train_cfg: TrainSettings | dict, gradual_cfg: GradualSettings | dict,
                  ratio: float, seed: int, device, frs_cfg: dict | None = None,
                  stats_cfg: StatsSettings | dict | None = None, on_epoch=None, resume=None):
    """Gradual FRS from random init → (pruned model, new arch, info, TrainResult).

    spec: config arch entry {name, options}; train_cfg: the normal schedule (its epochs include the
    fine-tuning). The TrainResult's wall_s is the whole run (training + scoring steps); best epoch and
    top1_val are chosen among the epochs after the last pruning step (select='best_val'), else the last.
    resume: a `ResumeState` (see train_model); the masks, the steps taken and the best epoch so far go with it.
    """
    train_cfg = TrainSettings.of(train_cfg)
    arch = architecture_for(spec, data)
    seed_everything(seed)
    model = place(build_model(arch), device)
    epochs = train_cfg.epochs
    pruner = GradualFRS(model, arch["name"], data, ratio, epochs, gradual_cfg, frs_cfg, stats_cfg, seed, device)
    last = pruner.epochs_at[-1]
    best = {"top1_val": -1.0, "epoch": epochs, "state": None}

    def record(rec: dict) -> None:
        rec = {**rec, "channels_pruned": pruner.n_pruned}
        if rec["epoch"] > last and rec["top1_val"] > best["top1_val"]:
            best.update(top1_val=rec["top1_val"], epoch=rec["epoch"], state=copy.deepcopy(model.state_dict()))
        if on_epoch is not None:
            on_epoch(rec)

    if resume is not None:
        resume.register("gradual", pruner.state, pruner.load_state)
        resume.register("gradual_best", lambda: dict(best), best.update)
    result = train_model(model, data, train_cfg.replace(select="last"), device, seed, after_step=pruner.after_step,
                         before_epoch=pruner.before_epoch, on_epoch=record, resume=resume)
    if train_cfg.select == "best_val":
        model.load_state_dict(best["state"])
        result.best_epoch, result.best_top1_val = best["epoch"], best["top1_val"]
    else:
        result.best_epoch, result.best_top1_val = epochs, result.history[-1]["top1_val"]
    pruned, new_arch, info = pruner.finish(model, arch)
    return place(pruned, device), new_arch, info, result


# ------------------------------------------------------------------------------------------- scratch
def scratch_model(arch: dict, seed: int) -> nn.Module:
    """A fresh model of architecture `arch` (its "shapes" included) from `seed`: the zoo init is applied
    again after resizing, so pruned layers start like the dense model's (torchvision models keep theirs)."""
    seed_everything(seed)
    model = build_model(arch)
    if arch.get("shapes") and not arch["name"].startswith(TV_PREFIX):
        init_weights(model)
    return model


def train_scratch(arch: dict, data: dict, train_cfg: dict, steps: int, seed: int, device,
                  regularizer_cfg: dict | None = None, on_epoch=None, resume=None) -> tuple[nn.Module, TrainResult]:
    """Train `scratch_model(arch, seed)` with the baseline recipe `train_cfg` for `steps` optimiser steps
    (`schedules.scratch_steps`; the schedule spans the epochs they need, the last one cut short);
    regularizer_cfg {kind, beta} as the regime's baseline (None: standard). resume: see train_model."""
    cfg = TrainSettings.of(train_cfg)
    epochs = -(-int(steps) // cfg.epoch_steps(len(data["train"]["y"])))
    model = place(scratch_model(arch, seed), device)
    with regularizer_loss(model, regularizer_cfg) as extra_loss:
        result = train_model(model, data, cfg.replace(epochs=epochs), device, seed, extra_loss=extra_loss,
                             on_epoch=on_epoch, max_steps=int(steps), resume=resume)
    return model, result
