"""Small modules shared by prunelab models: every op is a module so hooks and LRP see each step."""

from __future__ import annotations

import torch
from torch import nn


class Add(nn.Module):
    """Residual addition: forward(a, b) = a + b (same shapes)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class ShortcutA(nn.Module):
    """Option-A ResNet shortcut (He et al. 2016): parameter-free, subsample then zero-pad channels.

    x: (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride)); the input
    channels sit in the middle, (out - in) // 2 zero channels before them, the rest after.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ShortcutA: out_channels ({out_channels}) must be >= in_channels ({in_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        if extra:
            before = extra // 2
            x = nn.functional.pad(x, (0, 0, 0, 0, before, extra - before))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def init_weights(model: nn.Module) -> nn.Module:
    """Standard init: conv Kaiming-normal (fan_out, ReLU) with zero bias, BN weight 1 / bias 0.

    Linear layers keep PyTorch's default (Kaiming-uniform, a=sqrt(5)). Deterministic under a seed.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size of a conv / pool along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def positive_int_list(model: str, option: str, value, allow_empty: bool = False) -> list[int]:
    """Validate an option that must be a list of positive ints; returns it as a list."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    if not ok or (not value and not allow_empty):
        need = "a list of positive ints" + ("" if allow_empty else " (non-empty)")
        raise ValueError(f"model {model!r}: option {option!r} must be {need}, got {value!r}")
    return list(value)
