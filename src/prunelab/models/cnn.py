""""cnn": the small default CNN, for 1x8x8 digits up to 32x32 images."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import register_model
from .layers import init_weights, positive_int_list


@register_model("cnn")
def cnn(in_shape, num_classes, widths=(16, 32, 64)):
    """[conv3x3(pad 1) -> BN -> ReLU] per width, MaxPool2d(2) after the 2nd block, GAP, Flatten, Linear.

    Option "widths": channel widths (default [16, 32, 64]). The pool is skipped on inputs under 2x2.
    Names: conv{i}, bn{i}, relu{i}, pool2, gap, flatten, fc.
    """
    widths = positive_int_list("cnn", "widths", widths)
    c, h, w = in_shape
    layers: list[tuple[str, nn.Module]] = []
    for i, width in enumerate(widths, start=1):
        layers += [(f"conv{i}", nn.Conv2d(c, width, 3, padding=1, bias=False)),
                   (f"bn{i}", nn.BatchNorm2d(width)), (f"relu{i}", nn.ReLU(inplace=False))]
        c = width
        if i == 2 and min(h, w) >= 2:
            layers.append(("pool2", nn.MaxPool2d(2)))
            h, w = h // 2, w // 2
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(c, num_classes))]
    return init_weights(nn.Sequential(OrderedDict(layers)))
