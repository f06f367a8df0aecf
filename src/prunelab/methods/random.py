"""random: seeded uniform scores in [0, 1), a control (one generator, layers in prunable order)."""

from __future__ import annotations

import torch

from prunelab.methods import register_method
from prunelab.models import prunable_layers


@register_method("random", needs=set())
def random_scores(model, stats, cfg) -> dict:
    """Unstructured: U[0, 1) per weight; structured: U[0, 1) per output unit. Same seed → same scores."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    out = {}
    for name, m in prunable_layers(model):
        unstructured = torch.rand(m.weight.shape, generator=gen, dtype=torch.float64)
        out[name] = {"unstructured": unstructured,
                     "structured": torch.rand(m.weight.shape[0], generator=gen, dtype=torch.float64)}
    return out
