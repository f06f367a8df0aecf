"""Cluster submission: the profiles, and the tiny workflow through a real (single-node, localhost) SLURM.

tests/cluster/setup_slurm.sh starts munged, slurmctld and slurmd from Debian's packages in a private folder; the
tiny config then runs with `--profile profiles/slurm` (partition set to the local one, sizes shrunk to the node)
and must give the numbers of a local run. Without root or without the packages the SLURM test skips, saying so;
with PRUNELAB_REQUIRE_SLURM=1 (set by .ci/run) that skip is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import (EXP, REPO, TINY, assert_same_results, job_blocks, make_workdir, run_snakemake, tiny_targets,
                      workflow_env)

SCRIPTS = REPO / "tests" / "cluster"
PROFILES = REPO / "profiles"
GPU_RULES = {"train_baseline", "prune_finetune", "collect_stats", "train_gradual", "train_scratch", "pruning_space"}


# ------------------------------------------------------------------------------------------------- profiles

def declared_localrules() -> set[str]:
    """The rules the workflow declares `localrules:` (they run on the submit host), plus the target rule `all`."""
    text = "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))])
    names = {"all"}
    for m in re.finditer(r"^localrules:(.*(?:\n[ \t]+.*)*)", text, re.M):
        names |= set(re.findall(r"\w+", m.group(1)))
    return names


def _dry_run_resources(tmp_path: Path, profile: str) -> dict[str, str]:
    wd = make_workdir(tmp_path / profile)
    run = run_snakemake(wd, tiny_targets(), "--dry-run", "--profile", str(PROFILES / profile), cores=None).check()
    found = {}
    lines = run.out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(local)?rule (\w+):\s*$", line)   # indented: a job of a group
        if m:
            for nxt in lines[i + 1:i + 30]:
                if nxt.strip().startswith("resources:"):
                    found.setdefault(m.group(3), nxt.strip())
                    break
                if len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                    break
    return found


def test_profiles_load_and_request_gpus_for_training(tmp_path):
    """Both profiles are valid Snakemake profiles for the whole tiny DAG; the SLURM one gives the training and
    statistics rules one GPU with more memory and time, and nothing site-specific is set in the rules."""
    default = yaml.safe_load((PROFILES / "default" / "config.yaml").read_text())  # applies to every run
    assert set(default) <= {"cores", "scheduler", "rerun-incomplete", "show-failed-logs", "quiet"}, default
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["slurm-status-command"] in ("squeue", "sacct")
    res = _dry_run_resources(tmp_path, "slurm")
    assert {"train_baseline", "collect_stats", "prune_finetune"} <= set(res), sorted(res)
    for rule, line in res.items():
        if rule in GPU_RULES:
            assert "gpu=1" in line and "mem_mb=" in line and "runtime=" in line, (rule, line)
        else:
            assert "gpu=1" not in line, (rule, line)
    groups, components = slurm["groups"], slurm["group-components"]
    assert {"score", "prune_finetune"} <= set(groups) and set(groups.values()) == set(components), groups
    assert not {"train_baseline", "train_gradual", "train_scratch"} & set(groups), "a long job is grouped"
    assert slurm["set-resource-scopes"]["gpu"] == "local" and slurm["resources"]["gpu"] == 1
    local = _dry_run_resources(tmp_path, "local")
    assert local and not [ln for ln in local.values() if "gpu=1" in ln]
    rules_text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert not re.search(r"slurm_(partition|account)|constraint\s*=", rules_text), "site settings in the rules"


# ---------------------------------------------------------------------------------------------------- SLURM

def _skip_or_fail(reason: str):
    if os.environ.get("PRUNELAB_REQUIRE_SLURM") == "1":
        pytest.fail(f"PRUNELAB_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A private one-node SLURM on localhost: {SLURM_CONF, PRUNELAB_SLURM_*} of DIR/env; stopped (by the PIDs it
    recorded) and removed at the end. The folder is not under pytest's tmp: the munge user must reach it."""
    if os.geteuid() != 0:
        _skip_or_fail("SLURM test needs root (to start munged, slurmctld and slurmd)")
    missing = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
               if not (shutil.which(exe) or Path("/usr/sbin", exe).exists())]
    if missing:
        _skip_or_fail(f"SLURM not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)")
    state = Path(tempfile.mkdtemp(prefix="prunelab-slurm-", dir="/tmp"))
    pids: dict[str, int] = {}
    try:
        start = subprocess.run(["bash", str(SCRIPTS / "setup_slurm.sh"), str(state)], capture_output=True,
                               text=True, timeout=180)
        if start.returncode == 2:
            _skip_or_fail(start.stderr.strip())
        assert start.returncode == 0, f"setup_slurm.sh failed:\n{start.stdout}\n{start.stderr}"
        env = dict(line.split("=", 1) for line in (state / "env").read_text().split())
        env["STATE"] = str(state)
        pids.update({name: int((state / f).read_text()) for name, f in
                     (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid"), ("munged", "munge/munged.pid"))})
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh"), str(state)], timeout=120)
        still = [n for n, pid in pids.items() if _alive(pid)]
        shutil.rmtree(state, ignore_errors=True)
        assert not still, f"stop_slurm.sh left {still} running"


def _alive(pid: int) -> bool:
    """Whether PID runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def grouped_job_blocks(text: str) -> list[tuple[str, dict, str]]:
    """(rule, wildcards, group) of every job Snakemake printed inside a "Group job <group>" block (indented; the
    other jobs are job_blocks')."""
    jobs, group = [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = re.search(r"Group job (\w+) \(jobs in lexicogr\. order\)", line)
        if header:
            group = header.group(1)
            continue
        m = re.match(r"^(\s+)(?:local)?rule (\w+):\s*$", line)    # only a group's jobs are printed indented
        if not (group and m):
            continue
        wildcards = {}
        for nxt in lines[i + 1:i + 30]:
            if len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                break
            w = re.match(r"\s+wildcards: (.*)$", nxt)
            if w:
                wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", "))
        jobs.append((m.group(2), wildcards, group))
    return jobs


def _test_profile(dest: Path, cluster: dict) -> Path:
    """profiles/slurm/config.yaml with the site values of this test cluster: its partition, memory requests
    capped to what the node has, one thread per job (2-CPU machines; also what the local reference used), and
    status checks every 2 s instead of 40 s. Everything else (executor, status command, retries, ...) is kept."""
    prof = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    cap = max(500, int(cluster["PRUNELAB_SLURM_MEM_MB"]) // 4)
    defaults = prof.setdefault("default-resources", {})
    defaults["slurm_partition"] = cluster["PRUNELAB_SLURM_PARTITION"]
    for key in ("slurm_account", "constraint"):
        defaults.pop(key, None)
    defaults["mem_mb"] = min(int(defaults.get("mem_mb", cap)), cap)
    if "mem_mb" in prof.get("resources", {}):      # what one grouped submission may use
        prof["resources"]["mem_mb"] = min(int(prof["resources"]["mem_mb"]), cap)
    for res in prof.get("set-resources", {}).values():
        if "mem_mb" in res:
            res["mem_mb"] = min(int(res["mem_mb"]), cap)
        if int(cluster["PRUNELAB_SLURM_GPUS"]) == 0:
            res.pop("gpu", None)
    prof["set-threads"] = {rule: 1 for rule in prof.get("set-threads", {})}
    prof["slurm-init-seconds-before-status-checks"] = 2
    prof["slurm-status-command"] = "squeue"     # this cluster has no slurmdbd: sacct would never answer
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


@pytest.mark.cluster
@pytest.mark.e2e
def test_tiny_workflow_through_slurm_matches_local_run(slurm_cluster, tiny_reference, tmp_path):
    """Every non-local job goes through sbatch (a SLURM job id per job in Snakemake's log, each one COMPLETED in
    SLURM's own records, training jobs holding a GPU), and the numbers equal those of the local run."""
    cluster = slurm_cluster
    wd = make_workdir(tmp_path / "wf")
    profile = _test_profile(tmp_path / "profile", cluster)
    env = workflow_env(SLURM_CONF=cluster["SLURM_CONF"],
                       PATH=f"{cluster['PRUNELAB_SLURM_BIN']}{os.pathsep}{workflow_env()['PATH']}:/usr/sbin")
    run = run_snakemake(wd, tiny_targets(), "--profile", str(profile), cores=None, env=env, timeout=1500)
    run.check()

    jobs = job_blocks(run.out)
    grouped = grouped_job_blocks(run.out)
    remote = [(r, w) for r, w, local in jobs if not local] + [(r, w) for r, w, _ in grouped]
    local = [r for r, _, is_local in jobs if is_local]
    assert remote, "no job was submitted"
    declared = declared_localrules()
    assert set(local) <= declared, f"jobs ran on the submit host: {sorted(set(local) - declared)}"
    assert not {r for r, _ in remote} & declared
    assert {"train_baseline", "collect_stats", "score", "prune_finetune"} <= {r for r, _ in remote}
    # grouped jobs (the profile's `groups`) share a submission: fewer sbatch jobs than jobs; the long ones alone
    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", run.out)
    slurm_ids = {sid for _, sid in submitted}
    groups = yaml.safe_load((profile / "config.yaml").read_text())["groups"]
    assert {(r, g) for r, _, g in grouped} == {(r, groups[r]) for r, _ in remote if r in groups}, grouped
    assert {"score", "prune_finetune"} <= {r for r, _, _ in grouped}
    ungrouped = [r for r, _ in remote if r not in groups]
    group_jobs = re.findall(r"Group job (\w+) \(jobs in lexicogr\. order\)", run.out)
    assert len(submitted) == len(slurm_ids) == len(ungrouped) + len(group_jobs) < len(remote), \
        f"{len(remote)} jobs ({len(grouped)} in {len(group_jobs)} groups), {len(submitted)} sbatch submissions"
    print(f"SLURM: {len(remote)} jobs in {len(submitted)} sbatch submissions ({len(group_jobs)} groups)")

    # SLURM's own history: squeue keeps finished jobs for MinJobAge; the job completion log keeps them all
    sq = subprocess.run(["squeue", "-t", "all", "-h", "-O", "JobID:12,State:14,Partition:20,tres-per-job:24,"
                         "Comment:200"], capture_output=True, text=True, env=env, check=True).stdout
    seen = {}
    for line in sq.splitlines():
        jid, state, part, tres, comment = line.split(None, 4)
        seen[jid] = (state, part, tres, comment.strip())
    comp = Path(cluster["STATE"], "log", "jobcomp.txt").read_text()
    for sid in slurm_ids:
        assert sid in seen, f"SLURM job {sid} unknown to squeue"
        state, part, tres, comment = seen[sid]
        assert state == "COMPLETED" and part == cluster["PRUNELAB_SLURM_PARTITION"], seen[sid]
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", comment).group(1)   # a group's name for a group job
        if (rule in GPU_RULES or rule in groups.values()) and int(cluster["PRUNELAB_SLURM_GPUS"]) > 0:
            assert "gpu:1" in tres, f"{rule} job {sid} got no GPU: {seen[sid]}"
        assert re.search(rf"JobId={sid} .*JobState=COMPLETED .*WorkDir={re.escape(str(wd))}", comp), sid
    ctld = Path(cluster["STATE"], "log", "slurmctld.log").read_text()
    assert all(f"_slurm_rpc_submit_batch_job: JobId={sid} " in ctld for sid in slurm_ids)

    n = assert_same_results(tiny_reference, wd)
    assert n == len(list((wd / "results" / EXP).rglob("metrics.json")))


def _seconds_per_epoch(cfg: dict) -> float:
    """Training seconds per epoch of the config's first arch on its data, on one thread (the job's): the fastest of
    three runs of 5 epochs (a shared machine only ever makes training slower than that)."""
    import torch

    from prunelab.data import prepare_dataset
    from prunelab.training import train_baseline

    d = cfg["dataset"]
    data = prepare_dataset(d["name"], None, val_fraction=d["val_fraction"], max_train=d["max_train"])
    spec = next(iter(cfg["archs"].values()))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        train_baseline(data, spec, {**cfg["train"], "epochs": 5}, 0, torch.device("cpu"))
        times.append((time.perf_counter() - t0) / 5)
    return min(times)


@pytest.mark.cluster
@pytest.mark.e2e
def test_training_past_its_time_limit_completes_through_resumption(slurm_cluster, tmp_path):
    """A baseline whose training takes about 100 s, submitted with a 1-minute time limit: SLURM stops it at the
    limit (SIGTERM, state TIMEOUT), the job writes its resume state on the way out, the profile's retry resubmits it
    and the second attempt logs "resuming from epoch k" (k > 0) and completes. The retry gets 15 minutes (a
    resource expression of `attempt`) so that the test's length does not depend on this machine's speed."""
    cluster = slurm_cluster
    cfg = yaml.safe_load(TINY.read_text())
    cfg["archs"] = {"cnn": cfg["archs"]["cnn"]}
    # SLURM checks time limits every 30 s: SIGTERM comes 60-90 s after the start, some 15 s of which are start-up;
    # 100 s of training at the fastest speed measured here is always stopped by the first attempt's limit
    epochs = max(200, round(100 / _seconds_per_epoch(cfg)))
    cfg["train"]["epochs"] = epochs
    wd = make_workdir(tmp_path / "wf", cfg)
    profile = _test_profile(tmp_path / "profile", cluster)
    prof = yaml.safe_load((profile / "config.yaml").read_text())
    prof["set-resources"]["train_baseline"]["runtime"] = "1 if attempt == 1 else 15"
    (profile / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    env = workflow_env(SLURM_CONF=cluster["SLURM_CONF"],
                       PATH=f"{cluster['PRUNELAB_SLURM_BIN']}{os.pathsep}{workflow_env()['PATH']}:/usr/sbin")
    target = f"results/{EXP}/baseline/cnn/standard/seed0/metrics.json"
    t0 = time.monotonic()
    run = run_snakemake(wd, [target], "--profile", str(profile), cores=None, env=env, timeout=1200)
    run.check()

    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", run.out)
    assert len(submitted) == 2, f"expected one submission and one retry: {submitted}"
    sq = subprocess.run(["squeue", "-t", "all", "-h", "-O", "JobID:12,State:14,TimeLimit:14"], capture_output=True,
                        text=True, env=env, check=True).stdout
    states = {line.split()[0]: line.split()[1:] for line in sq.splitlines()}
    first, second = (states[sid] for _, sid in submitted)
    assert first == ["TIMEOUT", "1:00"] and second[0] == "COMPLETED", (first, second)
    log = (wd / "results" / EXP / "logs" / "train_baseline" / "cnn" / "standard" / "seed0.log").read_text()
    resumed = [int(k) for k in re.findall(r"resuming from epoch (\d+)", log)]
    assert len(resumed) == 1 and 0 < resumed[0] < epochs, resumed
    out = wd / "results" / EXP / "baseline" / "cnn" / "standard" / "seed0"
    assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs
    assert len(json.loads((out / "run.json").read_text())["history"]) == epochs
    assert not list(out.glob("resume-*.pt")), "the completed job left its resume state"
    print(f"time-limit test: {epochs} epochs, resumed from epoch {resumed[0]}, {time.monotonic() - t0:.0f} s")
