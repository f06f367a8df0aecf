"""One function per workflow stage, from loaded inputs to (model, metrics fields).

The Snakemake scripts only read files, call these and write files; a notebook can call them directly.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from prunelab.data import normalize
from prunelab.metrics import evaluate
from prunelab.models import build_model, place
from prunelab.records import DenseLatency, cost_fields, dense_latency, dense_summary
from prunelab.regularizers import regularizer_loss
from prunelab.train import seed_everything, train_model

log = logging.getLogger("prunelab.pipeline")


def architecture_for(spec: dict, data: dict) -> dict:
    """Architecture dict for a config entry {name, options} adapted to the dataset's input and classes."""
    return {"name": spec["name"], "options": dict(spec.get("options") or {}), "in_shape": list(data["in_shape"]),
            "num_classes": int(data["num_classes"]), "shapes": None}


def split_tensors(data: dict, split: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N×C×H×W) and labels of one split, on `device`."""
    d = data[split]
    x = normalize(d["x"].to(device), data["mean"].to(device), data["std"].to(device))
    return x, d["y"].to(device)


def test_fields(model: nn.Module, data: dict, device) -> dict:
    """top1_test / top5_test / loss_test: the single read of the test split for this model; train_size and
    test_size: the split sizes the numbers come from (dataset.max_train / max_test may cap them)."""
    x, y = split_tensors(data, "test", device)
    res = evaluate(model, x, y)
    return {"top1_test": res["top1"], "top5_test": res["top5"], "loss_test": res["loss"],
            "train_size": len(data["train"]["y"]), "test_size": len(y)}


def val_top1(model: nn.Module, data: dict, device) -> float:
    x, y = split_tensors(data, "val", device)
    return evaluate(model, x, y)["top1"]


def train_baseline(data: dict, spec: dict, train_cfg: dict, seed: int, device: torch.device,
                   regularizer_cfg: dict | None = None, on_epoch=None):
    """Train a dense model from scratch → (model, arch, result). regularizer_cfg (regime 'pat'):
    {kind, beta}: β·R added to the loss (β = 0 gives standard training bit for bit)."""
    arch = architecture_for(spec, data)
    seed_everything(seed)
    model = place(build_model(arch), device)
    with regularizer_loss(model, regularizer_cfg) as extra_loss:
        result = train_model(model, data, train_cfg, device, seed, extra_loss=extra_loss, on_epoch=on_epoch)
    return model, arch, result


def model_fields(model: nn.Module, data: dict, dense: dict, device, latency_cfg: dict,
                 dense_latency: DenseLatency | None = None) -> dict:
    """Cost fields (size, MACs, latency), top1_val and the test fields of a model, for metrics.json: every
    evaluation a job records, each split read once. dense_latency (from `dense_reference`; None for a
    baseline): the model is timed interleaved with the dense one."""
    fields = cost_fields(model, data["in_shape"], dense, device, dense_latency, latency_cfg)
    fields["top1_val"] = val_top1(model, data, device)
    fields.update(test_fields(model, data, device))
    return fields


def dense_reference(dense_model: nn.Module, data: dict, device, latency_cfg: dict) -> tuple[dict, DenseLatency]:
    """Dense baseline's sizes and its timing form for this job: (dense_summary, DenseLatency). `model_fields`
    times each pruned model interleaved with it (median of per-round speedups, with their spread)."""
    shape = data["in_shape"]
    return dense_summary(dense_model, shape), dense_latency(dense_model, shape, device, latency_cfg)


def calibration_subset(data: dict, samples: int, seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `samples` images of a seeded permutation of the TRAIN split (normalised), and their labels."""
    x, y = split_tensors(data, "train", "cpu")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[: min(samples, len(x))]
    return x[idx].to(device), y[idx].to(device)


def collect_baseline_statistics(model: nn.Module, data: dict, needs: list[str] | set[str], stats_cfg: dict,
                                seed: int, device, lrp: dict | None = None) -> dict:
    """Statistics `needs` (see prunelab.methods.required_statistics) of a trained model on its calibration subset.

    lrp: {"alpha", "beta"} of the LRP-αβ rule, for the "relevance" statistic (the frs method's options).
    """
    from prunelab.stats import collect_statistics

    needs = set(needs)
    if "relevance" in needs and lrp is None:
        raise ValueError("statistic 'relevance' needs the LRP rule's alpha and beta (the frs options)")
    x, y = calibration_subset(data, stats_cfg["samples"], seed)
    log.info("collecting %s on %d calibration samples (of %d requested)", sorted(needs), len(x),
             stats_cfg["samples"])
    t0 = time.perf_counter()
    rule = {"lrp_alpha": lrp["alpha"], "lrp_beta": lrp["beta"]} if lrp else {}
    stats = collect_statistics(model, x, y, needs, int(data["num_classes"]), stats_cfg["batch_size"], device, **rule)
    log.info("computed %s for %d layers on %d samples in %.2f s", sorted(needs), len(stats["layers"]), len(x),
             time.perf_counter() - t0)
    return stats
