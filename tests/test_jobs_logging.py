"""A failed job explains itself in the rule's log file (the file Snakemake points to): traceback, then as the last
line the one-line cause."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

# Runs a workflow script as Snakemake's `script:` does (a fresh interpreter, a global `snakemake` object).
RUNNER = textwrap.dedent("""
    import runpy, sys
    from types import SimpleNamespace as NS

    class Files(list):
        def __init__(self, **named):
            super().__init__(named.values())
            self.__dict__.update(named)

    stats, model, log, out = sys.argv[1:5]
    smk = NS(input=Files(model=model, stats=stats), output=Files(scores=out), log=Files(log=log),
             params=NS(method_config={}), wildcards=NS(method="magnitude"), threads=1, rule="score")
    runpy.run_path(sys.argv[5], init_globals={"snakemake": smk}, run_name="__main__")
""")


def run_score(tmp_path, stats_bytes: bytes):
    """Run scripts/score.py on a tiny MLP and the given stats.pt bytes → (process, lines of the rule's log)."""
    from prunelab.io import save_model
    from prunelab.models import build_model

    arch = {"name": "mlp", "options": {"hidden": [4]}, "in_shape": [1, 4, 4], "num_classes": 3}
    model_path = tmp_path / "results/e/baseline/mlp/standard/0/model.pt"
    save_model(model_path, build_model(arch), arch)
    stats = tmp_path / "results/e/stats/mlp/standard/0/stats.pt"
    stats.parent.mkdir(parents=True)
    stats.write_bytes(stats_bytes)
    log = tmp_path / "score.log"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(stats), str(model_path), str(log),
                           str(tmp_path / "scores.pt"), str(REPO / "scripts/score.py")],
                          capture_output=True, text=True, timeout=120)
    return proc, log.read_text().splitlines()


def test_truncated_statistics_leave_their_cause_in_the_score_log(tmp_path):
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"layers": {"fc1": torch.ones(100)}, "needs": []}, buf)
    proc, lines = run_score(tmp_path, buf.getvalue()[:200])
    assert proc.returncode != 0
    assert "score started" in lines[0]
    assert "Traceback (most recent call last):" in lines
    assert any("load_statistics" in line for line in lines)  # the traceback names where it failed
    last = lines[-1]
    assert last.startswith("ERROR CorruptFileError: statistics file ") and "stats.pt is truncated or corrupt" in last
    assert last.endswith("regenerate it with: snakemake --cores all --forcerun collect_stats")
    assert "Traceback" in proc.stderr  # the console still shows it


def test_failure_line_is_one_line():
    from prunelab.jobs import failure_line

    assert failure_line(ValueError("a\n  b\tc ")) == "ERROR ValueError: a b c"
    assert failure_line(KeyError("k")) == "ERROR KeyError: 'k'"
    assert failure_line(MemoryError()) == "ERROR MemoryError"


def test_training_logs_epoch_progress_and_time_left(data, caplog):
    import re

    import torch

    from prunelab.models import architecture_for, build_model
    from prunelab.training import train_model

    torch.manual_seed(0)
    model = build_model(architecture_for({"name": "mlp", "options": {"hidden": [8]}}, data))
    cfg = {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine",
           "augment": False, "select": "last"}
    with caplog.at_level("INFO", logger="prunelab"):
        result = train_model(model, data, cfg, torch.device("cpu"), 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "prunelab.training"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    pattern = re.compile(r"epoch (\d)/3: ([\d.]+) s/epoch, ([\d.]+) s left; loss ([\d.]+), train top-1 [\d.]+ %, "
                         r"val top-1 ([\d.]+) %")
    for line, rec in zip(lines, result.history):
        m = pattern.match(line)
        assert m, line
        k, per_epoch, left = int(m[1]), float(m[2]), float(m[3])
        assert k == rec["epoch"] and float(m[4]) == round(rec["loss_train"], 4)
        assert float(m[5]) == round(rec["top1_val"], 2)
        assert left == pytest.approx(per_epoch * (3 - k), abs=0.06)
    assert " s/epoch, 0.0 s left; " in lines[-1]


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (59.94, "59.9 s"), (61, "1 min 01 s"),
                                           (3599, "59 min 59 s"), (3600, "1 h 00 min"), (7 * 3600 + 125, "7 h 02 min")])
def test_format_seconds(seconds, text):
    from prunelab.training import format_seconds

    assert format_seconds(seconds) == text


def test_statistics_pass_logs_what_it_computed(data, caplog):
    import torch

    from prunelab.models import architecture_for, build_model
    from prunelab.stats import collect_baseline_statistics

    model = build_model(architecture_for({"name": "mlp", "options": {"hidden": [8]}}, data))
    with caplog.at_level("INFO", logger="prunelab"):
        stats = collect_baseline_statistics(model, data, ["activations"], {"samples": 1000, "batch_size": 32}, 0,
                                            torch.device("cpu"))
    last = caplog.records[-1].getMessage()
    n = len(data["train"]["y"])  # fewer than the 1000 requested
    assert last.startswith(f"computed {sorted(stats['needs'])} for {len(stats['layers'])} layers on {n} samples in ")
    assert last.endswith(" s") and sorted(stats["needs"]) == ["activations"]
    assert f"on {n} calibration samples (of 1000 requested)" in caplog.records[-2].getMessage()
