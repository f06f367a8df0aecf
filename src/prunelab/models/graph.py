"""Model-graph analyses: the one torch-pruning dependency graph builder, coupled output-unit groups, the
BatchNorm that follows each layer."""

from __future__ import annotations

import torch
from torch import nn

from prunelab.models import Add, prunable_layers


def following_bn(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, str]:
    """{Conv/Linear name: name of the BatchNorm that normalises its output}, for layers that have one.

    With `example_input`, found by a forward pass (the BN whose input IS the layer's output tensor);
    without, by registration order (the next Conv/Linear/BN module, if a BN of matching size), which holds
    for every prunelab zoo model.
    """
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d)
    layers = dict(prunable_layers(model))
    if example_input is None:
        seq = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear) + bn_types)]
        out = {}
        for (n, m), (n2, m2) in zip(seq, seq[1:]):
            if n in layers and isinstance(m2, bn_types) and m2.num_features == m.weight.shape[0]:
                out[n] = n2
        return out
    produced, out, handles = {}, {}, []
    for n, m in model.named_modules():
        if n in layers:
            handles.append(m.register_forward_hook(lambda mod, i, o, n=n: produced.__setitem__(id(o), (n, o))))
        elif isinstance(m, bn_types):
            def hook(mod, inputs, o, n=n):
                hit = produced.get(id(inputs[0]))
                if hit is not None and hit[1] is inputs[0]:
                    out[hit[0]] = n
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return out


RESIDUAL = ("inner", "all")


# ----------------------------------------------------------------------------------------------- structured
def dependency_graph(model: nn.Module, example_input: torch.Tensor):
    """Torch-Pruning's DependencyGraph of `model`, traced on one sample of `example_input` (N, *in_shape) in eval
    mode (the tracing forward pass must not update BN running statistics; the training flag is restored).
    The one place the graph is built: groups, physical removal and the MACs of pruning spaces read it."""
    import torch_pruning as tp  # ~0.3 s: only where a graph is traced

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # torch-pruning traces autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input[:1], verbose=False)
    finally:
        model.train(was_training)


def out_pruning_fn(module: nn.Module):
    import torch_pruning as tp

    return tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels


def structured_groups(model: nn.Module, example_input: torch.Tensor | None = None,
                      residual: str = "inner") -> list[dict]:
    """Coupled output-unit groups of every Conv2d/Linear, in forward order.

    Each group: {"members": [layer names whose output channels are removed together], "units": int,
    "residual": bool (passes a residual add)}. Found with torch-pruning's DependencyGraph traced on
    `example_input` when given. Without it every layer is its own group, which is only allowed for models
    with no `Add` module (models that add residuals inline, e.g. torchvision's, always need an input).
    Groups that pass a residual add are dropped with residual="inner"; with "all", a group that also
    passes a zero-padding (option-A) shortcut raises, since torch-pruning cannot prune through it.
    """
    if residual not in RESIDUAL:
        raise ValueError(f"residual must be one of {RESIDUAL}, got {residual!r}")
    layers = prunable_layers(model)
    if example_input is None:
        if any(isinstance(m, Add) for m in model.modules()):
            raise ValueError("the model has residual adds: pass example_input (one input batch) so "
                             "torch-pruning can trace which channels are coupled")
        return [{"members": [n], "units": m.weight.shape[0], "residual": False} for n, m in layers]
    dg = dependency_graph(model, example_input)
    names = {m: n for n, m in layers}
    groups, seen = [], set()
    for name, m in layers:
        if name in seen:
            continue
        g = dg.get_pruning_group(m, out_pruning_fn(m), list(range(m.weight.shape[0])))
        members = [names[d.target.module] for d, _ in g
                   if dg.is_out_channel_pruning_fn(d.handler) and d.target.module in names]
        kinds = " ".join(str(d.target.name) for d, _ in g)
        members = [n for n, _ in layers if n in set(members)]  # forward order
        seen.update(members)
        res = "AddBackward" in kinds
        if res and residual == "all":
            pads = "ConstantPadNdBackward" in kinds
            sizes = {dict(layers)[n].weight.shape[0] for n in members}
            if pads or len(sizes) > 1:
                raise ValueError(f"cannot prune the residual stream of {members}: it passes a zero-padding "
                                 f"(option-A) shortcut, which torch-pruning cannot follow (docs/methods.md); use "
                                 f"residual='inner' or option-B shortcuts")
        groups.append({"members": members, "units": m.weight.shape[0], "residual": res})
    if residual == "inner":
        groups = [g for g in groups if not g["residual"]]
    return groups
