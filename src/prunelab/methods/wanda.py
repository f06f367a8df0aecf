"""wanda: |w_ij| · ‖a_i‖₂ (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models").

‖a_i‖₂ = sqrt(Σ_x Σ_p a_i(x, p)²): the L2 norm of the layer's input unit i over the calibration set (statistic
"input_sqnorm"; Linear: input feature i; Conv2d: input channel i, over samples and spatial positions, so every
w[o, i, kh, kw] gets channel i's norm). For a Linear this equals Σ_k in_sqsum; for a Conv2d it does not
(in_sqsum holds the spatial MEAN's square). Unstructured only.

Comparison group: the paper ranks the weights of each output row (every row loses the same fraction). PruneLab
ranks per layer (prune.scope = layerwise: all weights of the layer compete, no per-row quota) or over all
layers (global: the score's scale then includes each layer's input norm; the paper's score, ranked globally).
"""

from __future__ import annotations

from prunelab.methods import register_method
from prunelab.models import prunable_layers


@register_method("wanda", needs={"input_sqnorm"}, granularities=("unstructured",))
def wanda_scores(model, stats, cfg) -> dict:
    """Unstructured |w_ij| · ‖a_i‖₂ (weight shape, float64) per layer."""
    out = {}
    for name, m in prunable_layers(model):
        w = m.weight.detach().double().cpu()
        norm = stats["layers"][name]["input_sqnorm"].double().sqrt()
        if norm.numel() != w.shape[1]:
            raise ValueError(f"wanda: layer '{name}' has {w.shape[1]} input units but its statistics have "
                             f"{norm.numel()}; rerun snakemake --forcerun collect_stats")
        out[name] = {"unstructured": w.abs() * norm.reshape((1, -1) + (1,) * (w.dim() - 2)), "structured": None}
    return out
