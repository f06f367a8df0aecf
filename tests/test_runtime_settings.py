"""Settings that cannot change weights (latency timing, device) reach the jobs through results/{exp}/runtime.json,
written at the start of a run, so changing them plans no retraining; a training setting still does."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO, TINY, planned_jobs, snakemake
from prunelab.jobs import resolved_params

# Every script the baseline's part of the DAG runs, replaced by one that only creates its outputs and log: the DAG
# and the rerun decisions (params, code, inputs) are Snakemake's, the work is not needed here.
STUB = """from pathlib import Path
for f in [*snakemake.output, *snakemake.log]:
    Path(f).parent.mkdir(parents=True, exist_ok=True)
    Path(f).write_text("stub")
"""
TARGET = "results/tiny/baseline/mlp/standard/seed0/metrics.json"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stub_run(tmp_path_factory):
    """A workflow folder whose baseline (and data) jobs ran once, with stub scripts."""
    wd = tmp_path_factory.mktemp("runtime") / "wd"
    wd.mkdir()
    for name in ("Snakefile", "workflow", "config"):
        (wd / name).symlink_to(REPO / name)
    (wd / "scripts").mkdir()
    for script in ("prepare_data.py", "train_baseline.py"):
        (wd / "scripts" / script).write_text(STUB)
    shutil.copy(TINY, wd / "tiny.yaml")
    snakemake(wd, "--configfile", "tiny.yaml", "--cores", "1", TARGET)
    return wd


def planned(wd, edit) -> dict:
    """{rule: count} of a dry run for the baseline target after `edit(config)`."""
    cfg = yaml.safe_load(TINY.read_text())
    edit(cfg)
    (wd / "edited.yaml").write_text(yaml.safe_dump(cfg))
    return planned_jobs(snakemake(wd, "--configfile", "edited.yaml", "--cores", "1", "-n", TARGET).stdout)


def test_run_writes_the_runtime_settings(stub_run):
    tiny = yaml.safe_load(TINY.read_text())
    runtime = json.loads((stub_run / "results/tiny/runtime.json").read_text())
    assert runtime["latency"]["repeats"] == tiny["latency"]["repeats"] and runtime["device"] == "auto"


def test_timing_and_device_settings_retrain_nothing(stub_run):
    def edit(cfg):
        cfg["latency"].update(repeats=7, warmup=3, compile=False)
        cfg["device"] = "cpu"

    assert planned(stub_run, edit) == {}


def test_a_training_setting_still_retrains(stub_run):
    assert planned(stub_run, lambda c: c["train"].update(epochs=9)) == {"train_baseline": 1}


def test_jobs_read_the_configured_values(tmp_path):
    (tmp_path / "runtime.json").write_text(json.dumps({"device": "cpu", "latency": {"repeats": 7}}))
    params = {"runtime_file": str(tmp_path / "runtime.json"), "train": {"epochs": 2}}
    smk = SimpleNamespace(params=SimpleNamespace(items=params.items))
    assert resolved_params(smk) == {"device": "cpu", "latency": {"repeats": 7}, **params}
    params["runtime_file"] = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        resolved_params(smk)
