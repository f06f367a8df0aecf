"""Keep-masks of unstructured pruning: applying them, keeping masked weights at zero while training."""

from __future__ import annotations

import torch
from torch import nn

from prunelab.models import prunable_layers
from prunelab.pruning.selection import select_unstructured
from prunelab.settings import PruneSettings


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Zero (in place) every weight whose keep-mask entry is False; returns `model`."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        w = _masked_weight(modules, name, mask)
        w.mul_(mask.to(w.device, w.dtype))
    return model


def _masked_weight(modules: dict, name: str, mask: torch.Tensor) -> torch.Tensor:
    """The weight a keep-mask applies to; a mask naming no weighted layer, or of another shape, raises."""
    if name not in modules or not hasattr(modules[name], "weight"):
        raise ValueError(f"mask for {name!r}, which is not a layer with a weight in the model")
    w = modules[name].weight
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight {tuple(w.shape)}")
    return w


class MaskKeeper:
    """Keeps masked weights at zero while training.

    Gradients of masked weights are zeroed by hooks (so momentum buffers and Adam moments built from them
    stay zero), and `apply()` re-zeroes the weights: call it after every `optimizer.step()` (it also
    undoes decoupled weight decay or momentum left over from before masking). `remove()` drops the hooks.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        modules = dict(model.named_modules())
        self.pairs, self.handles = [], []
        for name, mask in masks.items():
            w = _masked_weight(modules, name, mask)
            m = mask.to(w.device, torch.bool)
            self.pairs.append((w, m))
            self.handles.append(w.register_hook(lambda g, m=m: g.masked_fill(~m.to(g.device), 0)))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Re-zero the masked weights (in place)."""
        for w, m in self.pairs:
            w.masked_fill_(~m.to(w.device), 0)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def prune_unstructured(model: nn.Module, scores: dict, ratio: float, prune: PruneSettings | dict | None = None,
                       normalize: str | None = None, prior: dict | None = None):
    """Select (`select_unstructured`, same arguments) and apply unstructured masks IN PLACE → (model, masks, info).

    info: ratio_requested, sparsity_achieved (removed / prunable weights), n_prunable, n_removed,
    layer_kept {layer: kept fraction of its weights; 1.0 for ignored layers}, scope, min_keep.
    """
    prune = PruneSettings.of(prune)
    masks = select_unstructured(model, scores, ratio, prune, normalize, prior)
    apply_masks(model, masks)
    n_prunable = sum(m.numel() for m in masks.values())
    n_removed = sum(int((~m).sum()) for m in masks.values())
    layer_kept = {n: (float(masks[n].float().mean()) if n in masks else 1.0) for n, _ in prunable_layers(model)}
    info = {"granularity": "unstructured", "ratio_requested": float(ratio),
            "sparsity_achieved": n_removed / n_prunable, "n_prunable": n_prunable, "n_removed": n_removed,
            "layer_kept": layer_kept, "scope": prune.scope, "min_keep": prune.min_keep_fraction,
            "normalize": normalize}
    return model, masks, info


def masks_hold(model: nn.Module, masks: dict | None) -> bool:
    """True when every masked weight of `model` is exactly zero."""
    if not masks:
        return True
    modules = dict(model.named_modules())
    return all(bool((modules[n].weight.detach()[~m.to(torch.bool)] == 0).all()) for n, m in masks.items())
