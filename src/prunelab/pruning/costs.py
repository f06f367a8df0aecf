"""What structured pruning costs, before it is done: the parameters and MACs of a model as functions of the units
kept in each prunable group, counted as the physical removal counts them.

A group's unit is removed from every member layer (its output row, bias entry and the two affine parameters of the
BatchNorm that follows it) and from the inputs of every layer that reads it (torch-pruning's dependency graph says
which layers and how many inputs a unit feeds: 1 for a conv, H×W for a flatten → linear). So a layer with output
fraction o and input fraction i kept costs MACs · o · i and weights · o · i (bias and BN: · o). Exact for
ungrouped convs and linears; the tests hold it to `count_params` / `count_macs` of the physically pruned model.
"""

from __future__ import annotations

import torch
from torch import nn

from prunelab.measure import count_params, layer_macs
from prunelab.models import prunable_layers
from prunelab.models.graph import dependency_graph, following_bn, out_pruning_fn

COSTS = ("params", "macs")


class CostModel:
    """Params and MACs of `model` keeping counts[g] output units of each group g of `groups`
    ([{"members", "units"}], the groups a selection prunes; other layers keep all their units).

    example_input: one batch (N, *in_shape) to trace the coupling and count MACs (for one input).
    `dense[kind]` is the model's own total (params: every parameter, as count_params; macs: Conv2d + Linear, as
    count_macs); `cost(kind, counts)` is the total after removal, `layer_costs(kind, counts)` its per-layer part.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, groups: list[dict]):
        self.groups = groups
        self.layers = dict(prunable_layers(model))
        for n, m in self.layers.items():
            if getattr(m, "groups", 1) != 1:
                raise ValueError(f"cost of pruning layer {n!r}: grouped convolutions (groups={m.groups}) are not "
                                 "counted; prune by units (prune.target: units)")
        self.macs = layer_macs(model, tuple(example_input.shape[1:]))   # {layer: MACs} of the dense model
        self.out_group = {n: i for i, g in enumerate(groups) for n in g["members"]}
        self.inputs: dict[str, list[tuple[int, float]]] = {}           # layer -> [(group, inputs per unit)]
        names = {m: n for n, m in self.layers.items()}
        dg = dependency_graph(model, example_input)
        for i, g in enumerate(groups):
            root = self.layers[g["members"][0]]
            for dep, idx in dg.get_pruning_group(root, out_pruning_fn(root), list(range(g["units"]))):
                n = names.get(dep.target.module)
                if n is not None and dg.is_in_channel_pruning_fn(dep.handler):
                    self.inputs.setdefault(n, []).append((i, len(idx) / g["units"]))
        bns = dict(model.named_modules())
        after = following_bn(model, example_input)
        self.per_unit = {}   # layer -> params that scale with its output fraction only (bias, BN affine)
        for n, m in self.layers.items():
            bias = m.bias.numel() if m.bias is not None else 0
            bn = bns[after[n]] if n in after else None
            self.per_unit[n] = bias + (sum(p.numel() for p in bn.parameters()) if bn is not None else 0)
        self.weights = {n: m.weight.numel() for n, m in self.layers.items()}
        self.dense = {"params": float(count_params(model)), "macs": float(sum(self.macs.values()))}
        # layers whose cost changes when a group's count does: its members and the layers reading it
        self.touched = [sorted(set(g["members"]) | {n for n, ins in self.inputs.items() if any(j == i for j, _ in ins)})
                        for i, g in enumerate(groups)]

    def fractions(self, name: str, counts) -> tuple[float, float]:
        """(kept output fraction, kept input fraction) of layer `name` at `counts`."""
        m = self.layers[name]
        g = self.out_group.get(name)
        out = 1.0 if g is None else counts[g] / self.groups[g]["units"]
        cin = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        kept_in = cin - sum((self.groups[i]["units"] - counts[i]) * per for i, per in self.inputs.get(name, ()))
        return out, kept_in / cin

    def layer_cost(self, kind: str, name: str, counts) -> float:
        """The part of the `kind` cost that layer `name` (and its bias and BN) contributes at `counts`."""
        out, inp = self.fractions(name, counts)
        if kind == "macs":
            return self.macs.get(name, 0) * out * inp
        return self.weights[name] * out * inp + self.per_unit[name] * out

    def removed(self, kind: str, counts) -> float:
        """Cost removed at `counts` (params or MACs; dense minus what is left)."""
        if kind not in COSTS:
            raise ValueError(f"cost kind must be one of {COSTS}, got {kind!r}")
        full = [g["units"] for g in self.groups]
        return sum(self.layer_cost(kind, n, full) - self.layer_cost(kind, n, counts) for n in self.layers)

    def cost(self, kind: str, counts) -> float:
        """Total `kind` cost of the model at `counts`."""
        return self.dense[kind] - self.removed(kind, counts)
