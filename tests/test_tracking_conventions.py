"""MLflow conventions of the deferred sync: standard source tags, one tag per wildcard, the prepared dataset as the
baseline runs' input, counts in the log; the report rebuilt from MLflow equals the file report."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from prunelab.tracking import sync_results, write_run_file

EXP = "conv"


def _job(root: Path, rel: str, rule: str, wildcards: dict, parent, metrics: dict) -> Path:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    write_run_file(d, rule, wildcards, {"experiment": EXP}, parent, [{"epoch": 1, "loss": 0.5}])
    return d


def _results(root: Path) -> Path:
    res = root / "results" / EXP
    (res / "data").mkdir(parents=True)
    (res / "data" / "cifar10.pt").write_bytes(b"prepared tensors" * 100)
    for seed in (0, 1):
        wc = {"arch": "mlp", "regime": "standard", "seed": seed}
        base = dict(experiment=EXP, dataset="cifar10", arch="mlp", regime="standard", seed=seed, stage="baseline",
                    top1_test=90.0 + seed, git_commit="0123456789ab-dirty", config_hash="h")
        _job(res, f"baseline/mlp/standard/seed{seed}", "train_baseline", wc, None, base)
        _job(res, f"pruned/mlp/standard/seed{seed}/magnitude/unstructured/r0.50", "prune",
             {**wc, "method": "magnitude", "granularity": "unstructured", "ratio": "0.50"},
             f"train_baseline/arch=mlp/regime=standard/seed={seed}",
             {**base, "stage": "pruned", "method": "magnitude", "granularity": "unstructured", "ratio_requested": 0.5,
              "top1_test": 85.0 + seed, "compression": 2.0})
    return res


def test_sync_uses_mlflow_conventions(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    res = _results(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with caplog.at_level(logging.INFO, logger="prunelab.tracking"):
        assert sync_results(res, uri, EXP) == {"logged": 4, "skipped": 0, "replaced": 0}
    assert "4 runs logged (0 of them replacing a stale run), 0 skipped" in caplog.text
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXP).experiment_id])
    want = hashlib.sha256((res / "data" / "cifar10.pt").read_bytes()).hexdigest()[:16]
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == "0123456789ab" and tags["prunelab.git_dirty"] == "true"
        rule = tags["prunelab.rule"]
        script = "train_baseline" if rule == "train_baseline" else "prune_finetune"
        assert tags["mlflow.source.name"] == f"scripts/{script}.py"
        assert not any(k.startswith("wildcard.") for k in tags) and tags["arch"] == "mlp"
        inputs = run.inputs.dataset_inputs
        if tags["stage"] == "baseline":
            assert len(inputs) == 1 and inputs[0].dataset.digest == want and inputs[0].dataset.name == "cifar10"
            assert inputs[0].tags[0].key == "mlflow.data.context"
        else:
            assert not inputs and "mlflow.parentRunId" in tags
    # idempotent; a changed result replaces its run
    p = res / "pruned/mlp/standard/seed1/magnitude/unstructured/r0.50/metrics.json"
    m = json.loads(p.read_text())
    p.write_text(json.dumps({**m, "top1_test": 84.0}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prunelab.tracking"):
        assert sync_results(res, uri, EXP) == {"logged": 1, "skipped": 3, "replaced": 1}
    assert "1 runs logged (1 of them replacing a stale run), 3 skipped" in caplog.text

    from prunelab.report import build_report
    from prunelab.report.__main__ import main as cli

    assert cli(["--from-mlflow", uri, "--experiment", EXP, "--out", str(tmp_path / "ml"), "--no-figures"]) == 0
    build_report(sorted(res.rglob("metrics.json")), tmp_path / "files", figures=False)
    for name in ("results.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ml" / "tables" / name),
                                      pd.read_csv(tmp_path / "files" / "tables" / name))
    assert (tmp_path / "ml" / "tables" / "summary.md").read_text() == \
        (tmp_path / "files" / "tables" / "summary.md").read_text()
