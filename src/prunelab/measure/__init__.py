"""Model cost and accuracy measurements: parameters, MACs, latency, top-k. The fields of metrics.json are
assembled in `evaluation` (one path for every job); `latency` times models interleaved with the dense one in
the inference form of `deploy`.

MACs count Conv2d and Linear multiply-accumulates for ONE input (batch 1); `flop_counter_macs` gives the same
number from torch's own FLOP counter (`torch.utils.flop_counter.FlopCounterMode`, 2 FLOPs per MAC).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

# Operators that are conv or linear layers; everything else (BN, pools, adds) is not counted.
_COUNTED_OPS = ("convolution", "mm", "addmm", "bmm", "matmul", "linear")


def count_params(model: nn.Module) -> int:
    """Total number of parameters (all tensors, including BN and biases)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def layer_macs(model: nn.Module, in_shape) -> dict[str, int]:
    """MACs per Conv2d/Linear layer name for one input of shape `in_shape` (C, H, W), by forward hooks (sums to
    `count_macs`)."""
    macs: dict[str, int] = {}
    hooks = []

    def hook(name):
        def fn(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
                macs[name] = macs.get(name, 0) + output.numel() * k
            else:
                macs[name] = macs.get(name, 0) + output.numel() * module.in_features
        return fn

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        _forward_one(model, in_shape)
    finally:
        for h in hooks:
            h.remove()
    return macs


def _forward_one(model: nn.Module, in_shape) -> None:
    param = next(model.parameters())
    x = torch.zeros(1, *in_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was_training)


def count_macs(model: nn.Module, in_shape) -> int:
    """Conv + linear MACs for one input of shape (C, H, W), counted by forward hooks on each layer.

    Equal to `flop_counter_macs` (torch's FLOP counter, the reference the tests hold it to); the hook count is
    what jobs use because entering FlopCounterMode imports torch._dynamo, seconds per short workflow job.
    """
    return sum(layer_macs(model, in_shape).values())


def flop_counter_macs(model: nn.Module, in_shape) -> int:
    """Conv + linear MACs for one input via `torch.utils.flop_counter.FlopCounterMode` (flops / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _forward_one(model, in_shape)
    total = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        if any(name in str(op) for name in _COUNTED_OPS):
            total += flops
    return int(total // 2)


def effective_macs(model: nn.Module, in_shape) -> int:
    """Σ over Conv2d/Linear layers of layer MACs × weight density (fraction of nonzero weights).

    For a dense or physically pruned model this equals `count_macs`; for a masked model it counts only
    the multiply-accumulates with nonzero weights.
    """
    per_layer = layer_macs(model, in_shape)
    modules = dict(model.named_modules())
    total = 0.0
    for name, macs in per_layer.items():
        w = modules[name].weight.detach()
        total += macs * float(torch.count_nonzero(w)) / w.numel()
    return int(round(total))


def prunable_weight_sparsity(model: nn.Module) -> float:
    """Fraction of Conv2d/Linear weights that are exactly zero."""
    zero = total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zero += int((m.weight.detach() == 0).sum())
            total += m.weight.numel()
    return zero / total if total else 0.0


@torch.inference_mode()
def measure_latency(model: nn.Module, in_shape, batch: int, device: torch.device | str,
                    warmup: int = 5, repeats: int = 20) -> float:
    """Median wall time of one forward pass of a `batch` × in_shape input, in milliseconds.

    Warm-up runs first; CUDA is synchronised around each timed run.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.randn(batch, *in_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    model.train(was_training)
    return float(statistics.median(times))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of `model` on float inputs x (N×C×H×W)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = correct5 = 0
    loss_sum = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == yb).sum())
        correct5 += int((top == yb[:, None]).any(dim=1).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n}
