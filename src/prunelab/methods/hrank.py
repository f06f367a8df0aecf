"""hrank: mean rank of a unit's feature maps over the calibration set (Lin et al. 2020, "HRank: Filter Pruning
using High-Rank Feature Map", CVPR). Structured only.

score(u) = (1/N) Σ_x rank(A_u(x)), A_u(x) the H×W map of unit u's activation (after the BatchNorm and
nonlinearity that follow the layer, as the paper reads ReLU outputs) for calibration sample x; rank by
torch.linalg.matrix_rank in the model's dtype with numpy's tolerance (statistic "feature_rank"). Low-rank maps
carry less information: pruned first. Linear layers (the classifier, hidden Linears of a conv model) have 1×1
maps: the literal definition gives the fraction of samples with a nonzero activation, which is what they get.
A model without any Conv2d is refused (every score would be that degenerate firing rate).
"""

from __future__ import annotations

from torch import nn

from prunelab.methods import register_method
from prunelab.models import prunable_layers


def hrank_inapplicable(model: nn.Module) -> str | None:
    """Why HRank cannot score `model` (no Conv2d: no feature maps), or None."""
    if not any(isinstance(m, nn.Conv2d) for _, m in prunable_layers(model)):
        return (f"method 'hrank' ranks H×W feature maps; {type(model).__name__} has no Conv2d layer (its Linear "
                "units have 1×1 maps)")
    return None


@register_method("hrank", needs={"feature_rank"}, granularities=("structured",),
                 inapplicable=hrank_inapplicable)
def hrank_scores(model, stats, cfg) -> dict:
    """Structured mean feature-map rank per unit (out_units, float64)."""
    n = stats["num_samples"]
    return {name: {"unstructured": None, "structured": stats["layers"][name]["rank_sum"].double() / n}
            for name, _ in prunable_layers(model)}
