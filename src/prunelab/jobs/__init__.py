"""What every workflow job does around its algorithm: logging, device, tracking, metrics.json + run.json.

Each rule's script in scripts/ calls one function of prunelab.jobs.baseline / scoring / pruning / controls with
Snakemake's `snakemake` object (duck-typed, no Snakemake import here); that function builds a `Job` from it,
calls the library and hands the record to `Job.finish`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

from prunelab.io import save_json
from prunelab.measure.deploy import compile_problem
from prunelab.models import pick_device
from prunelab.numerics import machine_info
from prunelab.records import config_hash, empty_record, git_commit, source_hash
from prunelab.settings import (RUNTIME_ENV, FinetuneSettings, GradualSettings, LatencySettings, PruneSettings,
                               ResumeSettings, StatsSettings, TrainSettings, published_runtime)
from prunelab.tracking import LiveRun, job_id, now_ms, write_run_file
from prunelab.training.resume import ResumeState

log = logging.getLogger("prunelab")
# The per-epoch keys prunelab.training.train_model logs itself.
EPOCH_KEYS = ("epoch", "lr", "loss_train", "top1_train", "top1_val", "loss_val")
# Runtime settings (the workflow's, see prunelab.settings.RUNTIME_ENV): they cannot change a model's weights.
RUNTIME_KEYS = ("device", "latency", "resume")


def setup_logging(log_file: str | Path | None) -> None:
    """Send prunelab's log (and warnings) to the job's log file, or stderr.

    With a log file, an uncaught exception is written there too (the file Snakemake points to on failure): the
    traceback, then as the file's last line `ERROR <ExceptionType>: <message on one line>`; the console still
    shows the usual traceback.
    """
    if log_file and any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == Path(log_file).resolve()
                        for h in logging.getLogger().handlers):
        return  # the second Job of a two-step job (prune_finetune) appends to the same log
    handlers = [logging.FileHandler(log_file, mode="w")] if log_file else [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    if log_file:
        sys.excepthook = _log_uncaught


def failure_line(exc: BaseException) -> str:
    """The one-line cause of a failed job: `ERROR <ExceptionType>: <message>` (newlines folded to spaces)."""
    message = " ".join(str(exc).split())
    return f"ERROR {type(exc).__name__}: {message}" if message else f"ERROR {type(exc).__name__}"


def _log_uncaught(exc_type, exc, tb) -> None:
    """sys.excepthook of a job: traceback and one-line cause into the log file, then the default hook."""
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.FileHandler) and stream is not None:
                stream.write(f"job failed: uncaught exception\n{text}\n{failure_line(exc)}\n")
                handler.flush()
    finally:
        sys.__excepthook__(exc_type, exc, tb)


def read_tracking_settings(path: str | Path | None, experiment: str | None = None) -> dict:
    """Where the job's MLflow runs go ({mode, uri, experiment}): what the workflow published for `experiment` in
    the environment (prunelab.settings.RUNTIME_ENV), else the file the main workflow's onstart writes
    (results/{exp}/tracking.json); deferred if neither exists."""
    published = published_runtime(experiment) if experiment else None
    if published is not None:
        return published["tracking"]
    if path and Path(path).exists():
        return json.loads(Path(path).read_text())
    return {"mode": "deferred"}


def read_runtime_settings(path: str | Path, experiment: str | None = None) -> dict:
    """Settings that cannot change a model's weights ({device, latency, resume}), not rule params or inputs, so
    changing them reruns no job: what the workflow published for `experiment` in the job's environment (every
    Snakemake process that parses the workflow does, a module import too; prunelab.settings.RUNTIME_ENV), else the
    file the main workflow's onstart writes (results/{exp}/runtime.json)."""
    published = published_runtime(experiment) if experiment else None
    if published is not None:
        return published["runtime"]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"runtime settings of experiment {experiment!r} are not in the environment "
                                f"(${RUNTIME_ENV}) and the file {path} does not exist; both come from snakemake "
                                "when it parses the workflow and starts a run: run the job through snakemake")
    return json.loads(path.read_text())


def resolved_params(smk) -> dict:
    """The rule's params plus the runtime settings (device, latency, resume) when the rule passes `runtime_file`;
    a rule param of the same name wins."""
    params = dict(smk.params.items())
    if params.get("runtime_file"):
        params = {**read_runtime_settings(params["runtime_file"], params.get("experiment")), **params}
    return params


# Rule params that are config sections a library function takes: typed settings for the job functions.
TYPED_PARAMS = {"prune": (PruneSettings, "prune"), "train": (TrainSettings, "train"),
                "finetune": (FinetuneSettings, "finetune"), "latency": (LatencySettings, "latency"),
                "stats": (StatsSettings, "stats"), "gradual": (GradualSettings, "gradual")}


def script_params(smk) -> SimpleNamespace:
    """`resolved_params` as attributes (`p.device`, `p.method_config`, ...); the config sections in TYPED_PARAMS
    as typed settings, built from the config Snakemake validated and completed (not checked a second time)."""
    params = resolved_params(smk)
    for key, (cls, section) in TYPED_PARAMS.items():
        if isinstance(params.get(key), dict):
            params[key] = cls.from_config(params[key], section)
    return SimpleNamespace(**params)


def start_script(smk) -> None:
    """For scripts without a Job: log to the rule's log file and use the rule's thread count."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    torch.set_num_threads(max(1, int(smk.threads)))
    log.info("%s started", smk.rule)


def end_process() -> None:
    """Exit at once after a job's outputs are written: flush logs and stdio, skip interpreter teardown.

    Tearing down torch's modules costs about 0.4 s per process, paid by each of the hundreds of short jobs;
    every output is already written atomically and closed when this is called.
    """
    log.info("process done")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def check_latency_settings(rule: str, params: dict) -> None:
    """Before any work: `latency.compile` needs what compilation needs on the job's device (RuntimeError)."""
    if not (params.get("latency") or {}).get("compile"):
        return
    problem = compile_problem(pick_device(params["device"]))
    if problem:
        raise RuntimeError(f"rule {rule}: {problem}")


class Job:
    """One workflow job: rule name, wildcards, the config subset it uses (params), output folder."""

    def __init__(self, rule: str, wildcards: dict, params: dict, out_dir: str | Path, log_file=None,
                 parent_wildcards: dict | None = None, parent_rule: str = "train_baseline", threads: int = 1):
        setup_logging(log_file)
        check_latency_settings(rule, params)
        self.rule, self.wildcards, self.params = rule, dict(wildcards), dict(params)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.parent = job_id(parent_rule, parent_wildcards) if parent_wildcards else None
        self.history: list[dict] = []
        self.resume: ResumeState | None = None
        self.t0 = time.perf_counter()
        self.start_ms = now_ms()
        torch.set_num_threads(max(1, int(threads)))
        tracking = read_tracking_settings(params.get("tracking_file"), params.get("experiment"))
        self.live = None
        if tracking.get("mode") == "live":
            self.live = LiveRun(tracking["uri"], tracking["experiment"], self.out_dir, rule, self.wildcards,
                                self.job_params(), self.parent)
        log.info("job %s started; params hash %s", job_id(rule, self.wildcards), config_hash(self.job_params()))

    @classmethod
    def from_snakemake(cls, smk, out_key: str = "metrics", rule: str | None = None, without: tuple = (),
                       **kw) -> "Job":
        """Build from the `snakemake` object a `script:` receives; the output named `out_key` fixes the folder.

        A rule that does two steps in one process (prune_finetune) builds one Job per step: `rule` names the
        step (its run.json, MLflow run and log lines), `without` drops the params only the other step uses.
        """
        wildcards = {k: smk.wildcards[k] for k in smk.wildcards.keys()}
        out_dir = Path(getattr(smk.output, out_key)).parent
        log_file = smk.log[0] if len(smk.log) else None
        params = {k: v for k, v in resolved_params(smk).items() if k not in without}
        return cls(rule or smk.rule, wildcards, params, out_dir, log_file, threads=smk.threads, **kw)

    def job_params(self) -> dict:
        """The resolved config this job used (runtime settings included), without file paths, threads and the
        resume cadence (which changes nothing a job records)."""
        return {k: v for k, v in self.params.items()
                if k not in ("tracking_file", "runtime_file", "threads", "resume")}

    def resume_state(self, inputs, part: str = "") -> ResumeState:
        """The resume state of this job's training (prunelab.training.resume), to hand to the training function.

        Its file lies beside the job's outputs (not one of them: Snakemake removes a killed job's outputs, the state
        stays), named resume-<key>-<source hash>[-<part>].pt; the key hashes the job's params (the runtime settings
        left out), its wildcards and its input files (path, size, mtime), so a state made with another config,
        input or code is never loaded; such stale states in the folder are deleted here. `part` names one of
        several training runs of a job (the rounds of an iterative schedule), each with its own state. SIGTERM (a
        SLURM time limit or preemption) and SIGINT make the job write the state of the run under way at once and
        exit non-zero; `finish` removes every part.
        """
        files = [Path(f) for f in inputs]
        key = config_hash({"params": {k: v for k, v in self.job_params().items() if k not in RUNTIME_KEYS},
                           "wildcards": self.wildcards, "rule": self.rule,
                           "inputs": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]})
        prefix = f"resume-{key}-{source_hash()}"
        for stale in self.out_dir.glob("resume-*.pt"):
            if not stale.name.startswith(prefix):
                log.info("deleting resume state %s: made with another config, input or code", stale.name)
                stale.unlink(missing_ok=True)
        path = self.out_dir / (f"{prefix}-{part}.pt" if part else f"{prefix}.pt")
        self.resume = ResumeState(path, ResumeSettings.from_config(self.params.get("resume")))
        self.resume.register("job_history", lambda: list(self.history), self._restore_history)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_on_signal)
        return self.resume

    def _restore_history(self, history: list[dict]) -> None:
        """A resumed run's earlier epochs: kept for run.json, and logged again to a live run (a new MLflow run)."""
        self.history = [dict(r) for r in history]
        if self.live is not None:
            for record in self.history:
                self.live.log_epoch(record)

    def _stop_on_signal(self, signum, frame) -> None:
        """SIGTERM/SIGINT while training: write the last finished epoch's resume state, exit 128 + signum."""
        if self.resume.writing:  # the state is being written: exit when that write ends
            self.resume.after_write = lambda: self._stop_on_signal(signum, frame)
            return
        self.resume.write_snapshot()
        name = signal.Signals(signum).name
        if self.resume.written_epoch:
            log.warning("%s: stopping; the resume state holds epoch %d (%s): a rerun of this job continues from "
                        "there", name, self.resume.written_epoch, self.resume.path.name)
        else:
            log.warning("%s: stopping before the first epoch ended: nothing to resume from", name)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    def on_epoch(self, record: dict) -> None:
        """Per-epoch callback for training loops: kept for run.json with its time (`time_ms`, the timestamp of
        the epoch's metrics in MLflow), sent to MLflow in live mode."""
        self.history.append({**record, "time_ms": now_ms()})
        extra = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items() if k not in EPOCH_KEYS}
        if extra:  # train_model logs the standard keys; loops that add their own (gradual pruning) are logged here
            log.info("epoch %s: %s", record.get("epoch"), extra)
        if self.live is not None:
            self.live.log_epoch(record)

    def record(self, **fields) -> dict:
        """A metrics.json record with the job's identity keys filled (experiment, seed, config hash, ...)."""
        wc = self.wildcards
        base = {"experiment": self.params.get("experiment"), "dataset": self.params.get("dataset"),
                "arch": wc.get("arch"), "regime": wc.get("regime"),
                "seed": int(wc["seed"]) if "seed" in wc else None, "method": wc.get("method"),
                "granularity": wc.get("granularity"),
                "ratio_requested": float(wc["ratio"]) if "ratio" in wc else None,
                "git_commit": git_commit(), "source_hash": source_hash(),
                "config_hash": config_hash(self.job_params())}
        base.update(fields)
        return empty_record(**base)

    def finish(self, record: dict, metrics_path: str | Path) -> None:
        """Write metrics.json and run.json (atomically), then close the live run if any."""
        if record.get("wall_s") is None:
            record["wall_s"] = time.perf_counter() - self.t0
        save_json(record, metrics_path)
        write_run_file(self.out_dir, self.rule, self.wildcards, self.job_params(), self.parent, self.history,
                       times=(self.start_ms, now_ms()), machine=machine_info())
        if self.resume is not None:  # the job is complete: nothing to resume any more
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)
            for state in self.out_dir.glob("resume-*.pt"):
                state.unlink(missing_ok=True)
        if self.live is not None:
            self.live.finish()
        log.info("job finished: %s", {k: record[k] for k in ("stage", "top1_val", "top1_test") if k in record})
