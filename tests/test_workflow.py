"""End to end: the whole DAG on the tiny config (the session's one tiny run), then the caching contract."""
import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import copy_run, planned_jobs, snakemake
from prunelab.records import METRICS_KEYS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_run(tiny_reference):
    """The session's tiny run (conftest.tiny_reference) and its Snakemake output; tests read it, plan in it, or
    change a copy of it."""
    return tiny_reference, (tiny_reference / "snakemake.out").read_text()


def jobs_planned(wd, *extra):
    """{rule: count} of a dry run."""
    return planned_jobs(snakemake(wd, "--configfile", "tiny.yaml", "--cores", "2", "-n", *extra).stdout)


def test_results_table_has_a_row_per_model(tiny_run):
    wd, _ = tiny_run
    root = wd / "results" / "tiny"
    rows = list(csv.DictReader(open(root / "report/tables/results.csv")))
    metrics = sorted(root.rglob("metrics.json"))
    assert len(rows) == len(metrics) == 2 + 8 + 8  # baselines, pruned, fine-tuned
    assert set(METRICS_KEYS) <= set(rows[0])
    baselines = [r for r in rows if r["stage"] == "baseline"]
    assert {r["arch"] for r in baselines} == {"mlp", "cnn"}
    for r in baselines:  # the table holds the numbers of the files it came from
        src = json.loads((root / f"baseline/{r['arch']}/standard/seed0/metrics.json").read_text())
        assert float(r["top1_test"]) == pytest.approx(src["top1_test"])
        assert int(float(r["macs_dense"])) == src["macs_dense"] and src["params_total"] > 0
    for name in ("summary.md", "summary.tex", "methods_agreement.csv"):
        assert (root / "report/tables" / name).stat().st_size > 0


def test_pruned_models_reach_their_ratio(tiny_run):
    wd, _ = tiny_run
    root = wd / "results" / "tiny"
    for path in root.glob("finetuned/*/standard/seed0/*/*/r0.50/metrics.json"):
        m = json.loads(path.read_text())
        assert m["stage"] == "finetuned" and m["ratio_requested"] == 0.5
        assert m["top1_test_before_finetune"] is not None
        if m["granularity"] == "unstructured":
            assert m["sparsity_achieved"] == pytest.approx(0.5, abs=0.02)
        else:
            assert m["macs_effective"] < m["macs_dense"] and m["params_total"] == m["params_nonzero"]


def test_mlflow_has_one_run_per_job_with_tags(tiny_run):
    from mlflow.tracking import MlflowClient

    wd, _ = tiny_run
    client = MlflowClient(tracking_uri=f"sqlite:///{wd / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    jobs = list((wd / "results" / "tiny").rglob("run.json"))
    assert len(runs) == len(jobs) == 18
    by_job = {r.data.tags["prunelab.job_id"]: r for r in runs}
    base = by_job["train_baseline/arch=mlp/regime=standard/seed=0"]
    child = by_job["finetune/arch=mlp/regime=standard/seed=0/method=magnitude/granularity=unstructured/ratio=0.50"]
    assert child.data.tags["mlflow.parentRunId"] == base.info.run_id
    for r in runs:
        assert r.data.tags["mlflow.source.git.commit"] and r.data.tags["config_hash"] and r.data.tags["arch"]
    assert "top1_val" in base.data.metrics and "train.lr" in base.data.params


# Columns that measure the machine (time) or name the code version; every other column must not move.
MACHINE_COLUMNS = {"wall_s", "git_commit", "source_hash"}


def same_value(a: str, b: str) -> bool:
    """Equal strings, or numbers equal to 1e-9 relative (the last digits of a float's text)."""
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return False


def test_results_match_the_stored_tiny_run(tiny_run):
    """The tiny config's results.csv equals tests/fixtures/tiny_results.csv (written by the code before the
    prune and finetune rules became one job) in every column but timings and code version: accuracy, sizes,
    MACs, config hashes, layer_kept, ... A refactoring that changes a number fails here."""
    wd, _ = tiny_run
    fixture = Path(__file__).parent / "fixtures" / "tiny_results.csv"
    want, got = (list(csv.DictReader(open(p))) for p in (fixture, wd / "results/tiny/report/tables/results.csv"))
    key = ("stage", "arch", "regime", "seed", "method", "granularity", "ratio_requested")
    want, got = ({tuple(r[k] for k in key): r for r in rows} for rows in (want, got))
    assert sorted(got) == sorted(want)
    assert set(next(iter(got.values()))) == set(next(iter(want.values())))
    for k, row in want.items():
        for col, value in row.items():
            if col in MACHINE_COLUMNS or col.startswith("latency_"):
                continue
            assert same_value(got[k][col], value), f"{k}: {col} is {got[k][col]!r}, stored {value!r}"


def test_rerun_has_nothing_to_do(tiny_run):
    wd, _ = tiny_run
    assert jobs_planned(wd) == {}


def test_new_ratio_runs_only_its_jobs(tiny_run):
    wd, _ = tiny_run
    cfg = yaml.safe_load((wd / "tiny.yaml").read_text())
    cfg["granularities"]["unstructured"].append(0.8)
    (wd / "more.yaml").write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(wd, "--configfile", "more.yaml")
    assert planned == {"prune_finetune": 4, "report": 1, "track": 1}


def test_finetune_settings_rerun_only_pruning_jobs(tiny_run):
    wd, _ = tiny_run
    cfg = yaml.safe_load((wd / "tiny.yaml").read_text())
    cfg["finetune"]["lr"] = 0.03
    (wd / "ft.yaml").write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(wd, "--configfile", "ft.yaml")
    assert planned == {"prune_finetune": 8, "report": 1, "track": 1}


def test_report_regenerates_alone(tiny_run, tmp_path):
    wd = copy_run(tiny_run[0], tmp_path / "wd")
    report = wd / "results" / "tiny" / "report"
    backup = wd / "report.bak"
    shutil.copytree(report, backup)
    shutil.rmtree(report)
    target = "results/tiny/report/tables/results.csv"
    assert jobs_planned(wd, target) == {"report": 1}
    snakemake(wd, "--configfile", "tiny.yaml", "--cores", "1", target)
    for f in backup.rglob("*"):
        if f.is_file():
            assert (report / f.relative_to(backup)).exists(), f
    assert (report / "tables" / "results.csv").read_text() == (backup / "tables" / "results.csv").read_text()
