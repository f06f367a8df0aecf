""""vgg11", "vgg16": CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import register_model
from .layers import init_weights

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def make_vgg(cfg: list, in_shape, num_classes: int) -> nn.Sequential:
    """features (conv3x3 no-bias -> BN -> ReLU, 'M' = MaxPool2d(2)) -> gap -> flatten -> classifier.

    The common CIFAR variant: a single Linear(512, classes) after global average pooling (on 32x32
    the map is already 1x1 there). A pool whose input is under 2x2 is skipped, so 8x8 inputs work.
    """
    c, h, w = in_shape
    feats: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            if min(h, w) >= 2:
                feats.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        else:
            feats += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=False)]
            c = v
    model = nn.Sequential(OrderedDict([
        ("features", nn.Sequential(*feats)), ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()), ("classifier", nn.Linear(c, num_classes)),
    ]))
    return init_weights(model)


@register_model("vgg11")
def vgg11(in_shape, num_classes):
    """VGG-11 with BN, CIFAR variant (see `make_vgg`)."""
    return make_vgg(CFGS["vgg11"], in_shape, num_classes)


@register_model("vgg16")
def vgg16(in_shape, num_classes):
    """VGG-16 with BN, CIFAR variant (see `make_vgg`)."""
    return make_vgg(CFGS["vgg16"], in_shape, num_classes)
