"""The form a model is timed in (the latency of metrics.json): what an inference deployment would run.

`inference_model` returns an eval-mode copy of a model with every BatchNorm2d folded into the Conv2d before
it, placed on the device as every job places models (`prunelab.models.place`: channels-last on CPU). With
`compiled=True` it is also compiled by TorchInductor with frozen weights (elementwise ops fused into their
neighbours, convolution weights prepacked), one static graph per input shape; the first call at each shape
compiles (seconds), later calls run the compiled code. Dense and pruned models are always timed in the same
form, so a latency speedup compares like with like.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunelab.models import place
from prunelab.models.graph import following_bn

FOLD_TOLERANCE = 1e-3  # max |logit difference| / max(1, max |logit|) allowed between a model and its folded copy


def latency_form(compiled: bool) -> str:
    """Name of the form latency is measured in, recorded beside it in metrics.json."""
    return "bn-folded+inductor" if compiled else "bn-folded"


def compile_problem(device: torch.device | str) -> str | None:
    """Why `compiled=True` cannot run on `device` on this machine, or None when it can.

    CPU: TorchInductor writes C++ and needs a C++ compiler (g++/clang++, or $CXX). CUDA: it needs Triton.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "latency.compile on CUDA needs the triton package (it ships with the Linux torch wheels)"
        return None
    if device.type != "cpu":
        return f"latency.compile supports cpu and cuda devices, not {device.type!r}"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 - any failure to find a compiler means the same thing here
        return (f"latency.compile on CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX); none found "
                f"({type(err).__name__}: {err}). Install one (Debian: apt install g++) or set latency.compile: false")
    return None


@torch.no_grad()
def inference_model(model: nn.Module, device: torch.device | str, compiled: bool = False,
                    check_input: torch.Tensor | None = None) -> nn.Module:
    """Eval-mode inference copy of `model` on `device`: BN folded, placed, and compiled when `compiled`.

    `model` itself is not changed. check_input (a batch of inputs; `model` must be on `device`): the folded
    copy must give the model's logits on it to FOLD_TOLERANCE (relative to the largest logit), else ValueError.
    """
    device = torch.device(device)
    if compiled:
        problem = compile_problem(device)
        if problem:
            raise RuntimeError(problem)
    folded = place(fold_batchnorm(model), device)
    if check_input is not None:
        diff, scale = logits_difference(folded, model, check_input.to(device))
        if diff > FOLD_TOLERANCE * max(1.0, scale):
            raise ValueError(f"folding BatchNorm into the convs changed the logits by {diff:.3g} (max |logit| "
                             f"{scale:.3g}): the model has a BN that does not follow the conv it was folded into")
    if compiled:
        return torch.compile(folded, dynamic=False, options={"freezing": True})
    return folded


class EquivalenceError(AssertionError):
    """The physically pruned model does not reproduce the masked dense model's logits."""


@torch.no_grad()
def logits_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |a(x) - b(x)|, max |b(x)|) in eval mode; both models' training flags are restored."""
    flags = (a.training, b.training)
    a.eval(), b.eval()
    try:
        ya, yb = a(x), b(x)
    finally:
        a.train(flags[0]), b.train(flags[1])
    if ya.shape != yb.shape:
        raise EquivalenceError(f"logit shapes differ: {tuple(ya.shape)} vs {tuple(yb.shape)}")
    return float((ya - yb).abs().max()), float(yb.abs().max())


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Inference copy with each BatchNorm2d folded into the Conv2d whose output it normalises (eval mode).

    The BN becomes nn.Identity and the conv gets the scaled weight and a bias. Used for fair latency
    measurements of dense and pruned models alike.
    """
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    for conv_name, bn_name in following_bn(out).items():
        conv, bn = modules[conv_name], modules[bn_name]
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        out.set_submodule(conv_name, fused)
        out.set_submodule(bn_name, nn.Identity())
    return out
