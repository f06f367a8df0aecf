"""Scratch control (Liu et al. 2019): the pruned architecture at random init, trained (rule train_scratch)."""
import json
import math
import shutil

import pytest
import torch
import yaml
from torch import nn

from conftest import TINY, copy_run, job_blocks, snakemake
from prunelab.io import load_model
from prunelab.models import architecture_for, build_model, prunable_layers
from prunelab.pruning.gradual import scratch_model, train_scratch
from prunelab.pruning.stage import prune_model
from prunelab.pruning.schedules import scratch_steps
from prunelab.records import METRICS_KEYS
from prunelab.settings import FinetuneSettings, TrainSettings


@pytest.fixture(scope="module")
def pruned(data):
    """A cnn pruned to half its channels by L1 norm (untrained weights stand in for trained ones)."""
    arch = architecture_for({"name": "cnn", "options": {"widths": [16, 32, 64]}}, data)
    torch.manual_seed(0)
    model = build_model(arch).eval()
    scores = {n: {"unstructured": None, "structured": m.weight.detach().abs().flatten(1).sum(1)}
              for n, m in prunable_layers(model)}
    x = torch.randn(8, *arch["in_shape"])
    return prune_model(model, arch, scores, "structured", 0.5, example_input=x)[:2]


def test_scratch_model_has_pruned_shapes_and_fresh_weights(pruned):
    model, arch = pruned
    fresh = scratch_model(arch, 0)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    assert {n: tuple(p.shape) for n, p in fresh.state_dict().items()} == shapes
    for (n, a), (_, b) in zip(prunable_layers(model), prunable_layers(fresh)):
        assert not torch.equal(a.weight, b.weight), n
    again, other = scratch_model(arch, 0), scratch_model(arch, 1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(fresh.conv3.weight, other.conv3.weight)
    # resized convs get the zoo's init (Kaiming-normal, fan_out), not PyTorch's default (std 1/sqrt(3 fan_in))
    w = fresh.conv3.weight.detach()
    assert w.shape[0] < 64
    expected = math.sqrt(2.0 / (w.shape[0] * w[0, 0].numel()))
    assert abs(float(w.std()) / expected - 1) < 0.1
    assert all(float(m.weight.detach().min()) == 1.0 for m in fresh.modules() if isinstance(m, nn.BatchNorm2d))


def test_train_scratch_learns(pruned, data):
    _, arch = pruned
    records = []
    per_epoch = TrainSettings.of({"batch_size": 32}).epoch_steps(len(data["train"]["y"]))
    steps = 7 * per_epoch + per_epoch // 2                 # the eighth epoch is cut short
    model, result = train_scratch(arch, data, {"epochs": 20, "batch_size": 32, "lr": 0.1}, steps, 0, "cpu",
                                  on_epoch=records.append)
    assert len(records) == 8 and result.steps == steps and result.best_top1_val > 40   # 10 classes: chance 10 %
    assert records[-1]["loss_train"] < records[0]["loss_train"]
    assert {n: m.weight.shape for n, m in prunable_layers(model)} == \
        {n: m.weight.shape for n, m in prunable_layers(pruned[0])}


@pytest.mark.e2e
def test_workflow_writes_scratch_metrics(tiny_reference, tmp_path):
    """The scratch job on a copy of the session's tiny run, which holds its baseline and pruned model."""
    wd = copy_run(tiny_reference, tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["scratch"] = {"enabled": True, "ratios": [0.5], "methods": ["magnitude"]}
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rel = "cnn/standard/seed0/magnitude/structured/r0.50"
    root = wd / "results" / cfg["experiment"]
    run = snakemake(wd, "--configfile", "cfg.yaml", "--cores", "2",
                    f"{root.relative_to(wd)}/scratch/{rel}/metrics.json")
    assert [r for r, _, _ in job_blocks(run.stdout)] == ["train_scratch"]   # nothing upstream reran
    rec = json.loads((root / "scratch" / rel / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(rec)
    assert (rec["stage"], rec["method"], rec["granularity"], rec["regime"], rec["ratio_requested"]) == \
        ("scratch", "magnitude", "structured", "standard", 0.5)
    assert rec["top1_test_before_finetune"] is None
    # equal steps (scratch.budget's default): the baseline's optimiser steps plus the whole fine-tuning run
    ft_steps = cfg["finetune"]["epochs"] * FinetuneSettings.of(cfg["finetune"]).epoch_steps(rec["train_size"])
    pruned_rec = json.loads((root / "finetuned" / rel / "metrics.json").read_text())
    assert rec["train_steps"] == rec["steps_total"] == pruned_rec["steps_total"] == \
        cfg["train"]["epochs"] * TrainSettings.of(cfg["train"]).epoch_steps(rec["train_size"]) + ft_steps
    assert rec["scratch_budget"] == "equal_steps"
    assert rec["wall_s"] > 0 and rec["macs_effective"] < rec["macs_dense"] and 0 <= rec["top1_test"] <= 100
    base = json.loads((root / "baseline/cnn/standard/seed0/metrics.json").read_text())
    assert rec["macs_dense"] == base["macs_dense"] and rec["steps_total"] == base["steps_total"] + ft_steps
    scratch, s_arch, _ = load_model(root / "scratch" / rel / "model.pt")
    prune_m, p_arch, _ = load_model(root / "pruned" / rel / "model.pt")
    assert s_arch["shapes"] == p_arch["shapes"]
    assert not torch.equal(scratch.conv2.weight, prune_m.conv2.weight)
    assert (root / "logs/train_scratch/cnn/standard/seed0/magnitude/r0.50.log").exists()
    shutil.rmtree(wd / "results")


def test_scratch_budgets_are_steps_of_the_arms_they_match():
    ft = {"epochs": 4, "steps_per_epoch": 50, "batch_size": 32}
    assert scratch_steps("equal_steps", 1000, ft, 10_000) == 1000 + 4 * 50
    assert scratch_steps("equal_steps", 1000, {"epochs": 2, "batch_size": 100}, 950) == 1000 + 2 * 10
    assert scratch_steps("baseline_epochs", 1000, ft, 10_000) == 1000
