"""Shared test helpers and fixtures.

Unit tests: one intra-op thread, a small digits split (`data`), small float64 models for the criteria tests
(`mlp_and_data`, `convnet` with `calibration_batch` and `layer_io`).
Workflow folders and commands: `make_workdir` (a scratch folder that runs the repository's workflow, with tiny.yaml),
`snakemake` (one command, its output returned; plan-only commands are forked by tests/snakemake_planner.py, which
paid Snakemake's and torch's imports once), `run_snakemake` / `start_snakemake` (a run in its own process group,
stopped with its jobs on timeout), `copy_run` (a finished run to change without touching the original).
Runs made once per session, in the background from its start (the tests that read them run last): `tiny_reference`,
the tiny config run locally with deferred tracking (every test that reads a whole tiny run reads this one, or a copy
of it), and `tiny_live_server`, the same config run again with live tracking to an `mlflow server` (the second fresh
run the determinism test compares). Reading runs: `job_blocks`, `planned_jobs`, `metrics_files`,
`assert_same_results`, `assert_equal_nested`.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from snakemake_planner import Planner

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
TINY = REPO / "tests" / "configs" / "tiny.yaml"
EXP = "tiny"   # tiny.yaml's experiment: its results are under results/tiny

# metrics.json keys that must not depend on the machine's speed or on where a job ran (prunelab.records.METRICS_KEYS).
DETERMINISTIC_KEYS = (
    "experiment", "dataset", "arch", "regime", "seed", "method", "granularity", "stage", "ratio_requested",
    "sparsity_achieved", "params_total", "params_nonzero", "compression", "macs_dense", "macs_effective",
    "speedup_theoretical", "top1_val", "top1_test", "top5_test", "loss_test", "top1_test_before_finetune",
    "epochs", "config_hash",
)
TIMING_WORDS = ("wall", "latency", "time_s", "time_ms", "seconds")   # measured, machine-dependent entries in checkpoints
RESULT_ROW_KEY = ("arch", "regime", "seed", "method", "granularity", "stage", "ratio_requested")
PLAN_ONLY = {"-n", "--dry-run", "--dryrun", "--summary", "-S", "--detailed-summary", "-D"}
RUNNING: set[subprocess.Popen] = set()   # started Snakemake runs and servers: stopped at the session's end


# ------------------------------------------------------------------------------------------- unit-test fixtures

@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: intra-op threads only add contention on tiny tensors."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """A small digits split (200 training images): enough to train the tiny models of the unit tests."""
    from prunelab.data import prepare_dataset

    return prepare_dataset("digits", None, val_fraction=0.2, max_train=200)


def mlp_and_data(n=40, k=4, seed=0):
    """A float64 MLP 6 → 5 → k and n inputs (N×6) with their labels: class signal in inputs 0..3, input 5
    constant."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict([("fc1", nn.Linear(6, 5)), ("relu1", nn.ReLU()),
                                       ("fc2", nn.Linear(5, k))])).double()
    x = torch.randn(n, 6, dtype=torch.float64)
    y = torch.arange(n) % k
    x = x + 0.6 * nn.functional.one_hot(y, 6).double()             # class signal in inputs 0..3
    x[:, 5] = 1.5                                                  # a constant input unit
    return model, x, y


def convnet() -> nn.Sequential:
    """conv(stride 2, pad 1) → BN → ReLU → conv(no pad) → ReLU → flatten → Linear → ReLU → Linear, float64, for
    2×7×7 inputs and 3 classes."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 5, 3, stride=2, padding=1)), ("bn1", nn.BatchNorm2d(5)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(5, 4, 2)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(4 * 3 * 3, 6)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(6, 3))])).double()
    net.bn1.running_mean.uniform_(-0.2, 0.2)
    net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


def calibration_batch(n=9, shape=(2, 7, 7), k=3):
    """n float64 inputs of `shape` and their labels (i mod k): convnet's calibration data."""
    g = torch.Generator().manual_seed(1)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64), torch.arange(n) % k


def layer_io(net, x):
    """{layer: (its input, its unit activation)} of one forward of convnet, by hand."""
    h1 = net.relu1(net.bn1(net.conv1(x)))
    h2 = net.relu2(net.conv2(h1))
    f = net.flatten(h2)
    h3 = net.relu3(net.fc1(f))
    return {"conv1": (x, h1), "conv2": (h1, h2), "fc1": (f, h3), "fc2": (h3, net.fc2(h3))}


# ------------------------------------------------------------------------------------- workflow folders, commands

def merged(base: dict, over: dict) -> dict:
    """`base` with `over` deep-merged into it (mappings merged key by key, anything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_workdir(path: Path, overrides: dict | None = None) -> Path:
    """A scratch workflow folder: the repository's Snakefile, workflow/, scripts/, config/ linked in, and
    tiny.yaml = tests/configs/tiny.yaml deep-merged with `overrides`. Results go to path/results."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "scripts", "config"):
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    (path / "tiny.yaml").write_text(yaml.safe_dump(merged(yaml.safe_load(TINY.read_text()), overrides or {}),
                                                   sort_keys=False))
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch workflow folder (make_workdir) in the test's temporary folder."""
    return make_workdir(tmp_path / "wd")


def workflow_env(**extra: str) -> dict:
    """The environment of a workflow run: this venv first in PATH, PYTHONHASHSEED as in the Makefile, no tracking
    URI leaking in from the caller, bytecode caching on (as `make` does)."""
    env = dict(os.environ)
    for var in ("PRUNELAB_TRACKING_URI", "MLFLOW_TRACKING_URI", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    env["PYTHONHASHSEED"] = "0"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def plan_only(args) -> bool:
    """Whether a Snakemake command line only plans (dry run, summary): no job runs, nothing is written."""
    return bool(PLAN_ONLY & set(args))


def stop_group(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """Stop a process started with start_new_session: SIGINT (Snakemake cancels its jobs), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def _start(workdir: Path, args: list[str], env: dict, out: Path) -> subprocess.Popen:
    """`snakemake *args` started in `workdir` in its own process group, stdout and stderr to `out`."""
    with out.open("w") as fh:
        proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    RUNNING.add(proc)
    return proc


def _execute(workdir: Path, args: list[str], env: dict, out: Path, timeout: float) -> int:
    """Exit status of `snakemake *args` in `workdir`, stdout and stderr to `out`; stopped with its jobs at timeout."""
    if plan_only(args):
        return Planner.run(workdir, args, env, out, timeout)
    proc = _start(workdir, args, env, out)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
    RUNNING.discard(proc)
    return proc.returncode


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake *args` in `workdir` with the workflow's environment (plus `env`); .stdout holds stdout and stderr.
    With `check`, a non-zero exit fails the test with the end of the output."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "snakemake.out"
        rc = _execute(workdir, list(args), workflow_env(**(env or {})), out, timeout)
        text = out.read_text(errors="replace")
    if check and rc != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({rc}):\n{text[-6000:]}")
    return subprocess.CompletedProcess([SNAKEMAKE, *args], rc, text)


@dataclass
class Run:
    rc: int
    out: str
    seconds: float
    workdir: Path

    def check(self) -> "Run":
        assert self.rc == 0, f"snakemake failed (rc {self.rc}) in {self.workdir}:\n{self.out[-6000:]}"
        return self


def snakemake_args(targets, args, cores: int | None, configfile: str) -> list[str]:
    """Snakemake's arguments for `targets`: `args`, --cores (unless None), --configfile last (it takes several)."""
    return [*targets, *args, *(["--cores", str(cores)] if cores is not None else []), "--configfile", configfile]


def start_snakemake(workdir: Path, targets, *args: str, cores: int | None = 2, env: dict | None = None,
                    configfile: str = "tiny.yaml", log_name: str = "snakemake.out"):
    """Start Snakemake in its own process group; returns (Popen, output file)."""
    out_path = workdir / log_name
    return _start(workdir, snakemake_args(targets, args, cores, configfile), env or workflow_env(), out_path), out_path


def run_snakemake(workdir: Path, targets, *args: str, timeout: float = 900, cores: int | None = 2,
                  env: dict | None = None, configfile: str = "tiny.yaml", log_name: str = "snakemake.out") -> Run:
    """Run Snakemake to the end (or stop it with its jobs at `timeout`); its output is also in workdir/log_name."""
    t0 = time.monotonic()
    out = workdir / log_name
    rc = _execute(workdir, snakemake_args(targets, args, cores, configfile), env or workflow_env(), out, timeout)
    return Run(rc, out.read_text(errors="replace"), time.monotonic() - t0, workdir)


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the workflow folder `src` (results, Snakemake's records, times kept) for a test that changes files;
    MLflow's database and artifacts and Snakemake's console logs stay behind."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("mlartifacts", "mlflow.db", "*.out"))
    return dst


# ----------------------------------------------------------------------------------------------- reading runs

def job_blocks(text: str) -> list[tuple[str, dict, bool]]:
    """(rule, wildcards, is_local) of every job block Snakemake printed (runs and dry runs)."""
    jobs = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(local)?rule (\w+):\s*$", line)
        # a rule with a `message:` is printed as "Job <id>: <message>", the message starting with the rule name;
        # report and track are the local ones (localrules in workflow/rules/report.smk)
        m = m or re.match(r"^Job \d+: ()(report|track|space_summary)\b", line)
        if not m:
            continue
        wildcards = {}
        for nxt in lines[i + 1:i + 30]:
            if not nxt.startswith((" ", "\t")):
                break
            w = re.match(r"\s+wildcards: (.*)$", nxt)
            if w:
                wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", "))
        jobs.append((m.group(2), wildcards, bool(m.group(1)) or m.group(2) in ("report", "track")))
    return jobs


def planned_jobs(out: str) -> dict[str, int]:
    """{rule: count} of a dry run's "Job stats" table, without its total and the target rule `all`; {} when
    Snakemake had nothing to do."""
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("total", "all")}


def metrics_files(workdir: Path) -> dict[str, dict]:
    """{path relative to results/tiny: metrics.json content} of every model of a run."""
    root = workdir / "results" / EXP
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))}


def deterministic_view(workdir: Path) -> dict[str, dict]:
    return {k: {key: m.get(key) for key in DETERMINISTIC_KEYS} for k, m in metrics_files(workdir).items()}


def results_table(workdir: Path) -> dict[tuple, dict] | None:
    """results.csv rows keyed by model identity, deterministic columns only; None when the run made no report."""
    path = workdir / "results" / EXP / "report" / "tables" / "results.csv"
    if not path.exists():
        return None
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {tuple(r.get(k) for k in RESULT_ROW_KEY): {k: r.get(k) for k in DETERMINISTIC_KEYS} for r in rows}


def assert_same_results(a: Path, b: Path) -> int:
    """Same models, same deterministic numbers in metrics.json and results.csv; returns how many models."""
    va, vb = deterministic_view(a), deterministic_view(b)
    assert va, f"no metrics.json under {a}/results/{EXP}"
    assert sorted(va) == sorted(vb), f"different models: only in {a}: {sorted(set(va) - set(vb))}, " \
                                     f"only in {b}: {sorted(set(vb) - set(va))}"
    diffs = [f"{k}: {key} {va[k][key]!r} != {vb[k][key]!r}" for k in va for key in DETERMINISTIC_KEYS
             if va[k][key] != vb[k][key]]
    assert not diffs, "results differ:\n" + "\n".join(diffs[:30])
    ta, tb = results_table(a), results_table(b)
    assert (ta is None) == (tb is None), "one run wrote results.csv, the other did not"
    if ta is not None:
        assert ta == tb, "results.csv differs in deterministic columns"
        assert len(ta) == len(va), f"results.csv has {len(ta)} rows for {len(va)} metrics.json files"
    return len(va)


def assert_equal_nested(a, b, where: str) -> None:
    """Two loaded checkpoints (nested dicts, lists, tensors) equal bit for bit, timing entries (TIMING_WORDS in
    their key) left out; `where` names the file in the message."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            if not any(t in str(k) for t in TIMING_WORDS):
                assert_equal_nested(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------ runs made once per session

def tiny_targets() -> list[str]:
    """The targets of the whole-config tiny runs (tiny_reference, tiny_live_server, the SLURM run): the whole DAG.

    This is the one place to narrow them (e.g. to baseline metrics files while a stage is broken).
    """
    return ["all"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(results: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` as `make mlflow-server` starts it (SQLite backend results/mlflow.db, artifact store
    results/mlartifacts), on a free 127.0.0.1 port, in its own process group; waits for /health."""
    results.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri",
                                 f"sqlite:///{results.resolve() / 'mlflow.db'}", "--artifacts-destination",
                                 str(results.resolve() / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "2"],
                                cwd=results.parent, env=workflow_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                return proc, uri
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc, 10)
            raise AssertionError("mlflow server did not answer /health in 180 s")
        time.sleep(0.5)


def reference_run(base: Path) -> Path:
    """The tiny config run locally (--cores 2, deferred tracking) in base/tiny-reference: its workflow folder."""
    root = make_workdir(base / "tiny-reference")
    run_snakemake(root, tiny_targets()).check()
    return root


def live_server_run(base: Path) -> tuple[Path, str, Run]:
    """The tiny config run in base/tiny-live-server with `tracking: {mode: live, uri: http://…}` against an
    `mlflow server` of that folder, which stays up until the session ends: (workflow folder, server URI, Run)."""
    root = base / "tiny-live-server"
    proc, uri = start_mlflow_server(root / "results", base / "mlflow-server.log")
    RUNNING.add(proc)
    make_workdir(root, {"tracking": {"mode": "live", "uri": uri}})
    return root, uri, run_snakemake(root, tiny_targets()).check()


SESSION_RUNS = {"tiny_reference": reference_run, "tiny_live_server": live_server_run}


class SessionRun(threading.Thread):
    """One of SESSION_RUNS made in a background thread (which only waits on its processes); `result()` waits for its
    value, or raises its error."""

    def __init__(self, make, base: Path):
        super().__init__(name=make.__name__, daemon=True)
        self.make, self.base, self.value, self.error = make, base, None, None

    def run(self) -> None:
        try:
            self.value = self.make(self.base)
        except BaseException as exc:  # noqa: BLE001 - raised again in each test that asks for the run
            self.error = exc

    def result(self):
        if self.ident is None:
            self.start()
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture(scope="session", autouse=True)
def session_runs(request, tmp_path_factory):
    """Starts the SESSION_RUNS that some selected test reads as the session begins, in the background: they overlap
    the tests before the first one that waits for them (pytest_collection_modifyitems puts those last), whose unit
    tests use one core. At the end, stops what is still running (the live run's mlflow server).
    Measured on this 2-core machine (load 4-8 from other sessions), the unit modules plus the determinism test:
    232 and 238 s with the runs made when first asked for, 161 and 183 s with this."""
    needed = set().union(*(item.fixturenames for item in request.session.items))
    runs = {name: SessionRun(make, tmp_path_factory.getbasetemp()) for name, make in SESSION_RUNS.items()}
    for name, run in runs.items():
        if name in needed:
            run.start()
    yield runs
    for proc in list(RUNNING):
        stop_group(proc, grace_s=3)   # a server of a temporary folder: no need to wait on its open connections


@pytest.fixture(scope="session")
def tiny_reference(session_runs) -> Path:
    """The tiny config run once per session, locally (--cores 2, deferred tracking): its workflow folder. Tests
    read it, run plan-only commands in it, or change a `copy_run` of it; the other whole runs must match it."""
    return session_runs["tiny_reference"].result()


@pytest.fixture(scope="session")
def tiny_live_server(session_runs) -> tuple[Path, str, Run]:
    """The tiny config run fresh with live tracking to an `mlflow server` that stays up for the session: (workflow
    folder, server URI, Run). test_tracking checks what reached the server; test_faults uses it as the second fresh
    run (the tracking mode must not change results)."""
    return session_runs["tiny_live_server"].result()


def pytest_collection_modifyitems(config, items):
    """The tests that read a session run go last (in their order), so that the runs, started in the background as
    the session begins (session_runs), overlap the unit tests, which use one core, rather than each other."""
    def reads_a_run(item):
        return bool(set(SESSION_RUNS) & set(item.fixturenames))

    items.sort(key=reads_a_run)   # stable: the order within each part is kept
