"""screening: ANOVA F-statistic of unit activations across classes, blended with weight magnitude
(Wang et al. 2025, arXiv 2502.07189; the project's documented reconstruction, docs/methods.md).

structured score of unit u     = λ·F_u / max_layer F + (1−λ)·‖w_u‖₁ / max_layer ‖w‖₁
unstructured blend of w_ij     = λ·F_i / max_layer F_in + (1−λ)·|w_ij| / max_layer |w|
F_u screens the layer's output units (activations after BN + nonlinearity; channels: spatial mean),
F_i its input units (Linear: input features; Conv2d: input channels; first layer: pixels / channels).

The unstructured score is the blend's order within the layer, carried onto the layer's own |w| values
(the k-th lowest blend gets the k-th lowest |w|): ranked layer-wise it is the blend's ranking, and ranked
globally each layer loses exactly as many weights as magnitude pruning takes from it, so λ only decides
which weights within a layer go. λ = 0 is magnitude pruning (the same weights, in either scope); λ = 1 is
pure screening within each layer (ties of one input unit broken by |w|). Without this, the per-layer [0, 1]
scaling made a global ranking follow the shape of each layer's F distribution: on the Fashion-MNIST FNN at
97 % the classifier kept 16 % of its weights (magnitude: 63 %) and the 300→100 layer 1.9 % (magnitude 10 %).
The structured ‖w‖₁ matches magnitude's structured score; pruning normalises structured scores per layer.
Because F_i is shared by every weight reading input i, a λ > 0 ranks whole input units first: at high
sparsity unstructured screening removes inputs as a whole (the method's own behaviour, kept).

`allocation: anova` takes the layer budgets from the screening statistic instead of from magnitude: every
layer's weights are ranked together by the F of their input unit (ties by |w|), and each layer keeps those global
ranks, re-assigned in the order of its blend; so a global selection removes from each layer as many weights as
pure screening would, and the blend orders them within the layer. F is comparable across layers because its
degrees of freedom (K − 1, N − K) are the same in every layer (the same calibration samples and classes), so the
F ranking is the p-value ranking (p itself underflows to 0 for most units of a trained network).
"""

from __future__ import annotations

import math

import torch

from prunelab.methods import register_method
from prunelab.models import prunable_layers

CONSTANT_RTOL = 1e-10   # total sum of squares below this × Σz²: the unit is constant, F = 0


def anova_f(count: torch.Tensor, sums: torch.Tensor, sqsums: torch.Tensor) -> torch.Tensor:
    """One-way ANOVA F per unit from per-class moments (count K, Σz K×U, Σz² K×U) → U float64.

    Equals sklearn.feature_selection.f_classif on the raw values; classes without samples are left out;
    a constant unit gets F = 0; a unit with no within-class spread (but between-class spread) gets +inf.
    """
    count, sums, sqsums = count.double(), sums.double(), sqsums.double()
    present = count > 0
    n, s, q = count[present], sums[present], sqsums[present]
    k, total = int(n.numel()), float(n.sum())
    if k < 2:
        raise ValueError(f"screening: the ANOVA F needs samples of at least two classes, got {k} class(es)")
    if total <= k:
        raise ValueError(f"screening: the ANOVA F needs more calibration samples ({int(total)}) than classes "
                         f"present ({k})")
    total_s, total_q = s.sum(0), q.sum(0)
    sst = total_q - total_s.square() / total
    ssb = (s.square() / n[:, None]).sum(0) - total_s.square() / total
    ssw = sst - ssb
    f = (ssb / (k - 1)) / (ssw / (total - k))
    constant = sst <= CONSTANT_RTOL * total_q
    separated = ~constant & (ssw <= CONSTANT_RTOL * sst)
    f = torch.where(separated, math.inf, f)
    return torch.where(constant, 0.0, f)


def scaled(v: torch.Tensor) -> torch.Tensor:
    """v / max v for v ≥ 0 (all zero → zeros; +inf entries → 1, the rest 0: the limit of v / max v)."""
    if torch.isinf(v).any():
        return torch.isinf(v).double()
    top = v.max()
    return v / top if top > 0 else torch.zeros_like(v)


def onto_magnitudes(blend: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """The values of `magnitude`, re-assigned in the order of `blend` (ties broken by magnitude): the k-th
    lowest blend gets the k-th lowest magnitude. Same shape as `blend`."""
    flat_m = magnitude.flatten()
    by_m = torch.argsort(flat_m, stable=True)
    order = by_m[torch.argsort(blend.flatten()[by_m], stable=True)]
    out = torch.empty_like(flat_m)
    out[order] = torch.sort(flat_m).values
    return out.view_as(blend)


def global_ranks(keys: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{layer: float64 tensor of each weight's rank (0 = first to go)} when every layer's weights are ranked
    together, ascending by a primary key, ties by a secondary one (both weight-shaped float64)."""
    names = list(keys)
    primary = torch.cat([keys[n][0].flatten() for n in names])
    secondary = torch.cat([keys[n][1].flatten() for n in names])
    by_second = torch.argsort(secondary, stable=True)
    order = by_second[torch.argsort(primary[by_second], stable=True)]
    ranks = torch.empty(primary.numel(), dtype=torch.float64)
    ranks[order] = torch.arange(primary.numel(), dtype=torch.float64)
    parts = torch.split(ranks, [keys[n][0].numel() for n in names])
    return {n: p.view_as(keys[n][0]) for n, p in zip(names, parts)}


@register_method("screening", needs={"activations", "input_activations"}, unused={"structured": ("allocation",)})
def screening_scores(model, stats, cfg) -> dict:
    """Blend of screened F and weight magnitude per layer; see the module docstring."""
    lam = float(cfg["lambda"])
    out, allocation = {}, {}
    for name, m in prunable_layers(model):
        entry = stats["layers"][name]
        w = m.weight.detach().double().cpu()
        if getattr(m, "groups", 1) != 1:
            raise ValueError(f"method 'screening' cannot score layer '{name}': grouped Conv2d (groups={m.groups})")
        f_out = anova_f(entry["count"], entry["act_sum"], entry["act_sqsum"])
        f_in = anova_f(entry["count"], entry["in_sum"], entry["in_sqsum"])
        if f_in.numel() != w.shape[1]:
            raise ValueError(f"screening: layer '{name}' has {w.shape[1]} input units but its statistics have "
                             f"{f_in.numel()}; rerun snakemake --forcerun collect_stats")
        f_in = f_in.reshape((1, -1) + (1,) * (w.dim() - 2))
        blend = lam * scaled(f_in).expand_as(w) + (1 - lam) * scaled(w.abs())
        allocation[name] = (f_in.expand_as(w), w.abs())
        out[name] = {
            "unstructured": (blend, w.abs()),
            "structured": lam * scaled(f_out) + (1 - lam) * scaled(w.abs().flatten(1).sum(1)),
        }
    # each layer keeps the multiset of values that decides its budget, re-assigned in the order of its blend
    budget = global_ranks(allocation) if cfg["allocation"] == "anova" else {n: m for n, (_, m) in allocation.items()}
    for name, entry in out.items():
        entry["unstructured"] = onto_magnitudes(entry["unstructured"][0], budget[name])
    return out
