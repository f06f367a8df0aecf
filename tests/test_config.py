"""Config validation: every bad input stops the run before any job, naming the key and what was expected."""
import copy

import jsonschema
import pytest
import yaml

from conftest import REPO, TINY, snakemake

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
BASE = yaml.safe_load(TINY.read_text())


def errors(cfg):
    return [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(cfg)]


def with_change(path, value):
    cfg = copy.deepcopy(BASE)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("cfg_file", sorted((REPO / "config").rglob("*.yaml")) + [TINY], ids=str)
def test_shipped_configs_are_valid(cfg_file):
    assert errors(yaml.safe_load(cfg_file.read_text())) == []


@pytest.mark.parametrize("path,value,needle", [
    (("train", "epoch"), 3, "'epoch' was unexpected"),
    (("dataset", "name"), "imagenet", "is not one of"),
    (("methods", "magnitud"), {}, "'magnitud' was unexpected"),
    (("granularities", "unstructured"), [1.0], "greater than or equal to the maximum"),
    (("granularities", "structured"), [0.0], "less than or equal to the minimum"),
    (("seeds",), [], "should be non-empty"),
    (("seeds",), KeyError, "'seeds' is a required property"),
])
def test_bad_values_are_named(path, value, needle):
    msgs = errors(with_change(path, value))
    assert any(needle in m for m in msgs), msgs


def test_snakemake_stops_before_any_job_with_a_plain_message(workdir):
    bad = workdir / "bad.yaml"
    cfg = with_change(("methods", "magnitud"), {})
    cfg["granularities"]["structured"] = [1.5]
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(workdir, "--configfile", str(bad), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "config key 'methods'" in proc.stdout and "'magnitud' was unexpected" in proc.stdout
    assert "expected one of: random, magnitude, taylor, screening, contribution, frs" in proc.stdout
    assert "config key 'granularities.structured.0'" in proc.stdout
    assert not (workdir / "results").exists()  # nothing ran, nothing written


def test_defaults_are_filled(workdir):
    minimal = {"experiment": "m", "dataset": {"name": "digits"}, "archs": {"mlp": {"name": "mlp"}}, "seeds": [0]}
    (workdir / "m.yaml").write_text(yaml.safe_dump(minimal))
    proc = snakemake(workdir, "--configfile", "m.yaml", "--cores", "1", "-n", "--printshellcmds")
    assert "train_baseline" in proc.stdout and "prepare_data" in proc.stdout
