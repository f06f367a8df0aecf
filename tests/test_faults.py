"""Surviving faults: a killed training job, corrupt inputs, determinism of fresh runs, atomic checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (EXP, TINY, assert_equal_nested, assert_same_results, copy_run, job_blocks, make_workdir,
                      run_snakemake, start_snakemake, stop_group, tiny_targets, workflow_env)


# ------------------------------------------------------------------------------------- a killed training job

def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _pid_writing(root_pid: int, path: Path) -> int | None:
    """The descendant of root_pid that holds `path` open (a job's process holds its log file)."""
    target = str(path.resolve())
    for pid in _descendants(root_pid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the job's process")
def test_killed_training_job_reruns_only_that_job(tmp_path):
    """SIGKILL one seed's train_baseline mid-training while the other seed's whole chain is done: the rerun
    plans that seed's jobs (and the report) only, and redoes the killed job without touching finished outputs."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(archs={"mlp": cfg["archs"]["mlp"]}, seeds=[0, 1], methods={"magnitude": {}},
               granularities={"unstructured": [0.5]})
    cfg["train"]["epochs"] = 400           # long enough to be killed mid-way
    wd = make_workdir(tmp_path / "wf")
    (wd / "tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = wd / "results" / EXP
    chain0 = f"results/{EXP}/finetuned/mlp/standard/seed0/magnitude/unstructured/r0.50/metrics.json"
    run_snakemake(wd, [chain0], log_name="phase1.out").check()
    outputs = ("data", "baseline", "stats", "scores", "pruned", "finetuned")
    done_before = {p: p.stat().st_mtime_ns for d in outputs for p in (res / d).rglob("*") if p.is_file()}
    assert any("seed0" in str(p) and p.name == "model.pt" for p in done_before)

    # phase 2: the rest of the DAG on one core; the first job is seed 1's training: kill it while it trains
    log1 = res / "logs" / "train_baseline" / "mlp" / "standard" / "seed1.log"
    proc, out2 = start_snakemake(wd, tiny_targets(), cores=1, log_name="phase2.out")
    victim = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if log1.exists() and "epoch 1/" in log1.read_text(errors="replace"):
                victim = _pid_writing(proc.pid, log1)
                if victim:
                    break
            time.sleep(0.05)
        assert victim, f"seed 1's training never started; snakemake said:\n{out2.read_text()[-3000:]}"
        os.kill(victim, signal.SIGKILL)
        proc.wait(120)
    finally:
        stop_group(proc)
    text2 = out2.read_text()
    assert proc.returncode != 0, "snakemake reported success although its job was killed"
    assert "Error in rule train_baseline" in text2
    epochs_seen = len(re.findall(r"epoch \d+/400:", log1.read_text()))
    assert 0 < epochs_seen < 400, f"the job was not killed mid-training ({epochs_seen} epochs logged)"
    assert not (res / "baseline/mlp/standard/seed1/metrics.json").exists()
    assert not (res / "baseline/mlp/standard/seed1/model.pt").exists(), "a killed job left a checkpoint"

    # the rerun plan: seed 1's chain + report/track; nothing of seed 0, no data preparation
    plan = run_snakemake(wd, tiny_targets(), "--dry-run", log_name="plan.out").check()
    jobs = job_blocks(plan.out)
    rules = {r for r, _, _ in jobs}
    assert ("train_baseline", {"arch": "mlp", "regime": "standard", "seed": "1"}) in [(r, w) for r, w, _ in jobs]
    assert "prepare_data" not in rules, "the rerun would prepare the data again"
    seeds = {w.get("seed") for _, w, _ in jobs if "seed" in w}
    assert seeds == {"1"}, f"the rerun would redo jobs of other seeds: {sorted(seeds)}"
    assert {"collect_stats", "score", "prune_finetune", "report"} <= rules
    # seed 1's chain = 4 jobs, plus the aggregating report, deferred `track` and `all`; nothing else
    assert len(jobs) == 4 + len(rules & {"report", "track", "all"}), f"unexpected rerun plan: {jobs}"

    # the real rerun of the killed job: it completes and no finished output changes
    run_snakemake(wd, [f"results/{EXP}/baseline/mlp/standard/seed1/metrics.json"], log_name="phase3.out").check()
    ran = job_blocks((wd / "phase3.out").read_text())
    assert [(r, w.get("seed")) for r, w, _ in ran] == [("train_baseline", "1")]
    changed = [str(p) for p, m in done_before.items() if not p.exists() or p.stat().st_mtime_ns != m]
    assert not changed, f"finished outputs were rewritten: {changed}"
    assert json.loads((res / "baseline/mlp/standard/seed1/metrics.json").read_text())["epochs"] == 400


# ------------------------------------------------------------------------------ corrupt inputs downstream

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _error_line(text: str, path: str) -> str:
    """The exception message (it may span lines) that names `path` as truncated or corrupt."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if path in ln and ("corrupt" in ln or "truncated" in ln)]
    assert starts, f"no error message names {path}:\n{text[-4000:]}"
    block = []
    for ln in lines[starts[-1]:]:
        if block and re.match(r"^(RuleException|CalledProcessError|Error in rule|\[\w{3} \w{3} )", ln):
            break
        block.append(ln)
    return "\n".join(block)


@pytest.mark.e2e
def test_corrupt_checkpoint_stats_and_scores_fail_naming_file_and_producer(tiny_reference, tmp_path):
    """A truncated baseline model.pt, a garbage stats.pt and a truncated score file given to collect_stats,
    score and prune_finetune: each job fails with a message naming the file, its producing rule and the
    `--forcerun <rule>` that regenerates it."""
    wd = copy_run(tiny_reference, tmp_path / "wf")
    r = f"results/{EXP}"
    sub = "magnitude/unstructured/r0.50"
    cases = {   # corrupted file -> (its producer, the downstream output whose job reads it)
        f"{r}/baseline/mlp/standard/seed0/model.pt": ("train_baseline", f"{r}/stats/mlp/standard/seed0/stats.pt"),
        f"{r}/stats/cnn/standard/seed0/stats.pt": ("collect_stats", f"{r}/scores/cnn/standard/seed0/magnitude.pt"),
        f"{r}/scores/cnn/standard/seed0/screening.pt": ("score",
                                                        f"{r}/finetuned/cnn/standard/seed0/screening/{sub[10:]}/model.pt"),
    }
    for bad, (_, downstream) in cases.items():
        before = (wd / bad).stat()
        if bad.endswith("stats.pt"):
            (wd / bad).write_bytes(b"\x00garbage, not a torch file" * 10)
        else:
            _truncate(wd / bad)
        # corrupted in place, its time kept: only the missing downstream outputs make jobs run (a corrupt stats.pt
        # with a new time would also redo the cnn score file that is corrupted on purpose)
        os.utime(wd / bad, ns=(before.st_atime_ns, before.st_mtime_ns))
        (wd / downstream).unlink()
    # mtime triggers only: the copied run must not be redone because a rule changed since it was made
    run = run_snakemake(wd, [d for _, d in cases.values()], "--keep-going", "--rerun-triggers", "mtime",
                        "--allowed-rules", "collect_stats", "score", "prune_finetune")
    planned = {r for r, _, _ in job_blocks(run.out)}
    assert planned == {"collect_stats", "score", "prune_finetune"}, planned
    assert run.rc != 0, "jobs reading corrupt files succeeded"
    for bad, (producer, downstream) in cases.items():
        line = _error_line(run.out, bad)
        assert producer in line and f"--forcerun {producer}" in line, line
        assert not (wd / downstream).exists()


@pytest.mark.e2e
def test_truncated_dataset_fails_naming_file_and_prepare_data(tiny_reference, tmp_path):
    wd = copy_run(tiny_reference, tmp_path / "wf")
    data = f"results/{EXP}/data/digits.pt"
    _truncate(wd / data)
    target = f"results/{EXP}/baseline/mlp/standard/seed0/metrics.json"
    for f in ("metrics.json", "model.pt"):
        (wd / target).with_name(f).unlink()
    run = run_snakemake(wd, [target], "--rerun-triggers", "mtime", "--allowed-rules", "train_baseline")
    assert run.rc != 0
    line = _error_line(run.out, data)
    assert "--forcerun prepare_data" in line, line


# ------------------------------------------------------------------------------------------------ determinism

@pytest.mark.e2e
def test_two_fresh_runs_give_identical_results(tiny_reference, tiny_live_server):
    """Same config, two fresh results/ folders: identical metrics (all deterministic keys), results.csv, data,
    checkpoints, statistics and scores, bit for bit. The second run is the live-tracking run (shared with
    test_tracking, to spare a third run of the whole DAG): how a run is tracked must not change its numbers."""
    other, _, _ = tiny_live_server
    n = assert_same_results(tiny_reference, other)
    assert n >= 2
    ra, rb = tiny_reference / "results" / EXP, other / "results" / EXP
    tensors = sorted(p.relative_to(ra) for p in ra.rglob("*.pt"))
    assert tensors
    for rel in tensors:
        a = torch.load(ra / rel, map_location="cpu", weights_only=True)
        b = torch.load(rb / rel, map_location="cpu", weights_only=True)
        assert_equal_nested(a, b, str(rel))


# -------------------------------------------------------------------------------------- atomic checkpoints

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _half_then_crash(obj, f, *a, **kw):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("writer", ["save_model", "save_torch", "save_statistics", "save_prepared"])
def test_crash_mid_write_leaves_no_file(writer, tmp_path, monkeypatch):
    """torch.save raising half-way: no file at the target, no temporary file left, an older file untouched."""
    from prunelab import io as pio
    from prunelab.data import save_prepared
    from prunelab.stats import save_statistics

    target = tmp_path / "out" / "model.pt"
    model = torch.nn.Linear(3, 2)
    call = {
        "save_model": lambda: pio.save_model(target, model, {"name": "mlp"}),
        "save_torch": lambda: pio.save_torch({"w": torch.ones(3)}, target),
        "save_statistics": lambda: save_statistics({"layers": {}, "needs": [], "version": 1}, target),
        "save_prepared": lambda: save_prepared(_tiny_prepared(), target),
    }[writer]
    call()                                         # a complete older file
    before = target.read_bytes()
    monkeypatch.setattr(torch, "save", _half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        call()
    assert target.read_bytes() == before, "the crash damaged the previous complete file"
    assert _leftovers(target.parent) == ["model.pt"]
    target.unlink()
    with pytest.raises(OSError, match="simulated"):
        call()
    assert _leftovers(target.parent) == [], "a crashed write left a file behind"


def test_crash_mid_json_write_leaves_no_file(tmp_path, monkeypatch):
    from prunelab import io as pio

    target = tmp_path / "metrics.json"

    def boom(fd):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        pio.save_json({"top1_test": 1.0}, target)
    assert _leftovers(tmp_path) == []


def _tiny_prepared() -> dict:
    """The smallest valid prepared dataset, built by the library itself (digits, 30 training images)."""
    from prunelab.data import prepare_dataset

    return prepare_dataset("digits", "data", download=False, val_fraction=0.2, split_seed=0, image_size=None,
                           max_train=30)


def test_process_killed_mid_write_leaves_no_complete_looking_file(tmp_path):
    """SIGKILL while torch.save is writing (no cleanup can run): the target never appears; at most a hidden
    .tmp file is left, which no rule reads."""
    target = tmp_path / "model.pt"
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, torch
from prunelab.io import save_torch
real = torch.save
def slow(obj, f, *a, **kw):
    f.write(b"PK\\x03\\x04 the first half"); f.flush()
    print("HALF", flush=True)
    time.sleep(600)
torch.save = slow
save_torch({{"w": torch.ones(1000)}}, {str(target)!r})
"""], stdout=subprocess.PIPE, text=True, env=workflow_env())
    try:
        assert child.stdout.readline().strip() == "HALF"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not target.exists()
    left = _leftovers(tmp_path)
    assert all(n.startswith(".model.pt.") and n.endswith(".tmp") for n in left), left
