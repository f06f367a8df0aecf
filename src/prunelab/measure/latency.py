"""Latency: each model timed in its inference form (ms per batch of 1 and 64), interleaved with the dense
model in rounds."""

from __future__ import annotations

import torch
from torch import nn

from prunelab import measure as M
from prunelab.measure.deploy import inference_model, latency_form
from prunelab.settings import LatencySettings


def _settings(cfg: LatencySettings | dict | None) -> tuple[int, int, bool]:
    """(timed repeats, warm-up calls, compiled) of the `latency` settings (the schema's defaults for missing keys)."""
    cfg = LatencySettings.of(cfg)
    return cfg.repeats, max(cfg.warmup, 1) if cfg.compile else cfg.warmup, cfg.compile  # never time compilation


def timing_form(model: nn.Module, in_shape, device, latency_cfg: dict | None = None) -> nn.Module:
    """`model` in the form latency is timed in (prunelab.measure.deploy.inference_model, checked against the model)."""
    check = torch.randn(2, *in_shape, generator=torch.Generator().manual_seed(0))
    return inference_model(model, device, _settings(latency_cfg)[2], check_input=check)


def latency_ms(model: nn.Module, in_shape, device: torch.device | str, latency_cfg: dict | None = None) -> dict:
    """Median forward time of `model` at batch 1 and 64 in its inference form (`prunelab.measure.deploy`), in ms.

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
