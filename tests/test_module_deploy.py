"""PruneLab deployed as a Snakemake module (the form `snakedeploy deploy-workflow` writes, with a local path): a
Snakefile of one's own in a fresh folder imports the workflow and runs the tiny config to its report.

A module's `onstart` handler does not run, so nothing may depend on it: the runtime settings (device, latency,
resume) and the tracking target reach the jobs through the environment the workflow sets when it is parsed.
"""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import EXP, REPO, TINY, assert_same_results, job_blocks, run_snakemake

DEPLOYED = """configfile: "config/config.yaml"


module prunelab:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from prunelab
"""


@pytest.mark.e2e
def test_tiny_config_runs_to_its_report_as_an_imported_module(tmp_path, tiny_reference):
    """`module prunelab: snakefile: <repo>/Snakefile; config: config` + `use rule * from prunelab`, the tiny config
    in config/config.yaml: every job of the DAG runs (the default target is the workflow's), no runtime.json was
    written (no onstart ran), the jobs used the config's latency settings (not the schema's defaults), and the
    numbers equal those of the tiny reference run."""
    wd = tmp_path / "deploy"
    (wd / "config").mkdir(parents=True)
    cfg = yaml.safe_load(TINY.read_text())
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (wd / "Snakefile").write_text(DEPLOYED.format(snakefile=REPO / "Snakefile"))
    run = run_snakemake(wd, [], configfile="config/config.yaml").check()

    ran = {rule for rule, _, _ in job_blocks(run.out)}
    assert {"prepare_data", "train_baseline", "prune_finetune", "report", "track"} <= ran, sorted(ran)
    res = wd / "results" / EXP
    assert (res / "report" / "tables" / "results.csv").exists() and (res / "tracking" / "synced.json").exists()
    assert not (res / "runtime.json").exists(), "an onstart handler ran: this is not the module path"
    run_json = json.loads((res / "baseline" / "mlp" / "standard" / "seed0" / "run.json").read_text())
    assert run_json["params"]["latency"] == {**cfg["latency"], "compile": False}, run_json["params"]
    assert assert_same_results(tiny_reference, wd) >= 2
