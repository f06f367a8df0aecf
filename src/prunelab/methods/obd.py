"""obd: Optimal Brain Damage saliency with the diagonal empirical Fisher as the Hessian (LeCun et al. 1990;
Torch-Pruning's HessianImportance, the OBD-style group criterion).

unstructured: s_ij = ½ · F_ij · w_ij², F = (1/N) Σ_x (∂L_x/∂w)² the mean squared per-sample gradient of the
cross-entropy of the true label (exact per sample, statistic "fisher"; the empirical Fisher, which equals the
Gauss–Newton diagonal in expectation, stands in for OBD's diagonal Hessian).
structured: Σ of s over the unit's incoming weights (Conv2d filter / Linear row). Torch-Pruning's
HessianImportance scores a unit by Σ F w² over the same weights (no ½: the same ranking) and, in a group,
averages it with the coupled layers' terms (BN, next layer's inputs); PruneLab scores the unit's own weights.
(Torch-Pruning 1.6.0's HessianImportance.accumulate_grad keeps only the last sample's g², so the comparison in
tests/test_calibration_criteria.py fills its accumulator with per-sample sums.)
"""

from __future__ import annotations

from prunelab.methods import register_method
from prunelab.models import prunable_layers


@register_method("obd", needs={"fisher"})
def obd_scores(model, stats, cfg) -> dict:
    """Unstructured ½·F·w² (weight shape); structured its sum over each unit's incoming weights (out_units)."""
    n = stats["num_samples"]
    out = {}
    for name, m in prunable_layers(model):
        w = m.weight.detach().double().cpu()
        s = 0.5 * stats["layers"][name]["fisher_sum"] / n * w.square()
        out[name] = {"unstructured": s, "structured": s.flatten(1).sum(1)}
    return out
