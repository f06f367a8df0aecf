"""Pruning selection (unstructured weights, structured units), masks and their upkeep.

Conventions (DESIGN §5):
- Scores: {layer: {"unstructured": Tensor(weight shape) | None, "structured": Tensor(out_units) | None}},
  or a whole score file {"method", "config", "layers": ...}. Higher score = more important = kept longer.
- Unstructured ratio = fraction of prunable weights removed (prunable = weights of every Conv2d/Linear not
  in `ignore`, the classifier included); structured ratio = fraction of prunable output units removed.
- Common scale for global scope (one rule for every method): structured scores are divided by their
  layer's L2 norm (as Molchanov et al. 2017 and the FRS paper do); unstructured scores are ranked as they
  are (global magnitude pruning). Both can be changed with `normalize` ("l2", "max" or None).
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
The structured reference (`masked_dense_model`) and the physical removal live in `prunelab.pruning.removal`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunelab.models import classifier_name, prunable_layers
from prunelab.models.graph import structured_groups

NORMALIZE = ("l2", "max", None)


# ----------------------------------------------------------------------------------------------- validation
def validate_ratio(ratio, what: str = "ratio") -> float:
    """`ratio` as a float in the open interval (0, 1), else ValueError naming it."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or not 0.0 < ratio < 1.0:
        raise ValueError(f"{what} must be a number in the open interval (0, 1) (fraction removed), got {ratio!r}")
    return float(ratio)


def validate_round_to(round_to) -> int:
    """`round_to` as an int >= 1, else ValueError naming it."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be an int >= 1 (kept units per layer are rounded up to a multiple of "
                         f"it; 1 = no rounding), got {round_to!r}")
    return round_to


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
    """Scores of one layer divided by their L2 norm ("l2"), max |s| ("max"), or unchanged (None).

    An all-zero layer stays zero.
    """
    if rule not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {rule!r}")
    if rule is None:
        return s
    d = s.norm() if rule == "l2" else s.abs().max()
    return s / d if d > 0 else s


def _check_scope(scope: str) -> None:
    if scope not in ("global", "layerwise"):
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k lowest entries of a 1-D score (stable: ties go to the lower index)."""
    return torch.argsort(score, stable=True)[:k]


# --------------------------------------------------------------------------------------------- unstructured
def select_unstructured(model: nn.Module, scores: dict, ratio: float, scope: str = "global",
                        min_keep: float = 0.01, ignore=(), normalize: str | None = None,
                        prior: dict | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, weight shape, True = kept) for every prunable layer not in `ignore`.

    Removes round(ratio × N) of the N prunable weights with the lowest scores (global: one ranking over all
    layers; layerwise: ratio per layer). Each layer keeps at least max(1, ceil(min_keep × its weights)),
    its highest-scored ones; where that caps the removal the achieved sparsity is lower (see
    `prune_unstructured` info). `prior`: keep-masks of an earlier step; weights it removed stay removed
    (ranked lowest, at least as many removed as before), for iterative pruning to a cumulative ratio.
    """
    ratio = validate_ratio(ratio)
    _check_scope(scope)
    if not 0.0 <= min_keep < 1.0:
        raise ValueError(f"min_keep (unstructured) is a fraction of each layer's weights in [0, 1), got {min_keep!r}")
    layers = validate_scores(model, scores)
    modules = dict(prunable_layers(model))
    ignored = _check_ignore(ignore, modules)
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
        keep = max(1, math.ceil(min_keep * s.numel()))
        protect[n] = keep
        s[torch.argsort(s, descending=True, stable=True)[:keep]] = math.inf  # never removed
        flat[n] = s
    removed: dict[str, torch.Tensor] = {}
    if scope == "global":
        allscores = torch.cat([flat[n] for n in names])
        cap = allscores.numel() - sum(protect.values())
        k = min(max(_round(ratio * allscores.numel()), sum(n_prior.values())), cap)
        drop = torch.zeros(allscores.numel(), dtype=torch.bool)
        drop[_lowest(allscores, k)] = True
        for n, part in zip(names, torch.split(drop, [flat[n].numel() for n in names])):
            removed[n] = part
    else:
        for n in names:
            k = min(max(_round(ratio * flat[n].numel()), n_prior[n]), flat[n].numel() - protect[n])
            drop = torch.zeros(flat[n].numel(), dtype=torch.bool)
            drop[_lowest(flat[n], k)] = True
            removed[n] = drop
    return {n: (~removed[n]).reshape(modules[n].weight.shape) for n in names}
















def _round_up_kept(drop: torch.Tensor, score: torch.Tensor, round_to: int) -> torch.Tensor:
    """`drop` (bool, (units,), True = removed) with its highest-scored removed units restored until the kept
    count is the smallest multiple of round_to >= it, capped at all units (removal order is kept: the
    restored units are the last ones a stable ascending sort of `score` would remove)."""
    kept = drop.numel() - int(drop.sum())
    extra = min(drop.numel(), -(-kept // round_to) * round_to) - kept
    idx = torch.nonzero(drop).flatten()
    idx = idx[torch.argsort(score[idx], stable=True)]
    out = drop.clone()
    out[idx[idx.numel() - extra:]] = False
    return out


def select_structured_groups(model, scores, ratio, scope="global", min_keep=1, ignore=(), normalize="l2",
                       residual="inner", example_input=None, round_to=1):
    """select_structured plus the groups and counts it used: (remove, groups, stats)."""
    ratio = validate_ratio(ratio)
    round_to = validate_round_to(round_to)
    _check_scope(scope)
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
        raise ValueError(f"min_keep (structured) is a number of units per layer, an int >= 1, got {min_keep!r}")
    layers = validate_scores(model, scores)
    modules = dict(prunable_layers(model))
    ignored = _check_ignore(ignore, modules) | {classifier_name(model)}
    groups = [g for g in structured_groups(model, example_input, residual)
              if not ignored & set(g["members"])]
    if not groups:
        raise ValueError("no prunable output units: every layer is the classifier, ignored or a residual stream")
    scored = []
    for g in groups:
        member_scores = [normalized(_get(layers, n, "structured"), normalize) for n in g["members"]]
        s = torch.stack(member_scores).mean(0)  # aggregated group score: mean of normalised member scores
        keep = min(min_keep, g["units"])
        s[torch.argsort(s, descending=True, stable=True)[:keep]] = math.inf  # min_keep best units stay
        scored.append((g, s, keep))
    n_total = sum(g["units"] * len(g["members"]) for g in groups)
    drop: list[torch.Tensor] = []
    if scope == "global":
        allscores = torch.cat([s for _, s, _ in scored])
        width = torch.cat([torch.full((g["units"],), len(g["members"])) for g, _, _ in scored])
        cap = sum((g["units"] - keep) * len(g["members"]) for g, _, keep in scored)
        target = min(_round(ratio * n_total), cap)
        order = torch.argsort(allscores, stable=True)
        cum = torch.cumsum(width[order], 0)
        # take units in score order while the count stays nearest the target (exact when no group is coupled)
        k = int((2 * cum - width[order] <= 2 * target).sum())
        k = min(k, int(torch.isfinite(allscores).sum()))
        mask = torch.zeros(allscores.numel(), dtype=torch.bool)
        mask[order[:k]] = True
        drop = list(torch.split(mask, [g["units"] for g, _, _ in scored]))
    else:
        for g, s, keep in scored:
            k = min(_round(ratio * g["units"]), g["units"] - keep)
            mask = torch.zeros(g["units"], dtype=torch.bool)
            mask[_lowest(s, k)] = True
            drop.append(mask)
    drop = [_round_up_kept(mask, s, round_to) for (_, s, _), mask in zip(scored, drop)]
    remove = {}
    for (g, _, _), mask in zip(scored, drop):
        idx = torch.nonzero(mask).flatten().long()
        for n in g["members"]:
            remove[n] = idx.clone()
    n_removed = sum(len(remove[g["members"][0]]) * len(g["members"]) for g, _, _ in scored)
    stats = {"n_prunable": n_total, "n_removed": n_removed, "ratio_achieved": n_removed / n_total}
    return remove, groups, stats


def select_structured(model: nn.Module, scores: dict, ratio: float, scope: str = "global", min_keep: int = 1,
                      ignore=(), normalize: str | None = "l2", residual: str = "inner",
                      example_input: torch.Tensor | None = None, round_to: int = 1) -> dict[str, torch.Tensor]:
    """Output units to REMOVE, {layer: sorted LongTensor of indices}, for every layer of every prunable group
    (indices may be empty; the classifier, ignored layers and unpruned residual streams are absent).

    Removes round(ratio × N) of the N prunable units (global: one ranking over all groups of scores put on
    a common scale by `normalize`; layerwise: ratio per group). Never the classifier's outputs, nor
    layers in `ignore` (or groups containing them); each group keeps at least min_keep units (its best).
    Then each group's kept count is rounded up to a multiple of `round_to` (capped at its units) by restoring
    its highest-scored removed units, so fewer units than requested may go. Coupled layers share indices; see
    the module docstring for group scores and residual streams.
    """
    return select_structured_groups(model, scores, ratio, scope, min_keep, ignore, normalize, residual,
                              example_input, round_to)[0]
