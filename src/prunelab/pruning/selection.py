"""Pruning selection: which weights (unstructured) or output units (structured) go.

Conventions (docs/methods.md, "Selection"):
- Scores: {layer: {"unstructured": Tensor(weight shape) | None, "structured": Tensor(out_units) | None}},
  or a whole score file {"method", "config", "layers": ...}. Higher score = more important = kept longer.
- Unstructured ratio = fraction of prunable weights removed (prunable = weights of every Conv2d/Linear not
  in `ignore`, the classifier included); structured ratio = fraction of prunable output units removed
  (`prune.target: units`), or of the model's parameters or MACs (`params`, `macs`: units go in the same global
  order until that cost is removed, `lowest_units_to_cost`; costs counted by `prunelab.pruning.costs`).
- Common scale for global scope (one rule for every method): structured scores are divided by their
  layer's L2 norm (as Molchanov et al. 2017 and the FRS paper do; `prune.normalize`: also "mean", Torch-Pruning's
  default, or "max"); unstructured scores are ranked as they are (global magnitude pruning; `normalize` argument).
- Coupled units (torch-pruning dependency groups, e.g. convs joined by a residual add) are selected as one
  unit whose score is the mean of the members' normalised scores; removing one such unit removes one
  channel from every member and counts as len(members) channels towards the ratio.
- Residual streams (`residual="inner"`, default): only groups that do not pass through a residual add are
  prunable, i.e. the inner convs of residual blocks. `residual="all"` also prunes the streams; it is
  refused where the stream passes a zero-padding (option-A) shortcut, which torch-pruning cannot follow.
- Hardware-aligned widths (`round_to`, structured only): after selection each group's kept count is raised to
  the smallest multiple of round_to >= it (at most all its units) by restoring its highest-scored removed
  units, e.g. 8 for GPU tensor cores, 16 for AVX-512 (oneDNN computes 16 output channels per block). Rounding
  only keeps more units, so the achieved ratio (reported) can be below the requested one.
The structured reference (`masked_dense_model`) and the physical removal live in `prunelab.pruning.removal`,
keep-masks in `prunelab.pruning.masks`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunelab.models import classifier_name, prunable_layers
from prunelab.models.graph import structured_groups
from prunelab.pruning.costs import CostModel
from prunelab.settings import PruneSettings, round_half_up, rounded_up

NORMALIZE = ("l2", "mean", "max", None)


# ----------------------------------------------------------------------------------------------- validation
def validate_ratio(ratio, what: str = "ratio") -> float:
    """`ratio` as a float in the open interval (0, 1), else ValueError naming it."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or not 0.0 < ratio < 1.0:
        raise ValueError(f"{what} must be a number in the open interval (0, 1) (fraction removed), got {ratio!r}")
    return float(ratio)


def score_layers(scores: dict) -> dict:
    """The per-layer part of a score file (accepts the whole file or its "layers" dict)."""
    if not isinstance(scores, dict):
        raise ValueError(f"scores must be a dict (a score file or its 'layers'), got {type(scores).__name__}")
    layers = scores["layers"] if "layers" in scores else scores
    if not isinstance(layers, dict):
        raise ValueError(f"scores['layers'] must be a dict of layer name -> scores, got {type(layers).__name__}")
    return layers


def validate_scores(model: nn.Module, scores: dict) -> dict:
    """Check a score file against `model`: same prunable layer names, tensor shapes match, values finite.

    Returns the per-layer dict. A file for another architecture (or a pruned/dense mismatch) raises
    ValueError naming the first offending layers, before anything is written.
    """
    layers = score_layers(scores)
    modules = dict(prunable_layers(model))
    method = scores.get("method", "?") if isinstance(scores, dict) else "?"
    missing = [n for n in modules if n not in layers]
    extra = [n for n in layers if n not in modules]
    if missing or extra:
        raise ValueError(f"scores ({method}) do not match the model's prunable layers (scores for a different "
                         f"architecture?): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unknown {extra[:5]}{'...' if len(extra) > 5 else ''}")
    for name, m in modules.items():
        entry = layers[name]
        if not isinstance(entry, dict) or not set(entry) <= {"unstructured", "structured"}:
            raise ValueError(f"scores[{name!r}] must be a dict with keys 'unstructured' / 'structured', "
                             f"got {entry!r:.80}")
        want = {"unstructured": tuple(m.weight.shape), "structured": (m.weight.shape[0],)}
        for kind, shape in want.items():
            s = entry.get(kind)
            if s is None:
                continue
            if not isinstance(s, torch.Tensor):
                raise ValueError(f"scores[{name!r}][{kind!r}] must be a tensor or None, got {type(s).__name__}")
            if tuple(s.shape) != shape:
                raise ValueError(f"scores[{name!r}][{kind!r}] has shape {tuple(s.shape)} but the model's layer "
                                 f"needs {shape} (scores for a different architecture or pruning state?)")
            if not torch.isfinite(s).all():
                raise ValueError(f"scores[{name!r}][{kind!r}] contains NaN or inf")
    return layers


def _check_ignore(ignore, modules: dict) -> set:
    if ignore is None:
        ignore = ()
    if isinstance(ignore, str):
        ignore = (ignore,)
    bad = [n for n in ignore if n not in modules]
    if bad:
        raise ValueError(f"ignore names {bad}, which are not prunable layers; valid: {list(modules)}")
    return set(ignore)


def _get(layers: dict, name: str, kind: str) -> torch.Tensor:
    s = layers[name].get(kind)
    if s is None:
        raise ValueError(f"scores[{name!r}][{kind!r}] is None, but {kind} pruning needs it "
                         f"(add {name!r} to `ignore` to leave the layer unpruned)")
    return s.detach().to("cpu", torch.float64)


def normalized(s: torch.Tensor, rule: str | None) -> torch.Tensor:
    """Scores of one layer divided by their L2 norm ("l2"), mean |s| ("mean"), max |s| ("max"), or unchanged
    (None). An all-zero layer stays zero.
    """
    if rule not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {rule!r}")
    if rule is None:
        return s
    d = s.norm() if rule == "l2" else s.abs().mean() if rule == "mean" else s.abs().max()
    return s / d if d > 0 else s


def _lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k lowest entries of a 1-D score (stable: ties go to the lower index)."""
    return torch.argsort(score, stable=True)[:k]


# --------------------------------------------------------------------------------------------- unstructured
def select_unstructured(model: nn.Module, scores: dict, ratio: float, prune: PruneSettings | dict | None = None,
                        normalize: str | None = None, prior: dict | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, weight shape, True = kept) for every prunable layer not in `ignore`.

    prune: the `prune` settings (scope, min_keep_fraction, ignore_layers; a dict is completed from the schema).
    Removes round(ratio × N) of the N prunable weights with the lowest scores (global: one ranking over all
    layers; layerwise: ratio per layer). Each layer keeps at least max(1, ceil(min_keep_fraction × its weights)),
    its highest-scored ones; where that caps the removal the achieved sparsity is lower (see
    `prune_unstructured` info). `prior`: keep-masks of an earlier step; weights it removed stay removed
    (ranked lowest, at least as many removed as before), for iterative pruning to a cumulative ratio.
    """
    prune = PruneSettings.of(prune)
    ratio = validate_ratio(ratio)
    layers = validate_scores(model, scores)
    modules = dict(prunable_layers(model))
    ignored = _check_ignore(prune.ignore_layers, modules)
    names = [n for n in modules if n not in ignored]
    if not names:
        raise ValueError("every prunable layer is in `ignore`: nothing to prune")
    flat, protect, n_prior = {}, {}, {}
    for n in names:
        s = normalized(_get(layers, n, "unstructured"), normalize).flatten().clone()
        if prior is not None and n in prior:
            p = prior[n].to("cpu").flatten()
            if p.numel() != s.numel():
                raise ValueError(f"prior mask for {n!r} has {p.numel()} entries, weight has {s.numel()}")
            s[~p.bool()] = -math.inf
        n_prior[n] = int(torch.isneginf(s).sum())
        keep = max(1, math.ceil(prune.min_keep_fraction * s.numel()))
        protect[n] = keep
        s[torch.argsort(s, descending=True, stable=True)[:keep]] = math.inf  # never removed
        flat[n] = s
    removed: dict[str, torch.Tensor] = {}
    if prune.scope == "global":
        allscores = torch.cat([flat[n] for n in names])
        cap = allscores.numel() - sum(protect.values())
        k = min(max(round_half_up(ratio * allscores.numel()), sum(n_prior.values())), cap)
        drop = torch.zeros(allscores.numel(), dtype=torch.bool)
        drop[_lowest(allscores, k)] = True
        for n, part in zip(names, torch.split(drop, [flat[n].numel() for n in names])):
            removed[n] = part
    else:
        for n in names:
            k = min(max(round_half_up(ratio * flat[n].numel()), n_prior[n]), flat[n].numel() - protect[n])
            drop = torch.zeros(flat[n].numel(), dtype=torch.bool)
            drop[_lowest(flat[n], k)] = True
            removed[n] = drop
    return {n: (~removed[n]).reshape(modules[n].weight.shape) for n in names}


def _round_up_kept(drop: torch.Tensor, score: torch.Tensor, round_to: int) -> torch.Tensor:
    """`drop` (bool, (units,), True = removed) with its highest-scored removed units restored until the kept
    count is the smallest multiple of round_to >= it, capped at all units (removal order is kept: the
    restored units are the last ones a stable ascending sort of `score` would remove)."""
    kept = drop.numel() - int(drop.sum())
    extra = rounded_up(kept, drop.numel(), round_to) - kept
    idx = torch.nonzero(drop).flatten()
    idx = idx[torch.argsort(score[idx], stable=True)]
    out = drop.clone()
    out[idx[idx.numel() - extra:]] = False
    return out


def group_score(layers: dict, members: list[str], normalize: str | None = "l2") -> torch.Tensor:
    """One coupled group's unit scores (float64, (units,)): the mean of its members' normalised structured
    scores (`layers`: the per-layer part of a score file)."""
    return torch.stack([normalized(_get(layers, n, "structured"), normalize) for n in members]).mean(0)


def protect_best(score: torch.Tensor, keep: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """`score` with its `keep` highest entries (among `alive` ones, bool, when given) set to +inf in place:
    never chosen for removal."""
    ranked = score if alive is None else score.masked_fill(~alive, -math.inf)
    score[torch.argsort(ranked, descending=True, stable=True)[:keep]] = math.inf
    return score


def lowest_units(group_scores: list[torch.Tensor], widths: list[int], count: int) -> list[torch.Tensor]:
    """The one global ranking of structured pruning (one-shot, iterative and gradual): every group's units in
    one ascending order of score (ties: the earlier group, the lower index), taken while the number of
    channels removed stays nearest `count` (a unit of a group of `widths[g]` coupled layers counts
    widths[g] times; exact when nothing is coupled); +inf units are never taken. → per group a bool mask
    (units,), True = removed."""
    scores = torch.cat(group_scores)
    width = torch.cat([torch.full((len(s),), w) for s, w in zip(group_scores, widths)])
    order = torch.argsort(scores, stable=True)
    cum = torch.cumsum(width[order], 0)
    k = min(int((2 * cum - width[order] <= 2 * count).sum()), int(torch.isfinite(scores).sum()))
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[order[:k]] = True
    return list(torch.split(chosen, [len(s) for s in group_scores]))


def lowest_units_to_cost(group_scores: list[torch.Tensor], costs: CostModel, kind: str, budget: float,
                         round_to: int = 1, kept: list[int] | None = None) -> list[torch.Tensor]:
    """The one global ranking of structured pruning, taken until a cost is removed: every group's units in one
    ascending order of score (as `lowest_units`), removed one by one while the `kind` cost ("params" or "macs",
    `costs`: the model's CostModel over the same groups) removed stays nearest `budget` (the prefix before or after
    it is crossed, whichever is nearer: within one unit's cost). Each group's kept count is taken as rounded up to
    a multiple of round_to (what `_round_up_kept` then restores), so a step may remove a block's cost at once.
    +inf units are never taken; a budget that every removable unit together does not reach raises ValueError.
    kept: the units each group has now (gradual pruning masks units in steps; its masked units score +inf), the
    budget then being what is still to remove. → per group a bool mask (units,), True = removed (before the
    rounding is applied)."""
    scores = torch.cat(group_scores)
    group_of = torch.cat([torch.full((len(s),), i) for i, s in enumerate(group_scores)]).tolist()
    order = torch.argsort(scores, stable=True)
    units = [len(s) for s in group_scores]
    kept = list(units if kept is None else kept)
    effective = [rounded_up(k, u, round_to) for k, u in zip(kept, units)]
    layer_cost = {n: costs.layer_cost(kind, n, effective) for n in costs.layers}
    removed, taken = 0.0, 0
    for k in range(int(torch.isfinite(scores).sum())):
        g = group_of[int(order[k])]
        kept[g] -= 1
        before = removed
        if rounded_up(kept[g], units[g], round_to) != effective[g]:
            effective[g] = rounded_up(kept[g], units[g], round_to)
            for n in costs.touched[g]:
                c = costs.layer_cost(kind, n, effective)
                removed += layer_cost[n] - c
                layer_cost[n] = c
        if removed >= budget:
            taken = k + 1 if removed - budget <= budget - before else k
            break
    else:
        dense = costs.dense[kind]
        raise ValueError(f"prune.target {kind}: removing {budget / dense:.3f} more of the model's {kind} cannot be "
                         f"reached; every unit that min_keep_units, ignore_layers and the classifier let go removes "
                         f"{removed / dense:.3f}; expected a lower ratio")
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[order[:taken]] = True
    return list(torch.split(chosen, units))


def select_structured_groups(model: nn.Module, scores: dict, ratio: float, prune: PruneSettings | dict | None = None,
                             residual: str = "inner",
                             example_input: torch.Tensor | None = None) -> tuple[dict, list[dict], dict]:
    """select_structured plus the groups and counts it used: (remove, groups, counts), counts =
    {n_prunable, n_removed, ratio_achieved} in channels (a coupled unit once per member), and with a params or
    macs target also cost_removed (the fraction of the model's cost the selection removes, CostModel's count)."""
    prune = PruneSettings.of(prune)
    if prune.target != "units" and prune.scope != "global":
        raise ValueError(f"prune.target {prune.target} needs prune.scope global (layerwise scope gives every method "
                         "the same widths, hence the same cost, already); expected target: units")
    if prune.target != "units" and example_input is None:
        raise ValueError(f"prune.target {prune.target}: pass example_input (one input batch) to count the cost")
    ratio = validate_ratio(ratio)
    layers = validate_scores(model, scores)
    modules = dict(prunable_layers(model))
    ignored = _check_ignore(prune.ignore_layers, modules) | {classifier_name(model)}
    groups = [g for g in structured_groups(model, example_input, residual)
              if not ignored & set(g["members"])]
    if not groups:
        raise ValueError("no prunable output units: every layer is the classifier, ignored or a residual stream")
    keeps = [min(prune.min_keep_units, g["units"]) for g in groups]
    # the min_keep_units best units of each group stay
    group_scores = [protect_best(group_score(layers, g["members"], prune.normalize), keep)
                    for g, keep in zip(groups, keeps)]
    n_total = sum(g["units"] * len(g["members"]) for g in groups)
    costs = None
    if prune.target != "units":
        costs = CostModel(model, example_input, groups)
        drop = lowest_units_to_cost(group_scores, costs, prune.target, ratio * costs.dense[prune.target],
                                    prune.round_to)
    elif prune.scope == "global":
        cap = sum((g["units"] - keep) * len(g["members"]) for g, keep in zip(groups, keeps))
        drop = lowest_units(group_scores, [len(g["members"]) for g in groups], min(round_half_up(ratio * n_total), cap))
    else:
        drop = []
        for g, s, keep in zip(groups, group_scores, keeps):
            mask = torch.zeros(g["units"], dtype=torch.bool)
            mask[_lowest(s, min(round_half_up(ratio * g["units"]), g["units"] - keep))] = True
            drop.append(mask)
    drop = [_round_up_kept(mask, s, prune.round_to) for s, mask in zip(group_scores, drop)]
    remove = {}
    for g, mask in zip(groups, drop):
        idx = torch.nonzero(mask).flatten().long()
        for n in g["members"]:
            remove[n] = idx.clone()
    n_removed = sum(len(remove[g["members"][0]]) * len(g["members"]) for g in groups)
    counts = {"n_prunable": n_total, "n_removed": n_removed, "ratio_achieved": n_removed / n_total}
    if costs is not None:
        kept = [g["units"] - len(remove[g["members"][0]]) for g in groups]
        counts["cost_removed"] = costs.removed(prune.target, kept) / costs.dense[prune.target]
    return remove, groups, counts


def select_structured(model: nn.Module, scores: dict, ratio: float, prune: PruneSettings | dict | None = None,
                      residual: str = "inner",
                      example_input: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Output units to REMOVE, {layer: sorted LongTensor of indices}, for every layer of every prunable group
    (indices may be empty; the classifier, ignored layers and unpruned residual streams are absent).

    prune: the `prune` settings (scope, min_keep_units, ignore_layers, round_to; a dict is completed from the
    schema). Removes round(ratio × N) of the N prunable units, or with prune.target params / macs units until
    ratio × the model's cost is removed (global: one ranking over all groups of scores
    put on a common scale by prune.normalize; layerwise: ratio per group). Never the classifier's outputs, nor
    layers in ignore_layers (or groups containing them); each group keeps at least min_keep_units units (its
    best). Then each group's kept count is rounded up to a multiple of round_to (capped at its units) by
    restoring its highest-scored removed units, so fewer units than requested may go. Coupled layers share
    indices; see the module docstring for group scores and residual streams.
    """
    return select_structured_groups(model, scores, ratio, prune, residual, example_input)[0]
