"""lamp: layer-adaptive magnitude pruning score (Lee et al. 2021, "Layer-adaptive Sparsity for the
Magnitude-based Pruning", ICLR).

score(u) = w_u² / Σ_{v in the layer: |w_v| ≥ |w_u|} w_v², per weight (the layer's weights flattened). The
largest weight of each layer scores 1, so one global ranking gives layer-adaptive sparsities (the paper's use:
prune.scope = global). Ties: every weight equal in magnitude is in the denominator (the paper's sorted-index
form puts ties in an arbitrary order; torch-pruning's `_lamp` follows its sort order); all-zero suffixes score 0.
Torch-Pruning's LAMPImportance applies the same transform to channel norms (structured); PruneLab's lamp is
the paper's unstructured score. Unstructured only.
"""

from __future__ import annotations

import torch

from prunelab.methods import register_method
from prunelab.models import prunable_layers


def lamp_layer(w: torch.Tensor) -> torch.Tensor:
    """LAMP scores of one layer's weights (any shape) → same shape, float64."""
    sq = w.detach().double().flatten().square()
    s, order = torch.sort(sq)
    suffix = s.flip(0).cumsum(0).flip(0)                     # suffix[k] = Σ_{j ≥ k} s_j
    first = torch.searchsorted(s, s)                         # first index of each value: ties in the denominator
    den = suffix[first]
    score = torch.where(den > 0, s / torch.where(den > 0, den, 1.0), 0.0)
    return torch.empty_like(sq).scatter_(0, order, score).reshape(w.shape)


@register_method("lamp", needs=set(), granularities=("unstructured",))
def lamp_scores(model, stats, cfg) -> dict:
    """Unstructured LAMP score per weight (weight shape, float64)."""
    return {name: {"unstructured": lamp_layer(m.weight), "structured": None} for name, m in prunable_layers(model)}
