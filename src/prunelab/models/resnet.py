""""resnet20/32/44/56/110": CIFAR ResNets (He et al. 2016, section 4.2), shortcut option A or B."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from . import register_model
from .layers import Add, ShortcutA, init_weights


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Option-B shortcut: 1x1 conv (no bias, stride) -> BN. Names conv, bn."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels)),
    ]))


class BasicBlock(nn.Module):
    """conv1-bn1-relu1-conv2-bn2, add(out, shortcut(x)), relu2. x: (N, in, H, W) -> (N, out, H/s, W/s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = projection(in_channels, out_channels, stride)
        self.add = Add()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.shortcut(x)))


class CifarResNet(nn.Module):
    """conv3x3 16 -> BN -> ReLU -> layer1..3 (16/32/64 channels, n blocks, stride 1/2/2) -> gap -> fc."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"resnet{depth}: option 'shortcut' must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU(inplace=False)
        c = 16
        for i, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, width, stride if j == 0 else 1, shortcut))
                c = width
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.gap(x)))


def _register(depth: int):
    def build(in_shape, num_classes, shortcut="A"):
        return CifarResNet(depth, in_shape[0], num_classes, shortcut)

    build.__doc__ = f"ResNet-{depth} for CIFAR; option 'shortcut': 'A' (zero-pad, default) or 'B' (1x1 conv + BN)."
    register_model(f"resnet{depth}")(build)


for _d in (20, 32, 44, 56, 110):
    _register(_d)
