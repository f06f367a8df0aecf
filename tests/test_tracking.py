"""MLflow at scale: concurrent writers on the SQLite default, a tracking server, an outage, deferred sync.

The files are the truth (README: tracking); these tests check that MLflow ends up holding one run per job, nested under
its baseline and tagged, whatever the mode, and that a tracking failure never costs a result.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXP, REPO, free_port, make_workdir, run_snakemake, workflow_env

UNSYNCED = ".mlflow_unsynced"
WILDCARDS = ("arch", "regime", "seed", "method", "granularity", "ratio")


def job_dirs(results: Path) -> dict[str, Path]:
    """{job id: folder} of every finished tracked job (a folder holding run.json + metrics.json)."""
    out = {}
    for p in sorted(results.rglob("run.json")):
        if (p.parent / "metrics.json").exists():
            out[json.loads(p.read_text())["job_id"]] = p.parent
    return out


def runs_by_job(uri: str, experiment: str = EXP) -> dict[str, list]:
    """{prunelab.job_id tag: [active runs]} of the experiment at `uri`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing at {uri}"
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags.get("prunelab.job_id", "<untagged>"), []).append(r)
    return out


def assert_one_tagged_nested_run_per_job(uri: str, results: Path, history: bool = True) -> dict[str, object]:
    """Every finished job has exactly one MLflow run: FINISHED, named rule[wildcards], tagged with its git commit
    (mlflow.source.git.commit) and source name,
    config_hash and its wildcards (values from its metrics.json/run.json), nested under its baseline's run,
    final metrics equal to metrics.json and, for training jobs, one metric point per epoch."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    jobs = job_dirs(results)
    assert jobs, f"no finished job under {results}"
    runs = runs_by_job(uri)
    assert "<untagged>" not in runs, "runs without a job id"
    assert sorted(runs) == sorted(jobs), f"jobs without a run: {sorted(set(jobs) - set(runs))}; " \
                                         f"runs without a job: {sorted(set(runs) - set(jobs))}"
    dup = {j: len(r) for j, r in runs.items() if len(r) != 1}
    assert not dup, f"duplicate runs: {dup}"
    by_job = {j: r[0] for j, r in runs.items()}
    for jid, folder in jobs.items():
        run, meta = by_job[jid], json.loads((folder / "run.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        tags = run.data.tags
        assert run.info.status == "FINISHED", (jid, run.info.status)
        assert run.info.run_name == meta["run_name"]
        assert tags["mlflow.source.git.commit"] == str(metrics["git_commit"]).removesuffix("-dirty")
        assert tags["mlflow.source.name"].startswith(("scripts/", "workflow/Snakefile"))
        assert not any(k.startswith("wildcard.") for k in tags)  # each wildcard tagged once, under its own name
        assert tags["config_hash"] == str(metrics["config_hash"]) and tags["config_hash"] not in ("", "None")
        assert meta["wildcards"] and set(meta["wildcards"]) <= set(WILDCARDS)
        for k, v in meta["wildcards"].items():
            assert tags.get(k) == str(v), f"{jid}: wildcard tag {k}={tags.get(k)!r}, expected {v!r}"
        parent = meta.get("parent_job")
        if parent:
            assert tags.get("mlflow.parentRunId") == by_job[parent].info.run_id, f"{jid} not nested under {parent}"
        else:
            assert "mlflow.parentRunId" not in tags
        for key in ("top1_test", "params_total", "macs_effective"):
            if isinstance(metrics.get(key), (int, float)):
                assert run.data.metrics[key] == pytest.approx(metrics[key]), (jid, key)
        if history and meta["history"]:
            key = next(k for k in meta["history"][0] if k != "epoch")
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == [int(rec["epoch"]) for rec in meta["history"]], (jid, key, steps)
        assert not (folder / UNSYNCED).exists(), f"{jid} still marked unsynced"
    return by_job


def job_log(results: Path, run_meta: dict) -> Path:
    """results/{exp}/logs/{rule}/{arch}/{regime}/seed{seed}[/{method}/{granularity}/r{ratio}].log of a job (the
    prune and finetune steps share their prune_finetune job's log)."""
    wc = run_meta["wildcards"]
    parts = [{"seed": f"seed{wc[k]}", "ratio": f"r{wc[k]}"}.get(k, wc[k]) for k in WILDCARDS if k in wc]
    rule = {"prune": "prune_finetune", "finetune": "prune_finetune"}.get(run_meta["rule"], run_meta["rule"])
    return results / "logs" / rule / Path(*parts[:-1]) / f"{parts[-1]}.log"


def sync(results: Path, uri: str) -> dict:
    """`python -m prunelab.tracking` (what `make mlflow-sync` runs) → its counts."""
    out = subprocess.run([sys.executable, "-m", "prunelab.tracking", "--results", str(results), "--experiment", EXP,
                          "--uri", uri], capture_output=True, text=True, env=workflow_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MLflow sync")][-1]
    return ast.literal_eval(line.split(": ", 1)[1])  # the printed dict of counts


# ---------------------------------------------------------------------------------------------------- SQLite

DRIVER = r"""
import json, os, sys, time, traceback
from pathlib import Path
import mlflow.tracking  # noqa: F401 - torch, mlflow and prunelab are imported once, before the fork
from prunelab.jobs import Job

n, root = int(sys.argv[1]), Path(sys.argv[2])


def one_job(i):
    out = root / "tiny" / "baseline" / "mlp" / "standard" / f"seed{i}"
    out.mkdir(parents=True, exist_ok=True)
    while not (root / "GO").exists():      # the barrier: all writers hit the database together
        time.sleep(0.002)
    job = Job("train_baseline", {"arch": "mlp", "regime": "standard", "seed": str(i)},
              {"experiment": "tiny", "dataset": "digits", "tracking_file": str(root / "tiny" / "tracking.json"),
               "train": {"epochs": 3, "lr": 0.05}}, out, log_file=out / "job.log")
    for e in (1, 2, 3):
        job.on_epoch({"epoch": e, "loss_train": 1.0 / e, "top1_val": 10.0 * e + i})
    job.finish(job.record(stage="baseline", top1_val=30.0 + i, top1_test=20.0 + i, epochs=3), out / "metrics.json")


sys.stdout.flush()
pids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            one_job(i)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    pids.append(pid)
(root / "GO").touch()
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
print("EXIT CODES", json.dumps(codes))
sys.exit(1 if any(codes) else 0)
"""


@pytest.mark.e2e
def test_sqlite_database_created_once_and_16_concurrent_jobs_lose_no_run(tmp_path):
    """The workflow's onstart creates results/mlflow.db and the experiment (live mode) before any job; then 16
    job processes (prunelab.jobs.Job, as every rule script uses it; forked from one parent so that the test pays
    the imports once) open, fill and close their runs at the same moment against that database: every run
    arrives, complete, and no job falls back to 'unsynced'."""
    n = 16
    wd = make_workdir(tmp_path / "wf", {"tracking": {"mode": "live"}})
    run_snakemake(wd, [f"results/{EXP}/data/digits.pt"]).check()
    results = wd / "results"
    settings = json.loads((results / EXP / "tracking.json").read_text())
    assert settings == {"mode": "live", "uri": f"sqlite:///{results.resolve() / 'mlflow.db'}", "experiment": EXP}
    assert (results / "mlflow.db").exists(), "onstart did not create the database"
    from mlflow.tracking import MlflowClient

    assert MlflowClient(settings["uri"]).get_experiment_by_name(EXP) is not None, "onstart made no experiment"

    out = subprocess.run([sys.executable, "-c", DRIVER, str(n), str(results)], env=workflow_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    assert f"EXIT CODES {json.dumps([0] * n)}" in out.stdout
    logs = [(results / EXP / f"baseline/mlp/standard/seed{i}/job.log").read_text() for i in range(n)]
    assert not [lg for lg in logs if "unavailable" in lg], "a job could not reach the database"
    by_job = assert_one_tagged_nested_run_per_job(settings["uri"], results / EXP)
    assert len(by_job) == n
    for i in range(n):
        run = by_job[f"train_baseline/arch=mlp/regime=standard/seed={i}"]
        assert run.data.metrics["top1_val"] == 30.0 + i
        assert run.data.params["train.epochs"] == "3"


# ---------------------------------------------------------------------------------------------------- server

def test_make_mlflow_server_target_exists():
    out = subprocess.run(["make", "-n", "-C", str(REPO), "mlflow-server", "MLFLOW_PORT=5123"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mlflow server --backend-store-uri sqlite:///" in out.stdout and "--port 5123" in out.stdout


@pytest.mark.e2e
def test_live_tracking_against_mlflow_server(tiny_live_server):
    """The tiny workflow in live mode with `tracking.uri: http://…` (an `mlflow server` with the SQLite backend
    and its artifact store under the run's results/): every job's run is on the server, nested under its
    baseline, tagged with git_commit, config_hash and wildcards, with its per-epoch curve and its artifacts."""
    wd, uri, run = tiny_live_server
    assert "is unreachable" not in run.out and "tracking unavailable" not in run.out
    settings = json.loads((wd / "results" / EXP / "tracking.json").read_text())
    assert settings == {"mode": "live", "uri": uri, "experiment": EXP}
    logs = list((wd / "results" / EXP / "logs").rglob("*.log"))
    assert logs and not [p for p in logs if "tracking unavailable" in p.read_text()]
    by_job = assert_one_tagged_nested_run_per_job(uri, wd / "results" / EXP)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    some = next(r for j, r in by_job.items() if j.startswith("train_baseline"))
    assert {a.path for a in client.list_artifacts(some.info.run_id)} >= {"metrics.json", "model.pt"}
    assert not (wd / "results" / "mlflow.db-journal").exists()


# ---------------------------------------------------------------------------------------------------- outage

@pytest.mark.e2e
def test_unreachable_tracking_server_costs_seconds_and_sync_refills(tmp_path):
    """Live mode against a closed port: the run succeeds, each tracked job writes all its files, warns once in its
    log and leaves .mlflow_unsynced; each job loses seconds, not MLflow's default minutes of retries.
    `python -m prunelab.tracking` then refills MLflow from the files; running it again adds nothing."""
    dead = f"http://127.0.0.1:{free_port()}"   # bound then released: nothing listens there
    wd = make_workdir(tmp_path / "wf", {"tracking": {"mode": "live", "uri": dead}})
    chain = f"results/{EXP}/finetuned/mlp/standard/seed0/magnitude/unstructured/r0.50/metrics.json"
    run = run_snakemake(wd, [chain], timeout=600).check()
    results = wd / "results" / EXP
    jobs = job_dirs(results)
    assert {j.split("/")[0] for j in jobs} == {"train_baseline", "prune", "finetune"}
    for jid, folder in jobs.items():
        for f in ("metrics.json", "model.pt", "run.json", UNSYNCED):
            assert (folder / f).exists(), f"{jid}: {f} missing"
        log = job_log(results, json.loads((folder / "run.json").read_text()))
        text = log.read_text()
        assert text.count("MLflow tracking unavailable") == 1, f"{jid}: expected one warning in {log}:\n{text}"
    walls = {str(p.relative_to(results)): float(p.read_text().splitlines()[1].split("\t")[0])
             for p in (results / "benchmarks").rglob("*.tsv")}
    assert len(walls) >= len(jobs)
    # MLflow's defaults retry 7 times with exponential backoff: about 250 s per job; bounded: a few seconds
    assert max(walls.values()) < 120, f"a job waited on the dead server: {walls}"
    assert f"MLflow tracking at {dead} is unreachable" in run.out, "the workflow did not warn about the outage"

    uri = f"sqlite:///{tmp_path.resolve() / 'refill.db'}"
    first = sync(results, uri)
    assert first == {"logged": len(jobs), "skipped": 0, "replaced": 0}
    assert not list(results.rglob(UNSYNCED)), "sync left unsynced markers"
    assert_one_tagged_nested_run_per_job(uri, results)
    second = sync(results, uri)
    assert second == {"logged": 0, "skipped": len(jobs), "replaced": 0}
    assert_one_tagged_nested_run_per_job(uri, results)


# -------------------------------------------------------------------------------------------------- deferred

@pytest.mark.e2e
def test_deferred_track_gives_one_nested_tagged_run_per_job(tiny_reference, tmp_path):
    """Deferred mode (the tiny default): the `track` rule logged every job once, nested under its baseline and
    tagged; a second sync skips them all; a job whose metrics changed replaces its run (still one per job)."""
    import shutil

    results = tiny_reference / "results" / EXP
    synced = json.loads((results / "tracking" / "synced.json").read_text())
    jobs = job_dirs(results)
    assert synced["logged"] == len(jobs) and synced["replaced"] == 0
    assert_one_tagged_nested_run_per_job(synced["uri"], results)

    # idempotent re-sync on a copy (the reference stays untouched for the other tests)
    copy = tmp_path / "results"
    shutil.copytree(tiny_reference / "results", copy)
    uri = f"sqlite:///{copy.resolve() / 'mlflow.db'}"
    assert sync(copy / EXP, uri) == {"logged": 0, "skipped": len(jobs), "replaced": 0}
    assert_one_tagged_nested_run_per_job(uri, copy / EXP, history=False)
    some = next(d for j, d in job_dirs(copy / EXP).items() if j.startswith("finetune"))
    m = json.loads((some / "metrics.json").read_text())
    m["top1_test"] = -1.0
    (some / "metrics.json").write_text(json.dumps(m))
    assert sync(copy / EXP, uri) == {"logged": 1, "skipped": len(jobs) - 1, "replaced": 1}
    by_job = assert_one_tagged_nested_run_per_job(uri, copy / EXP, history=False)
    assert by_job[json.loads((some / "run.json").read_text())["job_id"]].data.metrics["top1_test"] == -1.0
