"""MLflow tracking: the browsing layer over the result files (README: tracking).

The files are the truth. Every job writes `run.json` beside its metrics.json: job id, rule, wildcards, the
resolved config it used (params), its parent job, and the per-epoch history. Two modes:

- ``deferred`` (local default): jobs never import MLflow; `sync_results` logs every finished job in one process
  at the end (the `track` rule, or `make mlflow-sync`). Idempotent: a job already logged with the same
  metrics is skipped, a re-run job replaces its old run.
- ``live``: each job opens its MLflow run while it runs (per-epoch curves appear during training). If the
  backend cannot be reached, the job still writes all its files, warns once, and leaves a `.mlflow_unsynced`
  marker; `sync_results` fills the gap later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from prunelab.io import load_json, save_json

log = logging.getLogger("prunelab.tracking")
UNSYNCED = ".mlflow_unsynced"
TAG_JOB, TAG_HASH = "prunelab.job_id", "prunelab.metrics_hash"
# The experiment tag MLflow's UI (3.x) reads to open an experiment on its training runs rather than on its GenAI
# traces view (values in the UI's ExperimentKind: custom_model_development, genai_development, ...).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# MLflow's HTTP defaults (7 retries with exponential backoff, 120 s timeout) make one call to an unreachable tracking
# server cost about 4 minutes per job; with these a job degrades to files in seconds. Settings in the environment win.
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def bound_http_retries() -> None:
    """Fail fast when the tracking server is down (HTTP_BOUNDS, unless already set in the environment)."""
    for var, value in HTTP_BOUNDS.items():
        os.environ.setdefault(var, value)


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (MLflow's unit for run times and metric timestamps)."""
    return int(time.time() * 1000)


def default_uri(results_root: str | Path) -> str:
    """SQLite database at <results_root>/mlflow.db (absolute path)."""
    return f"sqlite:///{Path(results_root).resolve() / 'mlflow.db'}"


def job_id(rule: str, wildcards: dict) -> str:
    """Stable id of a job: rule/key=value/... in wildcard order."""
    return "/".join([rule] + [f"{k}={v}" for k, v in wildcards.items()])


def run_name(rule: str, wildcards: dict) -> str:
    return f"{rule}[" + ",".join(f"{k}={v}" for k, v in wildcards.items()) + "]"


def init_tracking(uri: str, experiment: str, artifact_root: str | Path | None = None) -> str:
    """Create the database (if SQLite) and the experiment once, before any job starts; returns its id. The
    experiment is tagged as one of training runs (KIND_TAG), also when it existed without (or with another) kind.

    Concurrent jobs must never race on schema creation or `set_experiment`: call this from `onstart`.
    """
    from mlflow.tracking import MlflowClient

    bound_http_retries()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.tags.get(KIND_TAG) != KIND:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root and uri.startswith("sqlite") else None
    return client.create_experiment(experiment, artifact_location=location, tags={KIND_TAG: KIND})


def write_run_file(out_dir: str | Path, rule: str, wildcards: dict, params: dict, parent: str | None,
                   history: list[dict], times: tuple[int, int] | None = None, machine: dict | None = None) -> Path:
    """Write run.json (what a tracker needs to log this job later) into the job's output folder.

    history: per-epoch records, each with its `time_ms`; times: the job's (start, end) in ms since the epoch;
    machine: `prunelab.numerics.machine_info()` of the job's process."""
    path = Path(out_dir) / "run.json"
    save_json({"job_id": job_id(rule, wildcards), "run_name": run_name(rule, wildcards), "rule": rule,
               "wildcards": {k: str(v) for k, v in wildcards.items()}, "params": params, "parent_job": parent,
               "start_time_ms": times[0] if times else None, "end_time_ms": times[1] if times else None,
               "machine": machine, "history": history}, path)
    return path


def job_times(run: dict, metrics_path: Path, metrics: dict) -> tuple[int, int]:
    """(start, end) of a job in ms since the epoch: run.json's own, or for a run.json written before it recorded
    them, metrics.json's modification time as the end and its wall_s before that as the start."""
    if run.get("start_time_ms") is not None and run.get("end_time_ms") is not None:
        return int(run["start_time_ms"]), int(run["end_time_ms"])
    end = int(metrics_path.stat().st_mtime * 1000)
    return end - int(1000 * float(metrics.get("wall_s") or 0)), end


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def _metrics_hash(metrics_path: Path) -> str:
    return hashlib.sha256(metrics_path.read_bytes()).hexdigest()[:16]


def _numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


REPO = Path(__file__).resolve().parents[2]
# Job steps whose script is named for the rule that runs them together.
STEP_SCRIPTS = {"prune": "prune_finetune", "finetune": "prune_finetune"}


def source_tags(rule: str, metrics: dict) -> dict[str, str]:
    """MLflow's standard source tags: mlflow.source.git.commit (the commit metrics.json records, '-dirty' dropped
    and flagged in prunelab.git_dirty), mlflow.source.name (the rule's script, repository-relative) and type."""
    script = Path("scripts") / f"{STEP_SCRIPTS.get(rule, rule)}.py"
    tags = {"mlflow.source.name": str(script) if (REPO / script).is_file() else f"workflow/Snakefile (rule {rule})",
            "mlflow.source.type": "JOB"}
    commit = metrics.get("git_commit")
    if commit not in (None, "", "unknown"):
        tags["mlflow.source.git.commit"] = str(commit).removesuffix("-dirty")
        if str(commit).endswith("-dirty"):
            tags["prunelab.git_dirty"] = "true"
    return tags


def file_digest(path: Path) -> str:
    """16-hex sha256 of a file's bytes (the digest of the prepared dataset logged as a run input)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def log_dataset(client, run_id: str, data_file: Path, name: str, digest: str) -> None:
    """The prepared dataset file as the run's training input (mlflow.log_input convention: name, digest, source)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    ds = Dataset(name=name, digest=digest, source_type="local", source=Path(data_file).resolve().as_uri(),
                 profile=json.dumps({"num_bytes": Path(data_file).stat().st_size}))
    client.log_inputs(run_id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", "training")])])


def _log_job(client, exp_id: str, job_dir: Path, parent_run: str | None, data: tuple | None = None) -> str:
    """Log one finished job (run.json + metrics.json + checkpoint) as an MLflow run; returns the run id.

    data: (prepared dataset file, its digest), logged as the run's input on baseline runs."""
    from mlflow.entities import Metric, Param

    run = load_json(job_dir / "run.json")
    metrics_path = job_dir / "metrics.json"
    metrics = load_json(metrics_path)
    tags = {TAG_JOB: run["job_id"], TAG_HASH: _metrics_hash(metrics_path), "mlflow.runName": run["run_name"],
            "prunelab.rule": run["rule"], "config_hash": str(metrics.get("config_hash")),
            "stage": str(metrics.get("stage")), **source_tags(run["rule"], metrics)}
    tags.update({k: v for k, v in run["wildcards"].items()})  # each wildcard once, under its own name
    if parent_run:
        tags["mlflow.parentRunId"] = parent_run
    start, end = job_times(run, metrics_path, metrics)
    created = client.create_run(exp_id, start_time=start, tags=tags, run_name=run["run_name"])
    rid = created.info.run_id
    params = [Param(k, v[:6000]) for k, v in _flatten(run.get("params", {})).items()]
    series = [Metric(k, float(v), int(rec.get("time_ms", end)), int(rec["epoch"])) for rec in run.get("history", [])
              for k, v in rec.items() if k not in ("epoch", "time_ms") and isinstance(v, (int, float))]
    final = [Metric(k, v, end, 0) for k, v in _numeric(metrics).items()]
    for i in range(0, max(len(params), 1), 100):
        client.log_batch(rid, params=params[i:i + 100])
    allm = series + final
    for i in range(0, len(allm), 1000):
        client.log_batch(rid, metrics=allm[i:i + 1000])
    if data is not None and metrics.get("stage") == "baseline":
        log_dataset(client, rid, data[0], str(metrics.get("dataset")), data[1])
    client.log_artifact(rid, str(metrics_path))
    if (job_dir / "model.pt").exists():
        client.log_artifact(rid, str(job_dir / "model.pt"))
    client.set_terminated(rid, "FINISHED", end_time=end)
    return rid


def sync_results(results_dir: str | Path, uri: str, experiment: str) -> dict[str, int]:
    """Log every job folder under results_dir (one holding run.json + metrics.json) that MLflow lacks.

    Idempotent: a job whose run exists with the same metrics hash is skipped; one whose metrics changed gets a
    new run and the stale one is deleted. Parents (baselines) are logged before their children.
    Returns counts {'logged', 'skipped', 'replaced'}.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = init_tracking(uri, experiment, Path(results_dir).parent / "mlartifacts")
    existing: dict[str, tuple[str, str]] = {}
    token = None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for r in page:
            if TAG_JOB in r.data.tags:
                existing[r.data.tags[TAG_JOB]] = (r.info.run_id, r.data.tags.get(TAG_HASH, ""))
        token = page.token
        if not token:
            break
    job_dirs = sorted(p.parent for p in Path(results_dir).rglob("run.json") if (p.parent / "metrics.json").exists())
    runs = {d: load_json(d / "run.json") for d in job_dirs}
    counts = {"logged": 0, "skipped": 0, "replaced": 0}
    digests: dict[Path, str] = {}

    def data_of(d: Path):
        """(prepared dataset file, digest) of a baseline job: results/<exp>/data/<dataset>.pt, if present."""
        name = load_json(d / "metrics.json").get("dataset")
        f = Path(results_dir) / "data" / f"{name}.pt"
        if name is None or not f.is_file():
            return None
        if f not in digests:
            digests[f] = file_digest(f)
        return f, digests[f]

    # parents first: jobs without a parent, then the rest
    for d in sorted(job_dirs, key=lambda d: runs[d].get("parent_job") is not None):
        jid = runs[d]["job_id"]
        digest = _metrics_hash(d / "metrics.json")
        if jid in existing and existing[jid][1] == digest:
            counts["skipped"] += 1
            (d / UNSYNCED).unlink(missing_ok=True)
            continue
        if jid in existing:
            client.delete_run(existing[jid][0])
            counts["replaced"] += 1
        parent = runs[d].get("parent_job")
        parent_run = existing.get(parent, (None,))[0] if parent else None
        data = data_of(d) if parent is None else None  # baselines: the prepared dataset is their input
        existing[jid] = (_log_job(client, exp_id, d, parent_run, data), digest)
        (d / UNSYNCED).unlink(missing_ok=True)
        counts["logged"] += 1
    log.info("MLflow sync to %s: %d runs logged (%d of them replacing a stale run), %d skipped (already logged "
             "with the same metrics)", uri, counts["logged"], counts["replaced"], counts["skipped"])
    return counts


class LiveRun:
    """A job's live MLflow run (mode 'live'); every MLflow failure degrades to files + an unsynced marker.

    A URI that failed once in this process is not tried again (a process running two job steps waits and warns
    once)."""
    failed_uris: set[str] = set()

    def __init__(self, uri: str, experiment: str, out_dir: str | Path, rule: str, wildcards: dict,
                 params: dict, parent: str | None):
        self.out_dir, self.ok, self.client, self.rid, self.rule, self.uri = Path(out_dir), True, None, None, rule, uri
        if uri in LiveRun.failed_uris:
            self.ok = False
            return
        try:
            from mlflow.tracking import MlflowClient

            bound_http_retries()
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                raise RuntimeError(f"MLflow experiment {experiment!r} does not exist at {uri} (created on start)")
            tags = {TAG_JOB: job_id(rule, wildcards), "prunelab.rule": rule, **{k: str(v) for k, v in wildcards.items()},
                    **source_tags(rule, {})}
            if parent:
                found = self.client.search_runs([exp.experiment_id], f"tags.`{TAG_JOB}` = '{parent}'", max_results=1)
                if found:
                    tags["mlflow.parentRunId"] = found[0].info.run_id
            self.rid = self.client.create_run(exp.experiment_id, tags=tags, run_name=run_name(rule, wildcards)).info.run_id
            self.exp_id = exp.experiment_id
            from mlflow.entities import Param

            flat = [Param(k, v[:6000]) for k, v in _flatten(params).items()]
            for i in range(0, len(flat), 100):
                self.client.log_batch(self.rid, params=flat[i:i + 100])
        except Exception as exc:  # noqa: BLE001 - tracking must never lose a result
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.ok:
            log.warning("MLflow tracking unavailable (%s: %s); results are kept in files and marked for "
                        "`make mlflow-sync`", type(exc).__name__, exc)
        self.ok = False
        LiveRun.failed_uris.add(self.uri)

    def log_epoch(self, record: dict) -> None:
        if not self.ok:
            return
        try:
            from mlflow.entities import Metric

            step = int(record["epoch"])
            self.client.log_batch(self.rid, metrics=[Metric(k, float(v), now_ms(), step) for k, v in record.items()
                                                     if k != "epoch" and isinstance(v, (int, float))])
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def finish(self) -> None:
        """Log final metrics and artifacts from the written files; mark the job unsynced on any failure."""
        if self.ok:
            try:
                from mlflow.entities import Metric, RunTag

                metrics_path = self.out_dir / "metrics.json"
                metrics = load_json(metrics_path)
                self.client.log_batch(self.rid, metrics=[Metric(k, v, now_ms(), 0) for k, v in _numeric(metrics).items()],
                                      tags=[RunTag(TAG_HASH, _metrics_hash(metrics_path)),
                                            RunTag("config_hash", str(metrics.get("config_hash"))),
                                            RunTag("stage", str(metrics.get("stage")))]
                                      + [RunTag(k, v) for k, v in source_tags(self.rule, metrics).items()])
                self.client.log_artifact(self.rid, str(metrics_path))
                if (self.out_dir / "model.pt").exists():
                    self.client.log_artifact(self.rid, str(self.out_dir / "model.pt"))
                self.client.set_terminated(self.rid, "FINISHED")
                return
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
                if self.rid:
                    try:
                        self.client.delete_run(self.rid)
                    except Exception:  # noqa: BLE001
                        pass
        (self.out_dir / UNSYNCED).write_text("MLflow was unreachable; run `make mlflow-sync`\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m prunelab.tracking --results results/EXP --experiment EXP [--uri URI]`: refill MLflow."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m prunelab.tracking", description=main.__doc__)
    ap.add_argument("--results", required=True, help="results/<experiment> folder holding the job outputs")
    ap.add_argument("--experiment", required=True, help="MLflow experiment name")
    ap.add_argument("--uri", default=None, help="tracking URI (default sqlite:///<abs>/results/mlflow.db)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        ap.error(f"--results {results} is not a folder")
    uri = args.uri or os.environ.get("PRUNELAB_TRACKING_URI") or default_uri(results.parent)
    counts = sync_results(results, uri, args.experiment)
    print(f"MLflow sync to {uri}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
