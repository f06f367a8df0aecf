"""fpgm: filter pruning via geometric median (He et al. 2019, CVPR). Structured only.

A unit's filter F_u is its flattened incoming weights (Conv2d: C×kh×kw; Linear: the weight row). The score is
its distance to the layer's geometric median GM = argmin_y Σ_u ‖F_u − y‖₂ (center: median, Weiszfeld's
iteration): filters near the GM are the ones the others can represent, pruned first — the criterion as the
paper states it (Eq. 3–6). center: sum is the paper's relaxation that its code and Torch-Pruning run, the
summed distance to all other filters Σ_v ‖F_u − F_v‖₂. Torch-Pruning's FPGMImportance measures distances
between |F|^p (elementwise magnitudes, p = 2 by default), not between the filters; PruneLab follows the paper
(signed weights), and equals Torch-Pruning (p = 1) where the weights are non-negative (tests/test_weight_criteria.py).
"""

from __future__ import annotations

import torch

from prunelab.methods import register_method
from prunelab.models import prunable_layers

CENTERS = ("median", "sum")
WEISZFELD_ITERS = 1000
WEISZFELD_RTOL = 1e-12


def geometric_median(points: torch.Tensor) -> torch.Tensor:
    """argmin_y Σ_i ‖p_i − y‖₂ of n×d points (float64): Weiszfeld's iteration (Vardi–Zhang's step at a data
    point) to relative change WEISZFELD_RTOL, then the data point nearest the result if it meets the optimality
    condition (a median at a data point is only approached, never reached, by the iteration)."""
    p = points.double()
    y = p.mean(0)
    scale = float(p.abs().max()) or 1.0
    for _ in range(WEISZFELD_ITERS):
        d = (p - y).norm(dim=1)
        at = d <= 1e-15 * scale
        if at.all():                                       # every point at y
            return y
        w = 1.0 / d[~at]
        t = (w[:, None] * p[~at]).sum(0) / w.sum()
        if at.any():                                       # y is a data point: move only if that lowers the sum
            r = ((p[~at] - y) * w[:, None]).sum(0).norm()
            eta = float(at.sum())
            t = y if r <= eta else (1 - eta / r) * t + min(1.0, eta / r) * y
        step = float((t - y).norm())
        y = t
        if step <= WEISZFELD_RTOL * scale:
            break
    k = int((p - y).norm(dim=1).argmin())             # Weiszfeld only creeps towards a data-point minimum:
    d = (p - p[k]).norm(dim=1)                         # p_k is the median iff ‖Σ_{i≠k} unit(p_i − p_k)‖ ≤ 1
    others = d > 0
    pull = ((p[others] - p[k]) / d[others, None]).sum(0).norm()
    return p[k].clone() if float(pull) <= float((~others).sum()) else y


def fpgm_layer(w: torch.Tensor, center: str) -> torch.Tensor:
    """Structured FPGM score of one layer (weight out×…) → out, float64."""
    f = w.detach().double().flatten(1)
    if center == "median":
        return (f - geometric_median(f)).norm(dim=1)
    return torch.cdist(f, f).sum(1)


@register_method("fpgm", needs=set(), granularities=("structured",))
def fpgm_scores(model, stats, cfg) -> dict:
    """Structured distance to the geometric median (or summed distance to the other filters) per unit."""
    return {name: {"unstructured": None, "structured": fpgm_layer(m.weight.cpu(), cfg["center"])}
            for name, m in prunable_layers(model)}
