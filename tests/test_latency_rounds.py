"""Measured speedups: dense and pruned models timed interleaved in rounds, the median of per-round ratios."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunelab.measure.evaluation import cost_fields, dense_summary
from prunelab.measure.latency import DenseLatency, dense_latency, interleaved_ms, ratio_summary


def test_outlier_round_does_not_own_the_speedup():
    # a 2x faster pruned model; one round caught a burst of machine load (22.4 ms instead of 0.5 ms)
    dense = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0, 1.0]
    pruned = [0.5, 0.55, 0.45, 0.5, 0.525, 0.475, 0.5, 22.4, 0.5]
    s = ratio_summary(dense, pruned)
    ratios = np.array(dense) / np.array(pruned)
    assert s["median"] == pytest.approx(2.0)
    assert (s["q25"], s["q75"]) == pytest.approx(tuple(np.percentile(ratios, [25, 75])))
    assert s["iqr"] == pytest.approx(0.0, abs=1e-12)
    assert np.mean(dense) / np.mean(pruned) < 0.5  # what a ratio of means would have reported


class _Recorder(nn.Module):
    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_rounds_alternate_the_order():
    log: list[str] = []
    a_ms, b_ms = interleaved_ms(_Recorder("a", log), _Recorder("b", log), (3,), 2, "cpu", warmup=1, rounds=4)
    assert len(a_ms) == len(b_ms) == 4 and all(t >= 0 for t in a_ms + b_ms)
    assert "".join(log) == "ab" + "ab" + "ba" + "ab" + "ba"


def test_cost_fields_records_interleaved_speedup_and_spread():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    pruned = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    cfg = {"warmup": 1, "repeats": 5, "compile": False}
    ref = dense_latency(dense, (1, 8, 8), "cpu", cfg)
    assert isinstance(ref, DenseLatency) and ref["form"] == "bn-folded"
    f = cost_fields(pruned, (1, 8, 8), dense_summary(dense, (1, 8, 8)), torch.device("cpu"), ref, cfg)
    assert f["latency_rounds"] == 5 and f["latency_speedup"] > 0
    assert f["latency_speedup_q25"] <= f["latency_speedup"] <= f["latency_speedup_q75"]
    assert f["latency_speedup_iqr"] == pytest.approx(f["latency_speedup_q75"] - f["latency_speedup_q25"])
    base = cost_fields(dense, (1, 8, 8), dense_summary(dense, (1, 8, 8)), torch.device("cpu"), None, cfg)
    assert base["latency_speedup"] == 1.0 and "latency_speedup_iqr" not in base
