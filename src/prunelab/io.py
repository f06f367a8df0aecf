"""Atomic, pickle-free file I/O for every artefact the workflow writes.

Checkpoints and statistics are written to a temporary file in the same folder and renamed into place, so a
crash never leaves a half-written file that looks complete. Loading uses `torch.load(weights_only=True)`:
models are rebuilt from data (architecture dict + state dict), never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from prunelab.models import build_model, place

# Which rule produces which kind of file (by the results/{exp}/<stage>/ folder), for error messages.
PRODUCERS = {"data": "prepare_data", "baseline": "train_baseline", "stats": "collect_stats", "scores": "score",
             "pruned": "prune_finetune", "finetuned": "prune_finetune", "scratch": "train_scratch",
             "gradual": "train_gradual", "space": "pruning_space"}


class CorruptFileError(RuntimeError):
    """A workflow file is missing, truncated or not what its producer writes."""


def producer_of(path: str | Path) -> str:
    """Name of the rule that writes `path`, guessed from its results/{exp}/<stage>/ folder."""
    for part in Path(path).parts:
        if part in PRODUCERS:
            return PRODUCERS[part]
    return "<the rule that writes it>"


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file renamed into place; the file gets the mode the umask gives (0o666 & ~umask),
    not mkstemp's 0o600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj, path: str | Path) -> None:
    """torch.save `obj` (tensors, dicts, lists, str, numbers only) atomically."""
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def regenerate_hint(path: str | Path, producer: str | None = None) -> str:
    """How to rewrite a workflow file: 'regenerate it with: snakemake --cores all --forcerun <its rule>'."""
    return f"regenerate it with: snakemake --cores all --forcerun {producer or producer_of(path)}"


def load_torch(path: str | Path, what: str = "file", producer: str | None = None) -> dict:
    """torch.load with weights_only=True; a missing or corrupt file raises CorruptFileError naming the file,
    its producing rule (`producer`, else guessed from the path) and how to regenerate it."""
    path = Path(path)
    rule = producer or producer_of(path)
    hint = regenerate_hint(path, rule)
    if not path.exists():
        raise CorruptFileError(f"{what} {path} does not exist (written by rule '{rule}'); {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, pickled objects, ...
        raise CorruptFileError(f"{what} {path} is truncated or corrupt ({type(exc).__name__}: {exc}); it is "
                               f"written by rule '{rule}': {hint}") from exc


def save_json(obj, path: str | Path) -> None:
    """Write JSON atomically (sorted keys, indented, NaN → null)."""
    text = json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n"
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def load_json(path: str | Path) -> dict:
    """Read a JSON file, naming the file and its producer on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path} is missing or not valid JSON ({exc}); it is written by rule "
                               f"'{producer_of(path)}'") from exc


def _clean(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return obj


def save_model(path: str | Path, model: torch.nn.Module, arch: dict, **extra) -> None:
    """Save {'arch': architecture as data, 'state_dict': tensors, **extra} atomically (e.g. masks)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch({"arch": arch, "state_dict": state, **extra}, path)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a model saved by `save_model` → (model on device, arch dict, the whole checkpoint dict)."""
    ckpt = load_torch(path, what="model checkpoint")
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "state_dict" not in ckpt:
        raise CorruptFileError(f"model checkpoint {path} lacks 'arch'/'state_dict'; {regenerate_hint(path)}")
    model = build_model(ckpt["arch"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"model checkpoint {path} does not match its architecture: {exc}") from exc
    return place(model, device), ckpt["arch"], ckpt
