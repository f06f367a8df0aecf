"""Model zoo: models built from data (name + options + input shape + classes), registry and helpers.

arch = {"name": str, "options": dict, "in_shape": [C, H, W], "num_classes": int, "shapes": dict | None}
"shapes" (see `shapes.py`) rebuilds modules with recorded sizes, e.g. after physical pruning.
Names: prunelab's own models (`model_names()`) and "tv:<torchvision classification model>".
"""

from __future__ import annotations

import copy
import inspect
import logging
import numbers
import warnings
from typing import Callable

import torch
from torch import nn

from .layers import Add, ShortcutA, init_weights
from .shapes import apply_shapes, record_shapes

MODELS: dict[str, Callable[..., nn.Module]] = {}
DENSE_ONLY: set[str] = set()   # registered models without convolutions (no channels for gradual FRS or hrank)
TV_PREFIX = "tv:"
ARCH_KEYS = {"name", "options", "in_shape", "num_classes", "shapes"}


def register_model(name: str, convolutional: bool = True):
    """Decorator: register builder `fn(in_shape: tuple[C, H, W], num_classes: int, **options) -> nn.Module`;
    convolutional=False for a model of Linear layers only."""

    def deco(fn):
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        if not convolutional:
            DENSE_ONLY.add(name)
        return fn

    return deco


def model_names() -> list[str]:
    """Sorted names of prunelab's own models (torchvision models are reached as 'tv:<name>')."""
    return sorted(MODELS)


def _pos_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _check_arch(arch: dict) -> tuple[str, dict, tuple[int, int, int], int]:
    if not isinstance(arch, dict):
        raise ValueError(f"arch must be a dict with keys {sorted(ARCH_KEYS)}, got {type(arch).__name__}")
    unknown = set(arch) - ARCH_KEYS
    if unknown:
        raise ValueError(f"arch has unknown keys {sorted(unknown)}; expected keys {sorted(ARCH_KEYS)}")
    for k in ("name", "in_shape", "num_classes"):
        if k not in arch:
            raise ValueError(f"arch is missing {k!r} (expected keys {sorted(ARCH_KEYS)})")
    name, options = arch["name"], arch.get("options") or {}
    if not isinstance(name, str):
        raise ValueError(f"arch['name'] must be a str, got {name!r}")
    if not isinstance(options, dict):
        raise ValueError(f"arch['options'] must be a dict, got {options!r}")
    in_shape = arch["in_shape"]
    if not (isinstance(in_shape, (list, tuple)) and len(in_shape) == 3 and all(map(_pos_int, in_shape))):
        raise ValueError(f"arch['in_shape'] must be [C, H, W] of positive ints, got {in_shape!r}")
    k = arch["num_classes"]
    if not _pos_int(k):
        raise ValueError(f"arch['num_classes'] must be a positive int, got {k!r}")
    return name, options, tuple(int(v) for v in in_shape), int(k)


def build_model(arch: dict) -> nn.Module:
    """Build the model described by `arch` (fresh init; then `shapes`, if given, resizes modules)."""
    name, options, in_shape, num_classes = _check_arch(arch)
    if name.startswith(TV_PREFIX):
        from .torchvision_models import build_torchvision

        model = build_torchvision(name[len(TV_PREFIX):], in_shape, num_classes, **options)
    else:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; valid names: {model_names()} "
                             f"or '{TV_PREFIX}<torchvision model name>'")
        fn = MODELS[name]
        params = inspect.signature(fn).parameters
        valid = [p for p in params if p not in ("in_shape", "num_classes")]
        bad = sorted(set(options) - set(valid))
        if bad:
            raise ValueError(f"model {name!r}: unknown options {bad}; valid options: {valid}")
        model = fn(in_shape, num_classes, **options)
    if arch.get("shapes"):
        apply_shapes(model, arch["shapes"])
    return model


def architecture(model: nn.Module, arch: dict) -> dict:
    """Deep copy of `arch` with "shapes" = current sizes of every Conv2d / Linear / BatchNorm of `model`."""
    _check_arch(arch)
    out = copy.deepcopy(arch)
    out["shapes"] = record_shapes(model)
    return out


def cuda_problem() -> str | None:
    """Why torch cannot use a GPU here (one line: its build, and torch's own complaint such as a driver too old
    for its CUDA), or None when it can."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    said = " ".join(" ".join(str(w.message) for w in caught).split())
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but can use no GPU here ("
            + (said or "no NVIDIA driver or GPU, or CUDA_VISIBLE_DEVICES hides them") + ")")


def cpu_fallback_note() -> str | None:
    """The one line `device: auto` owes the user when it falls back to the CPU although torch is built for CUDA
    (a driver too old for the locked CUDA wheels would otherwise train on the CPU for days, silently); None when
    a GPU is usable or torch is a CPU build."""
    if torch.version.cuda is None:
        return None
    problem = cuda_problem()
    return f"device auto runs every job on the CPU: {problem}" if problem else None


_said_fallback = False


def pick_device(preference: str) -> torch.device:
    """The config's `device`: 'auto' → CUDA when torch can use a GPU, else the CPU (logged once per process when
    torch is built for CUDA: `cpu_fallback_note`); 'cpu' / 'cuda' force one (error if CUDA is asked but unusable)."""
    global _said_fallback
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        note = None if _said_fallback else cpu_fallback_note()
        if note:
            logging.getLogger("prunelab").warning(note)
            _said_fallback = True
        return torch.device("cpu")
    if preference == "cuda":
        problem = cuda_problem()
        if problem:
            raise RuntimeError(f"config asks for device 'cuda', but {problem}; to try on the CPU: --config device=cpu")
    return torch.device(preference)


def place(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move `model` to `device` in place and return it. On CPU, a model with Conv2d layers also gets its 4-D
    weights in channels-last (NHWC) memory format, which oneDNN runs faster than NCHW (ResNet-20, batch 128,
    1 thread: forward 239 → 149 ms, training step 573 → 411 ms); activations follow the weights' format, so
    NCHW inputs need no conversion. Every job places its models with this, so training, evaluation, statistics
    and latency all run the same layout. A model already placed is left alone (checking is cheaper than `to`)."""
    device = torch.device(device)
    channels_last = device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if all(t.device == device and not (channels_last and t.dim() == 4
                                       and not t.is_contiguous(memory_format=torch.channels_last))
           for t in (*model.parameters(), *model.buffers())):
        return model
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear as (name, module), in forward order (= registration order in the zoo)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def classifier_name(model: nn.Module) -> str:
    """Name of the final Linear producing the logits (last prunable layer if the model has no Linear)."""
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer")
    linear = [n for n, m in layers if isinstance(m, nn.Linear)]
    return linear[-1] if linear else layers[-1][0]


def architecture_for(spec: dict, data: dict) -> dict:
    """Architecture dict for a config entry {name, options} adapted to the dataset's input and classes."""
    return {"name": spec["name"], "options": dict(spec.get("options") or {}), "in_shape": list(data["in_shape"]),
            "num_classes": int(data["num_classes"]), "shapes": None}


# Import the families last: they register themselves with MODELS.
from . import cnn, lenet, mlp, resnet, vgg  # noqa: E402,F401

__all__ = [
    "MODELS", "Add", "ShortcutA", "architecture", "architecture_for", "build_model", "classifier_name", "init_weights",
    "model_names", "cpu_fallback_note", "cuda_problem", "pick_device", "place", "prunable_layers", "register_model",
    "apply_shapes", "record_shapes",
]
