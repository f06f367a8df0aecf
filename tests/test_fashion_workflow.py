"""End to end on real data: the tiny workflow on a subset of Fashion-MNIST, with method variants."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import make_workdir, planned_jobs, snakemake
from prunelab.data.formats import SYSTEM_FOLDERS, locate_idx

pytestmark = pytest.mark.e2e
CONFIG = Path(__file__).parent / "configs" / "fashion_tiny.yaml"


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    folder = SYSTEM_FOLDERS["fashion_mnist"]
    assert locate_idx("fashion_mnist", folder) == folder, (
        f"Fashion-MNIST is not installed in {folder}: run `make data` (apt-get install dataset-fashion-mnist)")
    wd = make_workdir(tmp_path_factory.mktemp("fashion") / "wd")
    shutil.copy(CONFIG, wd / "fashion.yaml")
    snakemake(wd, "--configfile", "fashion.yaml", "--cores", "2")
    return wd


def planned(wd, config):
    return planned_jobs(snakemake(wd, "--configfile", config, "--cores", "2", "-n").stdout)


def test_real_subset_is_read_split_and_recorded(fashion_run):
    root = fashion_run / "results" / "fashion_tiny"
    base = json.loads((root / "baseline/fnn/standard/seed0/metrics.json").read_text())
    assert base["dataset"] == "fashion_mnist"
    assert (base["train_size"], base["test_size"]) == (3000, 1000)
    assert base["top1_test"] > 75.0         # a real image classifier, not chance (10 %)


def test_every_variant_has_its_own_name_in_paths_and_tables(fashion_run):
    root = fashion_run / "results" / "fashion_tiny"
    rows = list(csv.DictReader(open(root / "report/tables/results.csv")))
    finetuned = {(r["method"], r["granularity"]) for r in rows if r["stage"] == "finetuned"}
    assert finetuned == {(m, g) for m in ("magnitude", "screening-lambda0", "screening-lambda1")
                         for g in ("unstructured", "structured")}
    scores = {p.stem for p in (root / "scores/fnn/standard/seed0").glob("*.pt")}
    assert scores == {"magnitude", "screening-lambda0", "screening-lambda1"}
    assert len(list(root.glob("stats/fnn/standard/seed*/stats.pt"))) == 1   # one statistics pass per model
    # λ = 0 is magnitude: the same weights go, so the pruned models are identical before fine-tuning
    pruned = {r["method"]: r for r in rows if r["stage"] == "pruned" and r["granularity"] == "unstructured"}
    assert pruned["screening-lambda0"]["top1_test"] == pruned["magnitude"]["top1_test"]
    assert (root / "report/figures/sweep_screening_lambda.png").stat().st_size > 0


def test_adding_one_lambda_plans_only_that_variants_jobs(fashion_run):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["methods"]["screening"]["lambda"] = [0, 0.5, 1]
    (fashion_run / "more.yaml").write_text(yaml.safe_dump(cfg))
    assert planned(fashion_run, "more.yaml") == {"score": 1, "prune_finetune": 2, "report": 1, "track": 1}
