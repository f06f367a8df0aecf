"""Fully connected networks: "mlp" (hidden sizes as an option) and "lenet300_100" (LeCun et al. 1998)."""

from __future__ import annotations

from collections import OrderedDict
from math import prod

from torch import nn

from . import register_model
from .layers import init_weights, positive_int_list


def make_mlp(in_shape, num_classes: int, hidden: list[int]) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU] per hidden size -> Linear(classes). Names flatten, fc1, relu1, ..., fcL."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = prod(in_shape)
    for i, h in enumerate(hidden, start=1):
        layers += [(f"fc{i}", nn.Linear(width, h)), (f"relu{i}", nn.ReLU(inplace=False))]
        width = h
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(width, num_classes)))
    return init_weights(nn.Sequential(OrderedDict(layers)))


@register_model("mlp", convolutional=False)
def mlp(in_shape, num_classes, hidden=(128, 64)):
    """MLP on the flattened input; option "hidden": list of hidden widths (default [128, 64], [] = linear)."""
    return make_mlp(in_shape, num_classes, positive_int_list("mlp", "hidden", hidden, allow_empty=True))


@register_model("lenet300_100", convolutional=False)
def lenet300_100(in_shape, num_classes):
    """LeNet-300-100: MLP with hidden [300, 100]; 266,610 params on 1x28x28 with 10 classes."""
    return make_mlp(in_shape, num_classes, [300, 100])
