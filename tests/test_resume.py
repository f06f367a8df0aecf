"""Resume state of training jobs (prunelab.training.resume, prunelab.jobs.Job.resume_state): a stopped run continues
where it stopped and ends with the weights and metrics of a run that never stopped, bit for bit on CPU.

The references are uninterrupted runs of the same code: in process for the library hooks and for the jobs stopped
by SIGTERM (what SLURM sends at a time limit; the jobs run in a subprocess), and the same job under another name in
the same workflow run for the jobs Snakemake runs and the test SIGKILLs (the way a lost node or the OOM killer ends
a job). tests/test_cluster.py runs a job past its SLURM time limit.
"""
from __future__ import annotations

import copy
import json
import logging
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

from prunelab.jobs import Job
from prunelab.pruning.gradual import train_gradual
from prunelab.training import train_baseline
from prunelab.training.resume import ResumeState
from conftest import (DETERMINISTIC_KEYS, EXP, TINY, assert_equal_nested, job_blocks, make_workdir, run_snakemake,
                      start_snakemake, stop_group, workflow_env)

CNN = {"name": "cnn", "options": {"widths": [8, 16, 16]}}
TRAIN = {"epochs": 6, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "augment": True}
GRADUAL = {"interval": 1, "stop_epoch": 3}


class Stop(Exception):
    """Ends a run from inside (an on_epoch hook), as a kill would, after the resume state of an epoch is written."""


def stop_at(epoch: int):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Stop
    return on_epoch


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


@pytest.fixture(scope="module")
def augmented(data):
    """The digits split with random crops on: the batch order and the crops both draw from train_model's generator."""
    return {**data, "augment": {"crop_padding": 1, "hflip": False}}


# ------------------------------------------------------------------------------------------ library hooks

def test_train_model_resumes_bit_for_bit(augmented, tmp_path, caplog):
    """A CNN (BatchNorm, momentum, random crops, best-validation selection) stopped after epoch 4 of 6 and rerun
    from its resume state: weights, history and selected epoch equal an uninterrupted run's."""
    cpu = torch.device("cpu")
    ref, _, ref_result = train_baseline(augmented, CNN, TRAIN, 0, cpu)
    path = tmp_path / "state.pt"
    with pytest.raises(Stop):   # epoch 5's record raises before its state is kept: the file holds epoch 4
        train_baseline(augmented, CNN, TRAIN, 0, cpu, on_epoch=stop_at(5),
                       resume=ResumeState(path, {"every_epochs": 2}))
    assert torch.load(path, weights_only=True)["epoch"] == 4
    seen = []
    with caplog.at_level(logging.INFO, logger="prunelab"):
        model, _, result = train_baseline(augmented, CNN, TRAIN, 0, cpu, on_epoch=seen.append,
                                          resume=ResumeState(path, {"every_epochs": 2}))
    assert "resuming from epoch 4" in caplog.text
    assert [r["epoch"] for r in seen] == [5, 6], "the resumed run trained other epochs than the missing ones"
    assert_same_weights(model, ref)
    assert result.history == ref_result.history
    assert (result.best_epoch, result.best_top1_val) == (ref_result.best_epoch, ref_result.best_top1_val)


def test_finetuning_with_budgets_resumes_bit_for_bit(augmented, tmp_path):
    """Fine-tuning read at two budgets, stopped after epoch 3 of 4 and rerun: the final weights, the optimiser steps
    and the smaller budget's selected model equal an uninterrupted run's (the budgets' snapshots are in the state)."""
    from prunelab.pruning.schedules import finetune_budgets, finetune_model

    cpu = torch.device("cpu")
    dense, _, _ = train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, cpu)
    ft = {"epochs": 4, "steps_per_epoch": 3, "batch_size": 32, "lr": 0.05, "budgets": [6, 12]}
    budgets = finetune_budgets(ft, {}, len(augmented["train"]["y"]))
    ref = copy.deepcopy(dense)
    ref_result = finetune_model(ref, None, augmented, ft, 4, cpu, 0, budgets=budgets)
    path = tmp_path / "state.pt"
    with pytest.raises(Stop):
        finetune_model(copy.deepcopy(dense), None, augmented, ft, 4, cpu, 0, on_epoch=stop_at(4), budgets=budgets,
                       resume=ResumeState(path, {"every_epochs": 1}))
    model = copy.deepcopy(dense)
    result = finetune_model(model, None, augmented, ft, 4, cpu, 0, budgets=budgets,
                            resume=ResumeState(path, {"every_epochs": 1}))
    assert_same_weights(model, ref)
    assert result.steps == ref_result.steps == 12 and result.history == ref_result.history
    assert result.snapshots[2].best_epoch == ref_result.snapshots[2].best_epoch
    assert all(torch.equal(v, ref_result.snapshots[2].state[k]) for k, v in result.snapshots[2].state.items())


def test_written_by_minutes_and_only_a_new_epoch(augmented, tmp_path):
    """every_minutes: a write at the first epoch end once that much time passed; nothing is rewritten."""
    state = ResumeState(tmp_path / "state.pt", {"every_minutes": 1e-9})
    train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, torch.device("cpu"), resume=state)
    assert state.written_epoch == 2 and torch.load(state.path, weights_only=True)["epoch"] == 2
    assert state.write_snapshot() is None
    never = ResumeState(tmp_path / "never.pt", {"every_minutes": 60})
    train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, torch.device("cpu"), resume=never)
    assert not never.path.exists()
    assert never.snapshot is None or never.snapshot["epoch"] <= 2   # kept in memory, for a signal, once a second


def test_memory_snapshots_once_a_second(augmented, tmp_path, monkeypatch):
    """Between writes a snapshot is kept when KEEP_EVERY_S passed since the last one (for a signal to write)."""
    import prunelab.training.resume as resume_module

    clock = iter(range(0, 1000, 1))   # every call of time.monotonic: one second later
    monkeypatch.setattr(resume_module.time, "monotonic", lambda: float(next(clock)))
    state = ResumeState(tmp_path / "state.pt", {"every_minutes": 60})
    train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, torch.device("cpu"), resume=state)
    assert state.snapshot["epoch"] == 2 and not state.path.exists()
    monkeypatch.setattr(resume_module, "KEEP_EVERY_S", 1e9)
    state = ResumeState(tmp_path / "state.pt", {"every_minutes": 60})
    train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, torch.device("cpu"), resume=state)
    assert state.snapshot is None


def test_gradual_resumes_bit_for_bit(data, tmp_path):
    """Gradual FRS stopped after epoch 2 (one of its three pruning steps taken) and resumed: the masks, the steps,
    the best epoch after the last step, the physically pruned model and its record equal an uninterrupted run's."""
    cpu, cfg = torch.device("cpu"), {**TRAIN, "epochs": 5, "augment": False}
    ref, ref_arch, ref_info, ref_result = train_gradual(data, CNN, cfg, GRADUAL, 0.5, 0, cpu)
    path = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train_gradual(data, CNN, cfg, GRADUAL, 0.5, 0, cpu, on_epoch=stop_at(3),
                      resume=ResumeState(path, {"every_epochs": 1}))
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 2 and len(saved["extras"]["gradual"]["steps"]) == 1
    model, arch, info, result = train_gradual(data, CNN, cfg, GRADUAL, 0.5, 0, cpu,
                                              resume=ResumeState(path, {"every_epochs": 1}))
    assert arch == ref_arch
    assert_same_weights(model, ref)
    assert info == ref_info
    assert result.history == ref_result.history and result.best_epoch == ref_result.best_epoch


def test_unusable_state_starts_from_epoch_zero(augmented, tmp_path, caplog):
    """A truncated file, or one whose extras do not fit the run, is not loaded: the run trains from the start."""
    path = tmp_path / "state.pt"
    path.write_bytes(b"PK\x03\x04 half a file")
    cpu = torch.device("cpu")
    ref, _, _ = train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, cpu)
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        model, _, result = train_baseline(augmented, CNN, {**TRAIN, "epochs": 2}, 0, cpu,
                                          resume=ResumeState(path, {"every_epochs": 1}))
    assert "unreadable" in caplog.text and len(result.history) == 2
    assert_same_weights(model, ref)
    other = ResumeState(path, {"every_epochs": 1})
    other.register("masks", dict, lambda v: None)
    assert other.read() is None


def test_settings_are_the_schemas():
    """ResumeSettings from nothing equal what the workflow fills in; a bad value is refused naming its key."""
    from prunelab.settings import ResumeSettings
    from test_settings import snakemake_filled

    cfg = yaml.safe_load(TINY.read_text())
    assert ResumeSettings.of({}).as_dict() == snakemake_filled(cfg)["resume"]
    with pytest.raises(ValueError, match="resume.every_epochs"):
        ResumeSettings.of({"every_epochs": 0})


# ------------------------------------------------------------------------------------------------- the key

def _job(tmp_path: Path, **params) -> Job:
    base = {"experiment": "t", "dataset": "digits", "train": {"epochs": 3}, "device": "cpu",
            "latency": {"repeats": 2}, "resume": {"every_minutes": 5}}
    return Job("train_baseline", {"arch": "mlp", "seed": "0"}, {**base, **params}, tmp_path / "out")


def test_state_is_keyed_by_config_inputs_and_code(tmp_path):
    """The file name hashes the params (runtime settings left out), the inputs (size, mtime) and the source: the
    same job finds its state; another config or input gets another file, and the stale one is deleted."""
    data = tmp_path / "data.pt"
    data.write_bytes(b"x" * 10)
    first = _job(tmp_path).resume_state([data]).path
    first.write_bytes(b"state")
    assert re.fullmatch(r"resume-[0-9a-f]{12}-[0-9a-f]{12}\.pt", first.name)
    from prunelab.records import source_hash

    assert first.name.endswith(f"-{source_hash()}.pt")
    # the runtime settings (device, latency timing, resume cadence) change nothing a job computes: same state
    same = _job(tmp_path, device="cuda", latency={"repeats": 9}, resume={"every_epochs": 1}).resume_state([data])
    assert same.path == first and first.exists()
    job = _job(tmp_path, train={"epochs": 4})
    other = job.resume_state([data]).path
    assert other != first and not first.exists(), "a state made with another config was kept"
    other.write_bytes(b"state")
    part = job.resume_state([data], part="round2").path   # a second training run of the same job: its own file
    assert part.name == other.name.replace(".pt", "-round2.pt") and other.exists()
    part.write_bytes(b"state")
    job.finish(job.record(stage="baseline"), job.out_dir / "metrics.json")
    assert not list(job.out_dir.glob("resume-*")), "finish left a resume state"
    other.write_bytes(b"state")
    data.write_bytes(b"y" * 11)                         # prepare_data ran again
    assert _job(tmp_path, train={"epochs": 4}).resume_state([data]).path != other and not other.exists()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ------------------------------------------------------------------------------------------------- SIGTERM

DRIVER = r"""
import json, os, signal, sys
from pathlib import Path
import torch
from prunelab.data import prepare_dataset
from prunelab.jobs import Job
from prunelab.models import architecture_for, build_model
from prunelab.training import seed_everything, train_model
import prunelab.training.resume as resume_module

resume_module.KEEP_EVERY_S = 0   # a snapshot every epoch: where a signal lands decides what it writes
out, mode, cnn, train = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
data = prepare_dataset("digits", None, val_fraction=0.2, max_train=200)
data["augment"] = {"crop_padding": 1, "hflip": False}
job = Job("train_baseline", {"arch": "cnn", "seed": "0"},
          {"experiment": "t", "dataset": "digits", "train": train, "resume": {"every_minutes": 60}}, out,
          log_file=out.parent / f"{mode}.log")
resume = job.resume_state([])
steps = 0

def after_step():            # mid-epoch: SIGTERM at the 2nd step of the 3rd epoch this run trains (7 steps an epoch)
    global steps
    steps += 1
    if mode == "mid-epoch" and steps == 2 * 7 + 2:
        os.kill(os.getpid(), signal.SIGTERM)

if mode == "mid-write":      # SIGTERM while the scheduled write of epoch 2 is under way
    resume.settings = resume.settings.replace(every_epochs=2)
    save = resume_module.save_torch
    def signal_then_save(obj, path):
        os.kill(os.getpid(), signal.SIGTERM)
        save(obj, path)
    resume_module.save_torch = signal_then_save
seed_everything(0)
model = build_model(architecture_for(cnn, data))
result = train_model(model, data, train, torch.device("cpu"), 0, after_step=after_step, on_epoch=job.on_epoch,
                     resume=resume)
torch.save({"model": model.state_dict(), "history": result.history, "job_history": job.history}, out / "final.pt")
job.finish(job.record(stage="baseline", epochs=train["epochs"]), out / "metrics.json")
"""


def _driver(out: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, str(out), mode, json.dumps(CNN), json.dumps(TRAIN)],
                          capture_output=True, text=True, timeout=300, env=workflow_env())


def test_sigterm_writes_the_state_exits_and_the_rerun_resumes(augmented, tmp_path):
    """SIGTERM (a SLURM time limit) while a scheduled write of epoch 2 is under way: that write ends, then the job
    exits 143. Its rerun resumes from epoch 2 and gets SIGTERM in the middle of epoch 5: it writes epoch 4's state
    (kept in memory) at once and exits 143. The third run resumes from epoch 4 and ends with an uninterrupted run's
    weights and history, in its result and in the job's run history."""
    ref, _, ref_result = train_baseline(augmented, CNN, TRAIN, 0, torch.device("cpu"))
    out = tmp_path / "out"
    t0 = time.monotonic()
    for mode, resumed, epoch in (("mid-write", None, 2), ("mid-epoch", 2, 4)):
        stopped = _driver(out, mode)
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
        log = (tmp_path / f"{mode}.log").read_text()
        assert f"SIGTERM: stopping; the resume state holds epoch {epoch}" in log, log[-2000:]
        assert (f"resuming from epoch {resumed}" in log) if resumed else ("resuming" not in log)
        states = list(out.glob("resume-*.pt"))
        assert len(states) == 1 and torch.load(states[0], weights_only=True)["epoch"] == epoch
        assert [p.name for p in out.iterdir()] == [states[0].name], "a write left a file behind"
    done = _driver(out, "rerun")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from epoch 4" in (tmp_path / "rerun.log").read_text()
    final = torch.load(out / "final.pt", weights_only=True)
    ref_state = ref.state_dict()
    assert all(torch.equal(final["model"][k], ref_state[k]) for k in ref_state)
    job_history = [{k: v for k, v in r.items() if k != "time_ms"} for r in final["job_history"]]  # wall-clock stamps
    assert final["history"] == ref_result.history and job_history == ref_result.history
    assert not list(out.glob("resume-*.pt")), "the completed job left its resume state"
    print(f"SIGTERM test: {time.monotonic() - t0:.1f} s")


# ------------------------------------------------------------------------------- SIGKILL through Snakemake

def _pid_holding(session: int, path: Path) -> int | None:
    """The process of Snakemake's session (started with start_new_session: the session id is Snakemake's pid) that
    holds `path` open: a job's process holds its log file."""
    target = str(path.resolve())
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getsid(int(proc.name)) != session:
                continue
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def _kill_after_first_save(proc: subprocess.Popen, jobs: dict[str, tuple[Path, Path]],
                           timeout: float = 300) -> dict[str, int]:
    """jobs: {name: (output folder, log file)}. SIGKILL each job's process as soon as its first resume state is on
    disk → {name: epoch in that state}."""
    saved: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(saved) < len(jobs) and time.monotonic() < deadline and proc.poll() is None:
        for name, (folder, log) in jobs.items():
            states = list(folder.glob("resume-*.pt")) if name not in saved and folder.is_dir() else []
            pid = _pid_holding(proc.pid, log) if states else None
            if pid:
                os.kill(pid, signal.SIGKILL)
                saved[name] = torch.load(states[0], weights_only=True)["epoch"]
        time.sleep(0.005)
    return saved


def _outputs(folder: Path) -> dict:
    """A job's model.pt, the deterministic keys of its metrics.json and run.json's per-epoch history."""
    return {"model": torch.load(folder / "model.pt", weights_only=True),
            "metrics": {k: json.loads((folder / "metrics.json").read_text()).get(k) for k in DETERMINISTIC_KEYS},
            "history": json.loads((folder / "run.json").read_text()).get("history")}


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the job's process")
def test_killed_training_jobs_resume_through_snakemake(tmp_path):
    """The tiny config's CNN baseline (30 epochs) and its gradual FRS job (pruning steps after epochs 3, 6, 9, 12),
    each SIGKILLed by the test as soon as its first resume state (epoch 4) is on disk: Snakemake removes their
    outputs, the states stay; the rerun's logs say "resuming from epoch k", and model.pt, metrics.json and run.json's
    history equal those of an uninterrupted run, bit for bit. The uninterrupted run is the same model under another
    arch name ("ref", the same spec, seed and data), trained in the same Snakemake runs and never stopped."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["archs"] = {"cnn": cfg["archs"]["cnn"], "ref": cfg["archs"]["cnn"]}
    cfg["train"]["epochs"] = 30
    cfg["gradual"] = {"enabled": True, "ratios": [0.5], "interval": 3, "stop_epoch": 12, "archs": ["cnn", "ref"]}
    cfg["resume"] = {"every_epochs": 4}   # gradual's first state (epoch 4) comes after its first pruning step
    jobs = {"train_baseline": ("baseline/{}/standard/seed0", "train_baseline/{}/standard/seed0.log"),
            "train_gradual": ("gradual/{}/seed0/frs/r0.50", "train_gradual/{}/seed0/frs/r0.50.log")}
    targets = [f"results/{EXP}/{out.format(a)}/metrics.json" for out, _ in jobs.values() for a in ("cnn", "ref")]
    t0 = time.monotonic()
    wd = make_workdir(tmp_path / "wf", cfg)
    res = wd / "results" / EXP
    proc, out1 = start_snakemake(wd, targets, "--keep-going", log_name="killed.out")
    try:
        saved = _kill_after_first_save(proc, {rule: (res / out.format("cnn"), res / "logs" / log.format("cnn"))
                                              for rule, (out, log) in jobs.items()})
        proc.wait(300)
    finally:
        stop_group(proc)
    text = out1.read_text()
    assert saved.keys() == jobs.keys(), f"not both jobs were killed: {saved}\n{text[-3000:]}"
    assert proc.returncode != 0 and text.count("Error in rule") == 2, text[-3000:]
    for out, _ in jobs.values():
        assert (res / out.format("ref") / "metrics.json").exists(), "the uninterrupted jobs did not finish"
        killed = res / out.format("cnn")
        assert not (killed / "model.pt").exists() and not (killed / "metrics.json").exists()
        assert len(list(killed.glob("resume-*.pt"))) == 1, f"{killed}: the resume state did not survive"

    run_snakemake(wd, targets, log_name="rerun.out").check()
    ran = sorted((rule, wildcards["arch"]) for rule, wildcards, _ in job_blocks((wd / "rerun.out").read_text()))
    assert ran == [(rule, "cnn") for rule in sorted(jobs)], ran
    for rule, (out, log) in jobs.items():
        text = (res / "logs" / log.format("cnn")).read_text()
        resumed = [int(k) for k in re.findall(r"resuming from epoch (\d+)", text)]
        assert len(resumed) == 1 and 4 <= saved[rule] <= resumed[0] < 30, (saved, resumed)
        assert f"epoch {resumed[0]}/30:" not in text and f"epoch {resumed[0] + 1}/30:" in text
        assert not list((res / out.format("cnn")).glob("resume-*.pt")), "the completed job left its resume state"
        a, b = _outputs(res / out.format("cnn")), _outputs(res / out.format("ref"))
        assert a["metrics"].pop("arch") == "cnn" and b["metrics"].pop("arch") == "ref"
        assert_equal_nested(a, b, out)
    print(f"SIGKILL workflow test: {time.monotonic() - t0:.1f} s")
