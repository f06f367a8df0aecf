"""taylor: first-order Taylor importance (Molchanov et al. 2019), cross-entropy of the true labels.

Unstructured: |w ⊙ Σ_x ∂L_x/∂w|, the weight times the gradient summed over the calibration set (as
torch-pruning's TaylorImportance accumulates it); structured: Σ_x (Σ_p a_u(x, p) ∂L_x/∂a_u(x, p))², the
squared per-sample Taylor term of the unit's activation a (after BN and nonlinearity; p: spatial positions).
"""

from __future__ import annotations

from prunelab.methods import register_method
from prunelab.models import prunable_layers


@register_method("taylor", needs={"taylor"})
def taylor_scores(model, stats, cfg) -> dict:
    """Scores from stats "grad_sum" (weight shape) and "taylor_unit_sq_sum" (out_units)."""
    out = {}
    for name, m in prunable_layers(model):
        entry = stats["layers"][name]
        w = m.weight.detach().double().cpu()
        out[name] = {"unstructured": (w * entry["grad_sum"]).abs(),
                     "structured": entry["taylor_unit_sq_sum"].clone()}
    return out
