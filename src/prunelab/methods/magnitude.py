"""magnitude: |w| (Han et al. 2015); structured: L1 norm of the unit's incoming weights (Li et al. 2017)."""

from __future__ import annotations

from prunelab.methods import register_method
from prunelab.models import prunable_layers


@register_method("magnitude", needs=set())
def magnitude_scores(model, stats, cfg) -> dict:
    """Unstructured |w| (weight shape); structured Σ|w| over each output unit's row / filter (out_units)."""
    out = {}
    for name, m in prunable_layers(model):
        w = m.weight.detach().double().abs()
        out[name] = {"unstructured": w, "structured": w.flatten(1).sum(1)}
    return out
