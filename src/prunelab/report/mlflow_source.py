"""Rebuild the report's inputs from MLflow runs alone.

A row is every active run of the experiment whose artifact root holds `metrics.json`. Score files are
artifacts under `scores/` laid out as in results/ (`scores/{arch}/{regime}/seed{seed}/{method}.pt`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from .collect import canonical, parse_score_path, validate_record


def _runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _walk(client, run_id: str, path: str) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _walk(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def fetch(uri: str, experiment: str, dest: str | Path) -> tuple[list[dict], list[Path]]:
    """(metrics records, local score file paths) of an MLflow experiment, downloaded under dest.

    Runs holding byte-identical metrics (a refilled tracking store) count once; for a score file
    logged by several runs the latest run wins.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found at {uri}")
    dest = Path(dest)
    records: dict[str, dict] = {}
    scores: dict[tuple, Path] = {}
    for run in _runs(client, exp.experiment_id):
        rid = run.info.run_id
        root = {a.path: a for a in client.list_artifacts(rid)}
        if "metrics.json" in root and not root["metrics.json"].is_dir:
            local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="metrics.json",
                                                        dst_path=str(dest / rid), tracking_uri=uri)
            try:
                rec = json.loads(Path(local).read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"run {rid}: metrics.json is not valid JSON ({err})") from None
            rec = validate_record(rec, f"MLflow run {rid} metrics.json")
            records.setdefault(canonical(rec), rec)
        if "scores" in root and root["scores"].is_dir:
            for art in _walk(client, rid, "scores"):
                if not art.endswith(".pt"):
                    continue
                key = parse_score_path(art)
                if key in scores:
                    warnings.warn(f"score file {art} logged by several runs; using run {rid}", stacklevel=2)
                scores[key] = Path(mlflow.artifacts.download_artifacts(
                    run_id=rid, artifact_path=art, dst_path=str(dest / rid / Path(art).parent), tracking_uri=uri))
    if not records:
        raise ValueError(f"no run of MLflow experiment {experiment!r} has metrics.json at its artifact root")
    return list(records.values()), sorted(scores.values())
