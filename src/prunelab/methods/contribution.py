"""contribution: distribution of relative weight contributions (Hussien et al. 2024, arXiv 2410.16151).

r_ij(x) = |w_ij a_i(x)| / (Σ_i' |w_i'j a_i'(x)| + ε) per sample and (conv) output position; μ = E[r],
σ = Std[r] (population) over samples × positions. Unstructured score μ + κσ (a weight is pruned only when
its contribution is consistently small); structured score Σ_i μ_ij, the unit's incoming μ.
"""

from __future__ import annotations

import math

import torch

from prunelab.methods import register_method
from prunelab.stats import prunable_layers


def contribution_moments(entry: dict, with_std: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ and σ (weight shape, float64) from one layer's statistics entry."""
    positions = float(entry["contrib_positions"])
    mean = entry["contrib_r_sum"] / positions
    if not with_std:
        return mean, None
    return mean, (entry["contrib_r2_sum"] / positions - mean.square()).clamp(min=0).sqrt()


def _kappa(cfg: dict) -> float:
    kappa = cfg["kappa"]
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa):
        raise ValueError(f"method 'contribution': config 'kappa' must be a finite number, got {kappa!r}")
    return float(kappa)


def _needs(cfg: dict) -> set[str]:
    return {"contribution_mean"} | ({"contribution_sq"} if _kappa(cfg) != 0 else set())


@register_method("contribution", needs={"contribution_mean", "contribution_sq"}, defaults={"kappa": 0.0},
                 needs_for=_needs)
def contribution_scores(model, stats, cfg) -> dict:
    """Unstructured μ + κσ (weight shape); structured Σ over each unit's incoming μ (out_units)."""
    kappa = _kappa(cfg)
    out = {}
    for name, _ in prunable_layers(model):
        mean, std = contribution_moments(stats["layers"][name], with_std=kappa != 0)
        out[name] = {"unstructured": mean if std is None else mean + kappa * std,
                     "structured": mean.flatten(1).sum(1)}
    return out
