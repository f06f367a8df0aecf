"""Wall time and per-job overhead of a whole workflow run, and the no-op rerun.

Runs one experiment (default: config/config.yaml) from scratch in a throw-away workflow folder (links to the
repo's Snakefile, workflow/, scripts/, config/, like the tests), `snakemake --cores N --scheduler greedy`, the
way `make run` does (PYTHONHASHSEED=0, PYTHONDONTWRITEBYTECODE unset). Then runs it again, which must print
"Nothing to be done".

Figures (targets of the default experiment on 2 CPU cores):
- wall_s: the whole first run; wall_after_setup_s: minus the prepare_data job, which every other job waits
  for (target ≤ 600 s);
- jobs: the number of jobs Snakemake ran (its "N of N steps" line), and per rule;
- per-job overhead (target ≤ 3 s median): for every job with a Snakemake `benchmark:` file and a prunelab job log,
      overhead = benchmark wall time (s column) − (time of the log's "job finished" line − time of its
                 "job ... started" line),
  i.e. everything the job costs outside its own work: interpreter start, Snakemake's script preamble (import
  + unpickling the `snakemake` object), importing torch and prunelab up to `Job.__init__`, and process exit.
  The job's own work (loading data, training, writing files) is between the two log lines and is not overhead;
- busy fraction: Σ benchmark wall time / (wall × cores) over the jobs that have a benchmark;
- noop_rerun_s: wall time of the second run (target ≤ 10 s).

Where the overhead goes. With tracing (default; --no-trace to skip), a sitecustomize put on the run's PYTHONPATH
times each job's python process: interpreter start (kernel start time of the process -> site), Snakemake's
preamble (first import of snakemake -> first import of prunelab/torch), imports up to the "job ... started" line,
"job finished" -> atexit, and outside_process = benchmark s - (atexit - process start): interpreter teardown
after atexit plus Snakemake's own handling of the job in its main process. Then fresh interpreters (median of
--repeats) timing `pass`, `import torch`, Snakemake's script preamble imports, the imports of a training job's
script, `import mlflow`, and opening + closing one MLflow run on an existing SQLite database (what
`tracking.mode: live` adds per job); `-X importtime` of the job's imports, largest first; and whether
torch._dynamo / torchvision / mlflow end up imported in a job.

    python benchmarks/pipeline_overhead.py [--config config/config.yaml] [--cores 2] [--workdir DIR]
                                           [--repeats 3] [--skip-imports] [--no-trace] [--rerun-only] [--fast-exit]
                                           [--scheduler greedy|ilp] [--keep-going] [--resume] [--out FILE]

Writes JSON (default results/bench/pipeline_overhead.json; results/bench/pipeline_overhead_<experiment>.json for
any other --config). The workdir (default results/bench/pipeline/<experiment>) is wiped first and kept after.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINKS = ("Snakefile", "workflow", "scripts", "config")
TARGETS = {"wall_after_setup_s": 600.0, "overhead_median_s": 3.0, "noop_rerun_s": 10.0}
STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: job \S+ started")
FINISHED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: job finished")
# What the scripts of training / pruning jobs import (scripts/train_baseline.py, prune_finetune.py).
JOB_IMPORTS = ("prunelab.jobs.baseline", "prunelab.jobs.pruning")
PREAMBLE = "import pickle; from snakemake import script; from snakemake.logging import logger"
HEAVY = ("torch._dynamo", "torchvision", "mlflow", "sqlalchemy", "pandas", "sklearn", "torch_pruning")
TRACE_ENV = "PRUNELAB_BENCH_TRACE"
# Put first on PYTHONPATH of the benchmark's own run (--trace): every job script process records when it was
# created (kernel start time), when it first imports snakemake (the preamble), prunelab (its own imports) and
# torch, and when it exits (atexit), with the job's log path, in $PRUNELAB_BENCH_TRACE/<pid>.json.
SITECUSTOMIZE = r"""
import os, sys, time
_dir = os.environ.get("PRUNELAB_BENCH_TRACE")
if _dir and sys.argv and ".snakemake" in sys.argv[0] and "scripts" in sys.argv[0]:
    import atexit, json
    def _started(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    def _comm(pid):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                return fh.read().strip()
        except OSError:
            return None
    _t = {"site": time.time(), "create": _started("self"), "parent": _comm(os.getppid()),
          "parent_create": _started(os.getppid())}
    class _Watch:
        names = ("snakemake", "prunelab", "torch")
        def find_spec(self, name, path=None, target=None):
            if name in self.names and name not in _t:
                _t[name] = time.time()
            return None
    sys.meta_path.insert(0, _Watch())
    def _done():
        _t["atexit"] = time.time()
        smk = getattr(sys.modules.get("__main__"), "snakemake", None)
        try:
            _t["log"] = str(smk.log[0]) if smk is not None and len(smk.log) else None
            _t["rule"] = smk.rule if smk is not None else None
        except Exception:
            _t["log"] = None
        with open(os.path.join(_dir, f"{os.getpid()}.json"), "w") as fh:
            json.dump(_t, fh)
        if os.environ.get("PRUNELAB_BENCH_FAST_EXIT"):  # registered first, so it runs after every other handler
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    atexit.register(_done)
"""


def job_env(trace: Path | None = None, fast_exit: bool = False) -> dict:
    """The environment `make run` gives Snakemake (Makefile: PYTHONHASHSEED=0, PYTHONDONTWRITEBYTECODE unset);
    with `trace`, the job-tracing sitecustomize folder first on PYTHONPATH (and with `fast_exit`, each job
    process ends with os._exit(0) after its atexit handlers, skipping the interpreter's teardown)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if fast_exit:
        env["PRUNELAB_BENCH_FAST_EXIT"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if trace is not None:
        site = trace / "site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
        env[TRACE_ENV] = str(trace)
    return env


def make_workdir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for name in LINKS:
        (path / name).symlink_to(REPO / name)
    return path


def run_snakemake(workdir: Path, config: Path, cores: int, log: Path, trace: Path | None = None,
                  scheduler: str = "greedy", fast_exit: bool = False, keep_going: bool = False
                  ) -> tuple[float, str, int]:
    cmd = [str(BIN / "snakemake"), "--configfile", str(config), "--cores", str(cores), "--scheduler", scheduler,
           *(["--keep-going"] if keep_going else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=job_env(trace, fast_exit), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout)
    return wall, proc.stdout, proc.returncode


def job_stats(stdout: str) -> dict[str, int]:
    """{rule: jobs} of the first 'Job stats:' table Snakemake printed (what the first run planned)."""
    if "Job stats:" not in stdout:
        return {}
    table = stdout[stdout.index("Job stats:"):]
    table = table[: table.index("\ntotal") if "\ntotal" in table else len(table)]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def read_traces(trace: Path | None, workdir: Path) -> dict[str, dict]:
    """{job log path relative to the workdir: trace record} from the sitecustomize files."""
    out = {}
    if trace is None:
        return out
    for f in trace.glob("*.json"):
        t = json.loads(f.read_text())
        if t.get("log"):
            out[str(Path(t["log"]))] = t
    return out


def job_records(root: Path, traces: dict | None = None) -> list[dict]:
    """One record per job with a benchmark file: rule, benchmark s, in-job span from its log, overhead, and
    (with traces) the phases of the job's process."""
    traces = traces or {}
    out = []
    for tsv in sorted((root / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(root / "benchmarks")
        rule = rel.parts[0]
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rec = {"rule": rule, "job": str(rel.with_suffix("")), "benchmark_s": float(row["s"]),
               "max_rss_mb": float(row["max_rss"]) if row.get("max_rss") not in (None, "", "-") else None,
               "span_s": None, "overhead_s": None}
        log = root / "logs" / rel.with_suffix(".log")
        if log.is_file():
            start = end = None
            for line in log.read_text(errors="replace").splitlines():
                if start is None and (m := STARTED.match(line)):
                    start = stamp(m.group(1))
                elif m := FINISHED.match(line):
                    end = stamp(m.group(1))
            if start is not None and end is not None:
                rec["span_s"] = end - start
                rec["overhead_s"] = rec["benchmark_s"] - rec["span_s"]
            t = traces.get(str(log.relative_to(root.parent.parent)))
            if t and start is not None and end is not None and t.get("create") and t.get("atexit"):
                first_import = min(v for v in (t.get("prunelab"), t.get("torch"), start) if v is not None)
                phases = {"interpreter_start_s": t["site"] - t["create"],
                          "snakemake_preamble_s": first_import - t.get("snakemake", t["site"]),
                          "imports_to_job_start_s": start - first_import,
                          "after_job_finished_s": t["atexit"] - end,
                          "outside_process_s": rec["benchmark_s"] - (t["atexit"] - t["create"])}
                if t.get("parent") == "bash" and t.get("parent_create"):
                    phases["shell_wrapper_s"] = t["create"] - t["parent_create"]
                rec["phases"] = phases
        out.append(rec)
    return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {"n": len(v), "median": statistics.median(v), "p90": v[min(len(v) - 1, int(0.9 * len(v)))],
            "min": v[0], "max": v[-1], "sum": sum(v)}


# ----------------------------------------------------------------------------------------- where it goes
def time_python(code: str, repeats: int, env: dict | None = None) -> float:
    """Median wall seconds of a fresh `python -c code` (the venv's interpreter)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env or job_env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_profile(repeats: int) -> dict:
    env = job_env()
    imports = "import " + ", ".join(JOB_IMPORTS)
    res = {
        "python_pass_s": time_python("pass", repeats),
        "import_torch_s": time_python("import torch", repeats),
        "snakemake_preamble_s": time_python(PREAMBLE, repeats),
        "job_imports_s": time_python(imports, repeats),
        "preamble_plus_job_imports_s": time_python(f"{PREAMBLE}; {imports}", repeats),
        "import_mlflow_s": time_python("import mlflow", repeats),
    }
    probe = subprocess.run([sys.executable, "-c", f"{PREAMBLE}; {imports}; import sys, json; "
                            f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"],
                           env=env, capture_output=True, text=True, check=True)
    res["heavy_modules_loaded_in_job"] = json.loads(probe.stdout.strip().splitlines()[-1])
    # -X importtime: cumulative microseconds per top-level import of the job (largest first)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"{PREAMBLE}; {imports}"], env=env,
                          capture_output=True, text=True, check=True)
    top = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only (one space of indent)
            top.append((int(m.group(2)) / 1e6, m.group(4)))
    res["importtime_top"] = [{"module": name, "cumulative_s": s} for s, name in sorted(top, reverse=True)[:10]]
    # live tracking: open and close one run on an already created SQLite database, in a fresh process
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        setup = (f"import mlflow; mlflow.set_tracking_uri({uri!r}); "
                 f"mlflow.set_experiment('bench')")
        subprocess.run([sys.executable, "-c", setup], env=env, check=True, capture_output=True)
        run = (f"import mlflow; mlflow.set_tracking_uri({uri!r}); mlflow.set_experiment('bench')\n"
               "with mlflow.start_run(run_name='job'):\n    mlflow.log_metric('top1_val', 1.0)")
        res["mlflow_live_run_sqlite_s"] = time_python(run, repeats)
    return res


# ----------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/config.yaml", help="experiment config (default: the default one)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep-going", action="store_true", help="let independent jobs finish when one fails")
    ap.add_argument("--resume", action="store_true",
                    help="finish a first run that stopped part-way, in its kept workdir, after the cause is fixed: "
                         "the failed jobs and those waiting on them run; wall time = both runs (both recorded)")
    ap.add_argument("--scheduler", default="greedy", choices=("greedy", "ilp"),
                    help="Snakemake's job scheduler (make run uses greedy; ilp is Snakemake's default)")
    ap.add_argument("--workdir", help="throw-away workflow folder (default results/bench/pipeline/<experiment>)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per timed import probe")
    ap.add_argument("--skip-imports", action="store_true", help="skip the import / MLflow probes")
    ap.add_argument("--rerun-only", action="store_true",
                    help="only time a rerun in an existing workdir (its first run done), e.g. after the workflow "
                         "changed under the first run's no-op measurement")
    ap.add_argument("--no-trace", action="store_true",
                    help="do not time the phases of each job's process (a sitecustomize on the run's PYTHONPATH)")
    ap.add_argument("--fast-exit", action="store_true",
                    help="what-if: end every traced job process with os._exit(0) after its atexit handlers (what "
                         "ending the job scripts that way would save); needs tracing")
    ap.add_argument("--out", help="JSON file (default results/bench/pipeline_overhead[_<experiment>].json)")
    args = ap.parse_args()

    config = Path(args.config)
    config = (config if config.is_absolute() else Path.cwd() / config).resolve()
    exp = yaml.safe_load(config.read_text())["experiment"]
    default = config == (REPO / "config/config.yaml").resolve()
    workdir = Path(args.workdir or REPO / "results/bench/pipeline" / exp).resolve()
    out = Path(args.out or REPO / "results/bench" / ("pipeline_overhead.json" if default
                                                      else f"pipeline_overhead_{exp}.json"))
    if args.rerun_only:
        load = os.getloadavg()
        wall, stdout, rc = run_snakemake(workdir, config, args.cores, workdir / "rerun.log",
                                         scheduler=args.scheduler)
        ok = rc == 0 and "Nothing to be done" in stdout
        print(f"rerun in {workdir}: {wall:.1f} s ({'Nothing to be done' if ok else 'jobs ran or it failed'}; "
              f"target <= {TARGETS['noop_rerun_s']:.0f} s); load average {load[0]:.1f} on {os.cpu_count()} CPUs")
        if out.is_file():
            result = json.loads(out.read_text())
            result.update(noop_rerun_s=wall, noop_nothing_to_be_done=ok, noop_load_average=load)
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"updated {out}")
        return 0 if ok else 1
    resumed = None
    if not args.resume:
        make_workdir(workdir)
    load_start = os.getloadavg()
    print(f"experiment {exp} ({config}), {args.cores} cores, in {workdir}")
    print(f"load average at start: {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f} "
          f"on {os.cpu_count()} CPUs")

    if args.fast_exit and args.no_trace:
        ap.error("--fast-exit works through the tracing sitecustomize: drop --no-trace")
    trace = None if args.no_trace else workdir / ".trace"
    if args.resume:  # the stopped run's log and wall time, then the rest of the run
        stopped = (workdir / "run1.log").read_text()
        (workdir / "run1_stopped.log").write_text(stopped)
        m = re.findall(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)$", stopped, re.M)
        if not m:
            ap.error(f"--resume: {workdir / 'run1.log'} holds no 'Elapsed time' line of a stopped run")
        h, mi, sec = m[-1]
        stopped_s = 3600 * int(h) + 60 * int(mi) + float(sec)
        rest_s, rest, rc = run_snakemake(workdir, config, args.cores, workdir / "run1_resumed.log", trace,
                                         args.scheduler, args.fast_exit, args.keep_going)
        wall, stdout = stopped_s + rest_s, stopped + rest
        resumed = {"stopped_run_s": stopped_s, "resume_s": rest_s,
                   "failed_in_stopped_run": len(re.findall(r"^Error in rule ", stopped, re.M))}
        print(f"resumed: stopped run {stopped_s:.1f} s ({resumed['failed_in_stopped_run']} failed jobs), "
              f"the rest {rest_s:.1f} s")
    else:
        wall, stdout, rc = run_snakemake(workdir, config, args.cores, workdir / "run1.log", trace,
                                         args.scheduler, args.fast_exit, args.keep_going)
    if rc != 0:
        print(stdout[-4000:])
        print(f"snakemake failed ({rc}); log in {workdir / 'run1.log'}")
        return 1
    steps = re.findall(r"(\d+) of (\d+) steps \(\d+%\) done", stdout)
    n_jobs = int(steps[0][1]) if steps else None  # what the (first) run planned
    per_rule = job_stats(stdout)
    load_mid = os.getloadavg()
    recs = job_records(workdir / "results" / exp, read_traces(trace, workdir))  # the first run's jobs only

    noop_wall, noop_out, noop_rc = run_snakemake(workdir, config, args.cores, workdir / "run2.log",
                                                 scheduler=args.scheduler)
    noop_ok = noop_rc == 0 and "Nothing to be done" in noop_out
    if not noop_ok:
        print("the rerun did not report 'Nothing to be done' (did the workflow or config change during the "
              "first run?); see run2.log, and time a rerun again with --rerun-only")
    phase_names = sorted({k for r in recs for k in r.get("phases", {})})
    phases = {k: summary([r["phases"][k] for r in recs if k in r.get("phases", {})]) for k in phase_names}
    setup_s = sum(r["benchmark_s"] for r in recs if r["rule"] == "prepare_data")
    overheads = [r["overhead_s"] for r in recs if r["overhead_s"] is not None]
    by_rule = {}
    for rule in sorted({r["rule"] for r in recs}):
        rr = [r for r in recs if r["rule"] == rule]
        by_rule[rule] = {"benchmark_s": summary([r["benchmark_s"] for r in rr]),
                         "span_s": summary([r["span_s"] for r in rr if r["span_s"] is not None]),
                         "overhead_s": summary([r["overhead_s"] for r in rr if r["overhead_s"] is not None])}
    bench_sum = sum(r["benchmark_s"] for r in recs)
    result = {
        "benchmark": "pipeline_overhead", "experiment": exp, "config": str(config), "cores": args.cores,
        "scheduler": args.scheduler, "fast_exit": args.fast_exit, "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_after_run": load_mid,
        "wall_s": wall, "setup_s": setup_s, "wall_after_setup_s": wall - setup_s,
        "jobs": n_jobs, "jobs_per_rule": per_rule, "jobs_with_benchmark": len(recs),
        "overhead_definition": "benchmark s - (log 'job finished' - log 'job ... started')",
        "overhead_s": summary(overheads), "by_rule": by_rule,
        "overhead_phases_s": phases,
        "busy_fraction": bench_sum / (wall * args.cores) if wall else None,
        "noop_rerun_s": noop_wall, "noop_nothing_to_be_done": noop_ok, "targets": TARGETS, "jobs_detail": recs,
        "resumed": resumed,
    }
    if not args.skip_imports:
        result["where_it_goes"] = import_profile(args.repeats)
    result["load_average_end"] = os.getloadavg()

    # ------------------------------------------------------------------ print
    ov = result["overhead_s"]
    print(f"\nfirst run: {wall:.1f} s wall, {n_jobs} jobs ({', '.join(f'{k} {v}' for k, v in per_rule.items())})")
    print(f"  set-up (prepare_data): {setup_s:.1f} s; after set-up: {wall - setup_s:.1f} s "
          f"(target <= {TARGETS['wall_after_setup_s']:.0f} s on 2 cores)")
    print(f"  busy fraction of {args.cores} cores (jobs with a benchmark): {result['busy_fraction']:.2f}")
    spans = sum(r["span_s"] for r in recs if r["span_s"] is not None)
    print(f"  split of the jobs' summed time: compute (in-job spans) {spans:.0f} s, per-job overhead "
          f"{sum(overheads):.0f} s, other (jobs without a prunelab log) {bench_sum - spans - sum(overheads):.0f} s")
    print("per-job overhead = Snakemake benchmark s - in-job span ('job ... started' -> 'job finished' in its log):")
    if ov["n"]:
        print(f"  all {ov['n']} jobs: median {ov['median']:.2f} s, p90 {ov['p90']:.2f} s, max {ov['max']:.2f} s, "
              f"total {ov['sum']:.0f} s (target median <= {TARGETS['overhead_median_s']:.0f} s)")
    for rule, s in by_rule.items():
        b, o, sp = s["benchmark_s"], s["overhead_s"], s["span_s"]
        line = f"  {rule:<15} n={b['n']:<4} job median {b['median']:.2f} s"
        if o["n"]:
            line += f", in-job {sp['median']:.2f} s, overhead median {o['median']:.2f} s (max {o['max']:.2f})"
        print(line)
    if phases:
        print("  phases of a job's process (median over traced jobs; from the kernel start time of the process):")
        for k, v in phases.items():
            print(f"    {k:<26} {v['median']:.2f} s (p90 {v['p90']:.2f}, n={v['n']})")
    noop_said = "Nothing to be done" if noop_ok else "DID NOT report Nothing to be done"
    print(f"no-op rerun: {noop_wall:.1f} s ({noop_said}; target <= {TARGETS['noop_rerun_s']:.0f} s)")
    if "where_it_goes" in result:
        w = result["where_it_goes"]
        print(f"where a job's start-up goes (fresh interpreter, median of {args.repeats}):")
        for key in ("python_pass_s", "import_torch_s", "snakemake_preamble_s", "job_imports_s",
                    "preamble_plus_job_imports_s", "import_mlflow_s", "mlflow_live_run_sqlite_s"):
            print(f"  {key:<30} {w[key]:.2f} s")
        print("  largest imports of a job (-X importtime, cumulative): "
              + ", ".join(f"{t['module']} {t['cumulative_s']:.2f} s" for t in w["importtime_top"][:6]))
        print("  imported in a job: " + ", ".join(f"{k}={'yes' if v else 'no'}"
                                                  for k, v in w["heavy_modules_loaded_in_job"].items()))
    le = result["load_average_end"]
    print(f"load average: start {load_start[0]:.1f}, after run {load_mid[0]:.1f}, end {le[0]:.1f} "
          f"({os.cpu_count()} CPUs; other processes share them)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if noop_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
