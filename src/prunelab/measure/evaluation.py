"""Evaluation, one path: accuracy on each split read once, and the cost fields (size, MACs, latency)
of metrics.json against the dense baseline."""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunelab import measure as M
from prunelab.data import split_tensors
from prunelab.measure import evaluate
from prunelab.measure.latency import DenseLatency, dense_latency, latency_ms, paired_latency


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


def budget_fields(model: nn.Module, result, budgets: dict[int, int], fields: dict, data: dict, device) -> list[dict]:
    """One entry per fine-tuning budget, ascending: {budget_steps, best_epoch, top1_val, top1_test, top5_test,
    loss_test} of the model selected within it. budgets: {steps: epoch it ends after}; result: the one fine-tuning
    run's TrainResult (None: no fine-tuning), whose snapshots {epoch: object with best_epoch and state} give the
    smaller budgets' models; `model` (the run's own choice, the largest budget) has the accuracy `fields`
    (model_fields) and supplies the architecture; it is left as it is."""
    largest = max(budgets, default=0)
    out = []
    for steps, epoch in sorted(budgets.items()):
        if steps == largest:
            break
        snap = result.snapshots[epoch]
        chosen = copy.deepcopy(model)
        chosen.load_state_dict(snap.state)
        test = test_fields(chosen, data, device)
        out.append({"budget_steps": steps, "best_epoch": snap.best_epoch, "top1_val": val_top1(chosen, data, device),
                    **{k: test[k] for k in ("top1_test", "top5_test", "loss_test")}})
    out.append({"budget_steps": largest, "best_epoch": result.best_epoch if result else None,
                **{k: fields[k] for k in ("top1_val", "top1_test", "top5_test", "loss_test")}})
    return out


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


def fields_against(model: nn.Module, dense_model: nn.Module, data: dict, device, latency_cfg) -> dict:
    """`model_fields` of `model` with `dense_model` as its size, MACs and latency reference (a job that measures
    one model against its dense baseline)."""
    dense_sizes, dense_timing = dense_reference(dense_model, data, device, latency_cfg)
    return model_fields(model, data, dense_sizes, device, latency_cfg, dense_timing)


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


def _prunable_weights(model: nn.Module, nonzero: bool) -> int:
    """Number of Conv2d/Linear weights (only the nonzero ones when `nonzero`)."""
    layers = [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(int(torch.count_nonzero(w)) if nonzero else w.numel() for w in layers)
