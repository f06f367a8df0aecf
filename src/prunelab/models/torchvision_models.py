""""tv:<name>": torchvision classification models, untrained (weights=None), never downloading."""

from __future__ import annotations

from torch import nn

from .shapes import apply_shapes


def build_torchvision(name: str, in_shape, num_classes: int, **options) -> nn.Module:
    """torchvision.models.<name>(weights=None, num_classes=K, **options); first conv adapted to C != 3.

    torchvision is imported here, lazily (it costs seconds). Its own init is kept; an adapted first
    conv gets Kaiming-normal (fan_out, ReLU).
    """
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        raise ValueError(f"unknown torchvision model {name!r}; valid names: {valid}")
    for key in ("weights", "num_classes"):
        if key in options:
            raise ValueError(f"model 'tv:{name}': option {key!r} is set by prunelab (weights=None, "
                             f"num_classes from arch); remove it")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as e:
        raise ValueError(f"model 'tv:{name}': bad options {options}: {e}") from e
    c = in_shape[0]
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != c:
        n, m = first
        sizes = {"in": c, "out": m.out_channels, "groups": m.groups}
        if m.groups != 1:
            raise ValueError(f"model 'tv:{name}': cannot adapt grouped first conv {n!r} to {c} channels")
        apply_shapes(model, {n: sizes})
        new = model.get_submodule(n)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    return model
