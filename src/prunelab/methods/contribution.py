"""contribution: distribution of relative weight contributions (Hussien et al. 2024, arXiv 2410.16151).

r_ij(x) = |w_ij a_i(x)| / (Σ_i' |w_i'j a_i'(x)| + ε) per sample and (conv) output position; μ = E[r],
σ = Std[r] (population) over samples × positions (statistics "contribution_mean" / "contribution_sq").

Unstructured score: μ_ij + κσ_ij, so a weight is pruned only when its contribution is consistently small.

Structured score: the unit's OUTGOING relative contributions. For unit u of layer L,

    s_u = Σ_{c ∈ consumers(L)} (1 / J_c) Σ_{j=1..J_c} Σ_{i ∈ In_c(u)} μ^c_ij

where a consumer c is a Conv2d / Linear that reads L's output (J_c output units), and In_c(u) are c's input
positions that carry unit u: for a Conv2d consumer the kernel positions (kh, kw) of input channel u; for a
Linear consumer behind a Flatten of a C×H×W map (in_features = C·H·W, channel-major) the H·W features of
channel u; for a Linear consumer of a Linear layer the single feature u. Each term is the average share of
c's output units' input that comes from u (Σ_u of it is ≈ 1 when L is c's only producer), i.e. the μ that
unstructured contribution pruning would remove with u's outgoing weights, aggregated per source unit: a
unit is pruned only when its contribution downstream is consistently small. A dead unit (activation 0) and
a unit whose outgoing weights are all zero both score 0.

Consumers are found by tracing the model with torch.fx (no input needed): from L's output through
BatchNorm, nonlinearities, Dropout, Identity, max / average / adaptive pools, Flatten (and torch.flatten,
x.view(B, -1), spatial mean), residual additions (`Add`, `+`) and option-A shortcuts (`ShortcutA`, which
moves channel u to u + (out − in)//2), up to the first Conv2d / Linear on every path. A residual add
does not stop the walk, so a unit of a residual stream sums over every consumer reading the stream
downstream of L (later blocks' convs, option-B projection convs, the classifier). Other ops (torch.cat,
attention, ...) raise, naming the op. A layer without consumer (the classifier, whose outputs are never
pruned) keeps the incoming sum Σ_i μ_ui.

Why not the incoming sum (an earlier design had "sum of the unit's incoming μ"): Σ_i r_ij(x) = D/(D + ε) with
D = Σ_i |w_ij a_i(x)|, which is ≈ 1 whenever D > 0. The incoming sum is therefore ≈ 1 for every unit that
receives any non-zero input (all of conv2 of the CNN scored 1.0000), cannot rank units, and degenerates to
an index-order pruner (ties go to the lower index).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from prunelab.methods import register_method
from prunelab.models import Add, ShortcutA, prunable_layers


def contribution_moments(entry: dict, with_std: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ and σ (weight shape, float64) from one layer's statistics entry."""
    positions = float(entry["contrib_positions"])
    mean = entry["contrib_r_sum"] / positions
    if not with_std:
        return mean, None
    return mean, (entry["contrib_r2_sum"] / positions - mean.square()).clamp(min=0).sqrt()


# ------------------------------------------------------------------------------------------ consumer tracing
@dataclass(frozen=True)
class Consumer:
    """A layer reading another layer's units: unit u sits at input channel channels[u] of `name`.

    features_per_channel: for a Linear consumer, how many of its in-features each channel owns (H·W behind a
    Flatten of a C×H×W map, 1 behind a Linear or a global pool); None for a Conv2d consumer.
    """

    name: str
    channels: tuple[int, ...]
    features_per_channel: int | None = None


_ELEMENTWISE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                        nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                        nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus,
                        nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.relu, torch.relu_, F.relu, F.relu6,
                          F.leaky_relu, F.gelu, F.silu, F.elu, F.hardswish, F.hardtanh, torch.tanh, torch.sigmoid,
                          F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ELEMENTWISE_METHODS = {"add", "add_", "relu", "relu_", "contiguous", "clone", "float", "double", "to"}
_NO_DATA_METHODS = {"size", "dim", "numel"}
_SPATIAL_DIMS = ({2, 3}, {-1, -2})


@dataclass(frozen=True)
class _State:
    node: object                 # torch.fx Node holding the tensor
    channels: tuple[int, ...]    # where each of the layer's units sits along dim 1
    width: int                   # channels of the tensor (dim 1 before any flatten)
    spatial: bool                # the tensor is (or was flattened from) B×C×H×W
    flat: bool                   # a spatial tensor flattened to B×(C·H·W) (or spatially reduced to B×C)


class _Tracer(fx.Tracer):
    """torch.fx tracer keeping prunelab's Add / ShortcutA as single calls (ShortcutA branches on shapes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (Add, ShortcutA)) or super().is_leaf_module(m, qualname)


def _is_flatten(node, modules) -> bool:
    """torch.flatten(x, 1), x.flatten(1), nn.Flatten(), x.view/reshape(B, -1)."""
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if node.target in (torch.flatten, "flatten"):
        return start == 1 and end == -1
    if node.target in ("view", "reshape") and len(node.args) > 1:
        shape = node.args[1:] if len(node.args) > 2 else node.args[1]
        return isinstance(shape, (tuple, list)) and len(shape) == 2 and shape[1] == -1
    return False


def _is_spatial_mean(node) -> bool:
    if node.target not in ("mean", torch.mean, "sum", torch.sum) or node.kwargs.get("keepdim", False):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = {dims} if isinstance(dims, int) else set(dims or ())
    return dims in _SPATIAL_DIMS


def _describe(node, modules) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[node.target]).__name__})"
    return f"{node.op} {getattr(node.target, '__name__', node.target)!r}"


def _step(state: _State, user, modules, layers: dict, origin: str) -> tuple[list[_State], Consumer | None]:
    """Follow one reader of `state`'s tensor: new states to walk on, or the consumer it is."""
    def unsupported(why: str):
        return ValueError(f"contribution (structured): cannot follow the output of layer '{origin}' through "
                          f"{_describe(user, modules)}: {why}. Supported between a layer and its consumers: "
                          "BatchNorm, nonlinearities, Dropout, Identity, pools, Flatten, residual adds, "
                          "ShortcutA")

    def moved(**changes) -> list[_State]:
        return [replace(state, node=user, **changes)]

    if user.op == "output":
        return [], None
    if user.op == "call_module":
        m = modules[user.target]
        if user.target in layers:
            if isinstance(m, nn.Conv2d):
                if state.flat or not state.spatial or m.in_channels != state.width:
                    raise unsupported(f"a Conv2d with {m.in_channels} input channels reads a tensor of "
                                      f"{state.width} {'channels' if state.spatial else 'features'}")
                return [], Consumer(user.target, state.channels)
            if state.spatial and not state.flat:
                raise unsupported("a Linear applied to a B×C×H×W map (not flattened)")
            if m.in_features % state.width or not state.flat and m.in_features != state.width:
                raise unsupported(f"in_features {m.in_features} does not match the tensor's {state.width} "
                                  f"{'channels' if state.flat else 'features'}")
            return [], Consumer(user.target, state.channels, m.in_features // state.width)
        if isinstance(m, _ELEMENTWISE_MODULES + (Add,)):
            return moved(), None
        if isinstance(m, ShortcutA):
            if m.in_channels != state.width or state.flat:
                raise unsupported(f"it expects {m.in_channels} channels, the tensor has {state.width}")
            shift = (m.out_channels - m.in_channels) // 2
            return moved(channels=tuple(c + shift for c in state.channels), width=m.out_channels), None
        if _is_flatten(user, modules):
            return moved(flat=state.spatial), None
        raise unsupported("unsupported module")
    if user.op in ("call_function", "call_method"):
        if user.target in _NO_DATA_METHODS or user.target is getattr:
            return [], None
        if user.target in _ELEMENTWISE_FUNCTIONS or user.target in _ELEMENTWISE_METHODS:
            return moved(), None
        if _is_flatten(user, modules):
            return moved(flat=state.spatial), None
        if state.spatial and not state.flat and _is_spatial_mean(user):
            return moved(flat=True), None
        raise unsupported("unsupported operation")
    raise unsupported(f"unexpected graph node kind {user.op!r}")


def downstream_consumers(model: nn.Module) -> dict[str, list[Consumer]]:
    """For every prunable layer: the Conv2d / Linear layers that read its units (see module docstring).

    Traced symbolically with torch.fx (no input). An empty list: the layer's output is not read by any
    layer (the classifier).
    """
    layers = dict(prunable_layers(model))
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"contribution (structured): torch.fx cannot trace {type(model).__name__} to find which "
                         f"layers read each unit ({type(exc).__name__}: {exc})") from exc
    modules = dict(model.named_modules())
    nodes: dict[str, list] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in layers:
            nodes.setdefault(node.target, []).append(node)
    out = {}
    for name, layer in layers.items():
        if len(nodes.get(name, ())) != 1:
            raise ValueError(f"contribution (structured): layer '{name}' is called {len(nodes.get(name, ()))} "
                             "times in one forward; need exactly one call")
        units = layer.weight.shape[0]
        start = _State(nodes[name][0], tuple(range(units)), units, isinstance(layer, nn.Conv2d), False)
        todo, seen, found = [start], {start}, []
        while todo:
            state = todo.pop(0)
            for user in state.node.users:
                nxt, consumer = _step(state, user, modules, layers, name)
                if consumer is not None and consumer not in found:
                    found.append(consumer)
                for s in nxt:
                    if s not in seen:
                        seen.add(s)
                        todo.append(s)
        out[name] = found
    return out


def outgoing_scores(model: nn.Module, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Structured scores {layer: U float64} from every layer's μ ({layer: weight shape}): the unit's outgoing
    μ over its consumers (module docstring); the incoming Σ_i μ_ui for a layer without consumer."""
    out = {}
    for name, consumers in downstream_consumers(model).items():
        if not consumers:
            out[name] = means[name].flatten(1).sum(1)
            continue
        score = torch.zeros(len(consumers[0].channels), dtype=torch.float64)
        for c in consumers:
            mu = means[c.name]
            per_input = mu.sum(0)                          # Σ_j: in_channels×kh×kw, or in_features
            if c.features_per_channel is None:
                per_channel = per_input.flatten(1).sum(1)
            else:                                          # channel-major: channel u owns a block of features
                per_channel = per_input.reshape(-1, c.features_per_channel).sum(1)
            score += per_channel[list(c.channels)].to(torch.float64) / mu.shape[0]
        out[name] = score
    return out


# ------------------------------------------------------------------------------------------ the method
def _kappa(cfg: dict) -> float:
    kappa = cfg["kappa"]
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa):
        raise ValueError(f"method 'contribution': config 'kappa' must be a finite number, got {kappa!r}")
    return float(kappa)


def _needs(cfg: dict) -> set[str]:
    return {"contribution_mean"} | ({"contribution_sq"} if _kappa(cfg) != 0 else set())


@register_method("contribution", needs={"contribution_mean", "contribution_sq"},
                 needs_for=_needs, unused={"structured": ("kappa",)})
def contribution_scores(model, stats, cfg) -> dict:
    """Unstructured μ + κσ (weight shape); structured: the unit's outgoing μ (see module docstring)."""
    kappa = _kappa(cfg)
    moments = {name: contribution_moments(stats["layers"][name], with_std=kappa != 0)
               for name, _ in prunable_layers(model)}
    structured = outgoing_scores(model, {name: mean for name, (mean, _) in moments.items()})
    return {name: {"unstructured": mean if std is None else mean + kappa * std, "structured": structured[name]}
            for name, (mean, std) in moments.items()}
