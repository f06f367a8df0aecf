""""lenet5": Caffe LeNet-5 (20-50-500), flatten size computed from the input."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import register_model
from .layers import conv_out, init_weights


@register_model("lenet5")
def lenet5(in_shape, num_classes, batchnorm: bool = False):
    """conv5x5 20 -> ReLU -> maxpool2 -> conv5x5 50 -> ReLU -> maxpool2 -> Flatten -> fc 500 -> ReLU -> fc.

    Caffe's LeNet-5 sizes; 431,080 params on 1x28x28 with 10 classes. Needs inputs of at least 16x16.
    Option batchnorm: a BatchNorm after conv1, conv2 and fc1 (bn1, bn2, bn3; +1,140 params), before the ReLU.
    """
    if not isinstance(batchnorm, bool):
        raise ValueError(f"lenet5 option 'batchnorm' must be true or false, got {batchnorm!r}")
    c, h, w = in_shape
    sizes = []
    for s in (h, w):
        for k in (5, 2, 5, 2):  # conv, pool, conv, pool
            s = conv_out(s, k, stride=k if k == 2 else 1)
            if s < 1:
                raise ValueError(f"lenet5 needs inputs of at least 16x16, got in_shape {list(in_shape)}")
        sizes.append(s)

    def norm(name, module):
        return [(name, module)] if batchnorm else []

    layers = [("conv1", nn.Conv2d(c, 20, 5)), *norm("bn1", nn.BatchNorm2d(20)), ("relu1", nn.ReLU(inplace=False)),
              ("pool1", nn.MaxPool2d(2)),
              ("conv2", nn.Conv2d(20, 50, 5)), *norm("bn2", nn.BatchNorm2d(50)), ("relu2", nn.ReLU(inplace=False)),
              ("pool2", nn.MaxPool2d(2)),
              ("flatten", nn.Flatten()), ("fc1", nn.Linear(50 * sizes[0] * sizes[1], 500)),
              *norm("bn3", nn.BatchNorm1d(500)), ("relu3", nn.ReLU(inplace=False)), ("fc2", nn.Linear(500, num_classes))]
    return init_weights(nn.Sequential(OrderedDict(layers)))
