"""Physical structured pruning with torch-pruning, checked against the masked dense model.

`prune_selected` removes a selection (`prunelab.pruning.selection.select_structured_groups`) physically with
torch-pruning's DependencyGraph (built by `prunelab.models.graph.dependency_graph`; it also shrinks the BN after
each layer, the inputs of the layers that read it, residual adds and flatten -> linear), records the new sizes
as data (`architecture`), and only returns once the pruned network reproduces the logits of the masked dense
model. `prunelab.pruning.stage.prune_model` is the pruning stage that uses both.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunelab.measure.deploy import EquivalenceError, logits_difference
from prunelab.models import architecture, prunable_layers
from prunelab.models.graph import dependency_graph, following_bn, out_pruning_fn


@torch.no_grad()
def masked_dense_model(model: nn.Module, remove: dict[str, torch.Tensor],
                       example_input: torch.Tensor | None = None) -> nn.Module:
    """Reference for structured pruning: a deep copy where each removed unit's weights and bias, and the
    weight and bias of the BN that follows it, are zero, so the unit outputs exactly 0 (eval mode) and,
    after a ReLU-type activation, contributes nothing downstream. BNs are found by `following_bn`.
    """
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    bns = following_bn(ref, example_input)
    for name, idx in remove.items():
        if name not in modules or not isinstance(modules[name], (nn.Conv2d, nn.Linear)):
            raise ValueError(f"remove names {name!r}, which is not a Conv2d/Linear layer of the model")
        idx = torch.as_tensor(idx, dtype=torch.long)
        if len(idx) == 0:
            continue
        m = modules[name]
        if int(idx.max()) >= m.weight.shape[0] or int(idx.min()) < 0:
            raise ValueError(f"remove[{name!r}] has indices outside 0..{m.weight.shape[0] - 1}")
        m.weight[idx] = 0
        if m.bias is not None:
            m.bias[idx] = 0
        if name in bns:
            bn = modules[bns[name]]
            bn.weight[idx] = 0
            bn.bias[idx] = 0
    return ref


def check_equivalence(pruned: nn.Module, reference: nn.Module, x: torch.Tensor, tol: float = 1e-4) -> float:
    """Max logit difference; raises EquivalenceError if it exceeds tol × max(1, max |reference logit|)."""
    diff, scale = logits_difference(pruned, reference, x)
    if not diff <= tol * max(1.0, scale):
        raise EquivalenceError(f"physically pruned model differs from the masked dense model: max |Δlogit| = "
                               f"{diff:.3g} (tolerance {tol:g} × max(1, {scale:.3g}))")
    return diff


def remove_units(model: nn.Module, remove: dict[str, torch.Tensor], groups: list[dict],
                 example_input: torch.Tensor) -> nn.Module:
    """Physically remove, IN PLACE, the output units `remove[layer]` of each group's members.

    One torch-pruning group per coupled group (rooted at its first member); the group's other members
    must be exactly the coupled layers torch-pruning finds, else ValueError.
    """
    dg = dependency_graph(model, example_input)
    modules = dict(prunable_layers(model))
    names = {m: n for n, m in modules.items()}
    for g in groups:
        root = g["members"][0]
        idx = remove.get(root)
        if idx is None or len(idx) == 0:
            continue
        for n in g["members"][1:]:
            if not torch.equal(remove[n], idx):
                raise ValueError(f"coupled layers {root!r} and {n!r} must lose the same units")
        m = modules[root]
        group = dg.get_pruning_group(m, out_pruning_fn(m), sorted(int(i) for i in idx))
        found = {names[d.target.module] for d, _ in group
                 if dg.is_out_channel_pruning_fn(d.handler) and d.target.module in names}
        if found != set(g["members"]):
            raise ValueError(f"torch-pruning couples {sorted(found)} but the selection grouped {g['members']}")
        group.prune()
    return model


def prune_selected(model: nn.Module, arch: dict, remove: dict[str, torch.Tensor], groups: list[dict],
                   example_input: torch.Tensor, tol: float = 1e-4):
    """Physically remove a selection (`select_structured_groups`: remove, groups) from a COPY of `model`
    (the input is untouched) → (pruned, new_arch, info).

    example_input: one input batch (N, C, H, W) used for tracing and for the equivalence check. new_arch =
    architecture(pruned, arch): build_model(new_arch) + load_state_dict(pruned.state_dict(), strict=True)
    rebuilds it. info: layer_kept {layer: kept fraction of its output units, every Conv/Linear}, removed
    {layer: [indices]}, groups [[coupled layer names]], max_logit_diff.
    Raises EquivalenceError if the pruned logits differ from the masked dense model's (eval mode).
    """
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example_input must be a tensor batch (N, *in_shape), got {type(example_input).__name__}")
    reference = masked_dense_model(model, remove, example_input)
    before = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    pruned = remove_units(copy.deepcopy(model), remove, groups, example_input)
    diff = check_equivalence(pruned, reference, example_input, tol)
    after = {n: m.weight.shape[0] for n, m in prunable_layers(pruned)}
    info = {"layer_kept": {n: after[n] / before[n] for n in before},
            "removed": {n: [int(i) for i in idx] for n, idx in remove.items()},
            "groups": [g["members"] for g in groups], "max_logit_diff": diff}
    return pruned, architecture(pruned, arch), info

