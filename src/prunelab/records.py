"""metrics.json: one flat record per model, the same keys for every stage (DESIGN §3)."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

import torch
from torch import nn

from prunelab import metrics as M
from prunelab.deploy import inference_model, latency_form
from prunelab.settings import LatencySettings

METRICS_KEYS = (
    "experiment", "dataset", "arch", "regime", "seed", "method", "granularity", "stage", "ratio_requested",
    "sparsity_achieved", "params_total", "params_nonzero", "compression",
    "macs_dense", "macs_effective", "speedup_theoretical",
    "latency_ms_b1", "latency_ms_b64", "latency_speedup", "device",
    "top1_val", "top1_test", "top5_test", "loss_test",
    "top1_test_before_finetune", "epochs", "wall_s", "git_commit", "config_hash",
    "source_hash",
)
STAGES = ("baseline", "pruned", "finetuned", "gradual", "scratch", "space")


def config_hash(cfg) -> str:
    """Short sha256 of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@functools.cache
def git_commit() -> str:
    """HEAD of the repository holding this package ('<12 hex>', '<12 hex>-dirty' when tracked files have
    uncommitted changes), or 'unknown' outside git. Computed once per process."""
    return git_state(Path(__file__).resolve().parent)


def git_state(folder: Path) -> str:
    """`git_commit` of the repository holding `folder`."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=folder, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else ""
        if not commit:
            return "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=folder, timeout=10)
        return commit + "-dirty" if status.returncode or status.stdout.strip() else commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def source_hash() -> str:
    """12-hex hash of the library's source (src/prunelab/**/*.py), committed or not: identifies the code that
    made a result. Computed once per process (a few ms)."""
    return tree_hash(Path(__file__).resolve().parent)


def tree_hash(root: Path) -> str:
    """12-hex sha256 over every *.py under `root`: relative path and bytes, in sorted path order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def empty_record(**fields) -> dict:
    """A record with every DESIGN §3 key set to None, then `fields` (extra keys allowed)."""
    rec = dict.fromkeys(METRICS_KEYS)
    rec.update(fields)
    if rec["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {rec['stage']!r}")
    return rec


def dense_summary(model: nn.Module, in_shape) -> dict:
    """Reference sizes of a dense model: {'params', 'prunable_weights', 'macs'} (MACs for one input)."""
    return {"params": M.count_params(model), "prunable_weights": _prunable_weights(model, nonzero=False),
            "macs": M.count_macs(model, in_shape)}


def cost_fields(model: nn.Module, in_shape, dense: dict, device: torch.device,
                dense_latency: dict | None = None, latency_cfg: dict | None = None) -> dict:
    """Size, MACs and latency of `model` (masked or physically pruned) against its dense baseline.

    dense: `dense_summary` of the baseline. dense_latency: the dense model's `DenseLatency` from
    `pipeline.dense_reference` (None for the baseline itself, whose latency speedup is 1): the dense and the pruned
    model are then timed interleaved in rounds (`interleaved_ms`) and latency_speedup is the median of the per-round
    dense/pruned ratios at batch 64, with their quartiles (latency_speedup_q25/_q75/_iqr) and the number of rounds.
    A plain {'b1', 'b64'} dict (ms) gives the ratio of medians, without spread.
    sparsity_achieved = fraction of the dense model's Conv/Linear weights that are zero or removed.
    Returns the cost keys of metrics.json.
    """
    latency_cfg = latency_cfg or {}
    nonzero = M.count_nonzero_params(model)
    macs_eff = M.effective_macs(model, in_shape)
    spread = {}
    if isinstance(dense_latency, DenseLatency):
        lat = paired_latency(dense_latency.model, model, in_shape, device, latency_cfg)
        spread = {k: lat[k] for k in ("latency_speedup_q25", "latency_speedup_q75", "latency_speedup_iqr",
                                      "latency_rounds", "latency_ms_b64_dense")}
        speedup = lat["speedup"]
    else:
        lat = latency_ms(model, in_shape, device, latency_cfg)
        ref64 = dense_latency["b64"] if dense_latency else lat["b64"]
        speedup = ref64 / lat["b64"] if lat["b64"] > 0 else None
    return {
        "sparsity_achieved": 1.0 - _prunable_weights(model, nonzero=True) / max(dense["prunable_weights"], 1),
        "params_total": M.count_params(model),
        "params_nonzero": nonzero,
        "compression": dense["params"] / max(nonzero, 1),
        "macs_dense": dense["macs"],
        "macs_effective": macs_eff,
        "speedup_theoretical": dense["macs"] / max(macs_eff, 1),
        "latency_ms_b1": lat["b1"],
        "latency_ms_b64": lat["b64"],
        "latency_speedup": speedup,
        **spread,
        "latency_form": lat["form"],
        "device": str(device),
    }


def _settings(cfg: LatencySettings | dict | None) -> tuple[int, int, bool]:
    """(timed repeats, warm-up calls, compiled) of the `latency` settings (the schema's defaults for missing keys)."""
    cfg = LatencySettings.of(cfg)
    return cfg.repeats, max(cfg.warmup, 1) if cfg.compile else cfg.warmup, cfg.compile  # never time compilation


def timing_form(model: nn.Module, in_shape, device, latency_cfg: dict | None = None) -> nn.Module:
    """`model` in the form latency is timed in (prunelab.deploy.inference_model, checked against the model)."""
    check = torch.randn(2, *in_shape, generator=torch.Generator().manual_seed(0))
    return inference_model(model, device, _settings(latency_cfg)[2], check_input=check)


def latency_ms(model: nn.Module, in_shape, device: torch.device | str, latency_cfg: dict | None = None) -> dict:
    """Median forward time of `model` at batch 1 and 64 in its inference form (`prunelab.deploy`), in ms.

    latency_cfg: {'warmup', 'repeats', 'compile'}. Returns {'b1', 'b64', 'form'}. The model is not changed.
    """
    reps, warm, compiled = _settings(latency_cfg)
    form = timing_form(model, in_shape, device, latency_cfg)
    return {"b1": M.measure_latency(form, in_shape, 1, device, warm, reps),
            "b64": M.measure_latency(form, in_shape, 64, device, warm, reps), "form": latency_form(compiled)}


class DenseLatency(dict):
    """The dense model of a job, in its timing form (attribute `model`), to time pruned models against it
    interleaved; as a dict {'form': name}."""

    def __init__(self, model: nn.Module, form: str):
        super().__init__(form=form)
        self.model = model


def dense_latency(dense_model: nn.Module, in_shape, device, latency_cfg: dict | None = None) -> DenseLatency:
    """`DenseLatency` of a dense model (its timing form is built once per job)."""
    form = timing_form(dense_model, in_shape, device, latency_cfg)
    return DenseLatency(form, latency_form(_settings(latency_cfg)[2]))


@torch.no_grad()
def interleaved_ms(a: nn.Module, b: nn.Module, in_shape, batch: int, device, warmup: int,
                   rounds: int) -> tuple[list[float], list[float]]:
    """Forward times (ms) of two models timed alternately on one input: per round one pass of each, the order
    swapped every round (a, b, b, a, ...), so drift and bursts of machine load hit both. Returns (a_ms, b_ms)."""
    import time

    device = torch.device(device)
    x = torch.randn(batch, *in_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        a(x), b(x)
    sync()
    out = {0: [], 1: []}
    for r in range(rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            (a, b)[k](x)
            sync()
            out[k].append((time.perf_counter() - t0) * 1000.0)
    return out[0], out[1]


def ratio_summary(dense_ms, pruned_ms) -> dict:
    """Per-round speedups dense/pruned: {'median', 'q25', 'q75', 'iqr'} (one outlier round moves none of them much)."""
    import numpy as np

    r = np.asarray(dense_ms, float) / np.asarray(pruned_ms, float)
    q25, med, q75 = (float(v) for v in np.percentile(r, [25, 50, 75]))
    return {"median": med, "q25": q25, "q75": q75, "iqr": q75 - q25}


def paired_latency(dense_form: nn.Module, model: nn.Module, in_shape, device, latency_cfg: dict | None = None) -> dict:
    """Pruned `model` timed interleaved with a dense timing form: medians (ms) at batch 1 and 64, the median speedup
    at batch 64 over `repeats` rounds and its quartiles."""
    import statistics

    reps, warm, compiled = _settings(latency_cfg)
    form = timing_form(model, in_shape, device, latency_cfg)
    d1, p1 = interleaved_ms(dense_form, form, in_shape, 1, device, warm, reps)
    d64, p64 = interleaved_ms(dense_form, form, in_shape, 64, device, warm, reps)
    s = ratio_summary(d64, p64)
    return {"b1": statistics.median(p1), "b64": statistics.median(p64), "form": latency_form(compiled),
            "speedup": s["median"], "latency_speedup_q25": s["q25"], "latency_speedup_q75": s["q75"],
            "latency_speedup_iqr": s["iqr"], "latency_rounds": reps, "latency_ms_b64_dense": statistics.median(d64)}


def _prunable_weights(model: nn.Module, nonzero: bool) -> int:
    """Number of Conv2d/Linear weights (only the nonzero ones when `nonzero`)."""
    layers = [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(int(torch.count_nonzero(w)) if nonzero else w.numel() for w in layers)
