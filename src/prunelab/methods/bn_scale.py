"""bn_scale: network slimming's channel score, |γ| of the BatchNorm right after the unit (Liu et al. 2017,
"Learning Efficient Convolutional Networks through Network Slimming", ICCV). Structured only.

The paper trains with an L1 penalty on γ first; here the score is read from whatever baseline is pruned (the
sparsity-regularised training is not part of this method). The BatchNorm of a layer is the next leaf module
registered after it, if it is a BatchNorm1d/2d with as many features as the layer has output units (true of
every zoo model and torchvision's conv → bn blocks). A layer without one (other than the classifier, which
structured pruning never removes units from, and which gets no structured score) makes the method refuse the
model. Equals Torch-Pruning's BNScaleImportance on the layer's own BN (tests/test_weight_criteria.py).
"""

from __future__ import annotations

from torch import nn

from prunelab.methods import register_method
from prunelab.models import classifier_name, prunable_layers

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def following_batchnorms(model: nn.Module) -> dict[str, nn.Module | None]:
    """{prunable layer: the BatchNorm registered right after it (affine, matching width) or None}."""
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    nxt = {n: leaves[i + 1][1] if i + 1 < len(leaves) else None for i, (n, _) in enumerate(leaves)}
    out = {}
    for name, m in prunable_layers(model):
        bn = nxt.get(name)
        ok = isinstance(bn, _BATCHNORM) and bn.affine and bn.num_features == m.weight.shape[0]
        out[name] = bn if ok else None
    return out


def bn_scale_inapplicable(model: nn.Module) -> str | None:
    """Why network slimming cannot score `model` (the first layer without a BatchNorm after it), or None."""
    head = classifier_name(model)
    missing = [n for n, bn in following_batchnorms(model).items() if bn is None and n != head]
    if missing:
        return (f"method 'bn_scale' needs a BatchNorm (affine) right after every pruned layer; layer "
                f"'{missing[0]}' of {type(model).__name__} has none")
    return None


@register_method("bn_scale", needs=set(), granularities=("structured",),
                 inapplicable=bn_scale_inapplicable)
def bn_scale_scores(model, stats, cfg) -> dict:
    """Structured |γ| per unit (out_units, float64); the classifier gets None."""
    head = classifier_name(model)
    out = {}
    for name, bn in following_batchnorms(model).items():
        s = None if bn is None else bn.weight.detach().double().abs().cpu()
        if s is None and name != head:
            raise ValueError(bn_scale_inapplicable(model))
        out[name] = {"unstructured": None, "structured": s}
    return out
