"""frs: feature relevance score by LRP-αβ (Aketi et al. 2020, arXiv 2002.09958). Structured only.

Per layer, from the per-class sums of signed unit relevance (prunelab.stats.lrp, collected by prunelab.stats):
  m_k   = relevance_sum_k / count_k               mean relevance of each unit over class-k samples (K×U)
  w_k   = sigmoid(max_c acc_c / acc_c)            class weight from per-class train accuracy (acc_c = 0 → ACC_FLOOR)
  s     = | mean over classes with samples of w_k m_k |
  score = s / ‖s‖₂                                 (a layer with ‖s‖ = 0 keeps zeros)
Scores of all layers are comparable, so pruning ranks them globally.
"""

from __future__ import annotations

import torch

from prunelab.methods import register_method
from prunelab.models import prunable_layers

ACC_FLOOR = 1e-6  # a class the model never gets right counts as this accuracy: max weight, no division by zero


def class_weights(class_acc: torch.Tensor) -> torch.Tensor:
    """sigmoid(max_c acc_c / acc_c), K float64; harder classes weigh more (range [sigmoid(1), 1))."""
    acc = class_acc.detach().double().clamp(min=ACC_FLOOR)
    return torch.sigmoid(acc.max() / acc)


def frs_layer(relevance_sum: torch.Tensor, count: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Structured frs of one layer: relevance_sum K×U, count K, weights K → U float64 (unit L2 norm)."""
    count = count.detach().double()
    seen = count > 0
    if not seen.any():
        raise ValueError("frs: no calibration samples in any class")
    means = relevance_sum.detach().double()[seen] / count[seen, None]
    s = (weights[seen, None] * means).mean(0).abs()
    norm = s.norm()
    return s / norm if norm > 0 else s


@register_method("frs", needs={"relevance"}, granularities=("structured",))
def frs_scores(model, stats, cfg) -> dict:
    """Structured scores from stats "relevance_sum" (K×U), "count" (K) per layer and "class_acc" (K)."""
    alpha, beta = float(cfg["alpha"]), float(cfg["beta"])
    if abs(alpha - beta - 1.0) > 1e-9 or beta < 0:
        raise ValueError(f"frs: LRP-αβ needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    used = stats.get("lrp")
    if used is not None and (abs(used["alpha"] - alpha) > 1e-9 or abs(used["beta"] - beta) > 1e-9):
        raise ValueError(f"frs: config alpha={alpha}, beta={beta} but the statistics hold relevance for "
                         f"alpha={used['alpha']}, beta={used['beta']}; rerun snakemake --forcerun collect_stats")
    weights = class_weights(stats["class_acc"])
    out = {}
    for name, _ in prunable_layers(model):
        entry = stats["layers"][name]
        if entry["relevance_sum"].shape[0] != weights.shape[0]:
            raise ValueError(f"frs: layer '{name}' has relevance for {entry['relevance_sum'].shape[0]} classes, "
                             f"class_acc for {weights.shape[0]}")
        out[name] = {"unstructured": None,
                     "structured": frs_layer(entry["relevance_sum"], entry["count"], weights)}
    return out
