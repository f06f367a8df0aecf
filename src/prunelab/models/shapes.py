"""Record and re-apply module sizes, so a physically pruned model is rebuilt from data + state dict.

A shapes dict maps module name -> constructor sizes:
Conv2d {"in", "out", "groups"}, Linear {"in", "out"}, BatchNorm1d/2d {"num_features"}.
"""

from __future__ import annotations

from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
SIZED_TYPES = (nn.Conv2d, nn.Linear) + BN_TYPES


def sizes_of(m: nn.Module) -> dict[str, int]:
    """Constructor sizes of one Conv2d / Linear / BatchNorm module."""
    if isinstance(m, nn.Conv2d):
        return {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features}
    if isinstance(m, BN_TYPES):
        return {"num_features": m.num_features}
    raise TypeError(f"no recorded sizes for module type {type(m).__name__}")


def record_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Sizes of every Conv2d / Linear / BatchNorm module of `model`, keyed by module name."""
    return {name: sizes_of(m) for name, m in model.named_modules() if isinstance(m, SIZED_TYPES)}


def _rebuilt(name: str, m: nn.Module, s: dict) -> nn.Module:
    """A fresh module like `m` (same kernel/stride/padding/bias/eps...) with sizes `s`."""
    want = set(sizes_of(m))
    if not isinstance(s, dict) or set(s) != want or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s.values()
    ):
        raise ValueError(f"shapes[{name!r}] ({type(m).__name__}) must be a dict with positive int keys "
                         f"{sorted(want)}, got {s!r}")
    p = next(m.parameters(), None)
    kw = {"device": p.device if p is not None else None}
    try:
        if isinstance(m, nn.Conv2d):
            return type(m)(s["in"], s["out"], m.kernel_size, stride=m.stride, padding=m.padding,
                           dilation=m.dilation, groups=s["groups"], bias=m.bias is not None,
                           padding_mode=m.padding_mode, **kw)
        if isinstance(m, nn.Linear):
            return type(m)(s["in"], s["out"], bias=m.bias is not None, **kw)
        return type(m)(s["num_features"], eps=m.eps, momentum=m.momentum, affine=m.affine,
                       track_running_stats=m.track_running_stats, **kw)
    except ValueError as e:
        raise ValueError(f"shapes[{name!r}]: cannot build {type(m).__name__} with {s}: {e}") from e


def apply_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Rebuild (in place) every module named in `shapes` whose sizes differ; returns `model`.

    Modules not named, or named with unchanged sizes, stay as built. A name that is not a
    Conv2d / Linear / BatchNorm module of `model` raises KeyError naming it.
    """
    if not isinstance(shapes, dict):
        raise ValueError(f"arch['shapes'] must be a dict of module name -> sizes, got {type(shapes).__name__}")
    modules = dict(model.named_modules())
    for name, s in shapes.items():
        m = modules.get(name)
        if m is None:
            raise KeyError(f"arch['shapes'] names module {name!r}, which does not exist in the model")
        if not isinstance(m, SIZED_TYPES):
            raise KeyError(f"arch['shapes'] names module {name!r} of type {type(m).__name__}; "
                           f"expected Conv2d, Linear or BatchNorm1d/2d")
        new = _rebuilt(name, m, s)
        if sizes_of(new) != sizes_of(m):
            new.train(m.training)
            model.set_submodule(name, new)
    return model
