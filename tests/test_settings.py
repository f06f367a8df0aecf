"""prunelab.settings: typed settings whose defaults are the workflow schema's, nowhere else."""
from __future__ import annotations

import copy
import pkgutil

import pytest
import yaml
from snakemake.utils import validate

import prunelab.methods as methods_pkg
from conftest import REPO, TINY
from prunelab.methods import METHODS, method_names, register_method
from prunelab.settings import LatencySettings, PruneSettings, TrainSettings, method_defaults, section_defaults
from prunelab.training import lr_at

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def snakemake_filled(cfg: dict) -> dict:
    """What the workflow gets: the config validated by Snakemake with the schema's defaults filled in."""
    cfg = copy.deepcopy(cfg)
    validate(cfg, schema=SCHEMA, set_default=True)
    return cfg


@pytest.mark.parametrize("cls,section", [(TrainSettings, "train"), (TrainSettings, "finetune"),
                                         (PruneSettings, "prune"), (LatencySettings, "latency")])
def test_settings_from_nothing_equal_what_the_workflow_fills_in(cls, section):
    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop(section, None)
    workflow = snakemake_filled(cfg)[section]
    assert cls.of({}, section).as_dict() == workflow
    assert cls.of(workflow, section) == cls.of(None, section)


def test_given_values_win_and_the_finetune_recipe_has_its_own_defaults():
    ft = TrainSettings.of({"batch_size": 7}, "finetune")
    train = TrainSettings.of({"batch_size": 7})
    assert ft.batch_size == train.batch_size == 7
    assert (ft.epochs, ft.lr) == (section_defaults("finetune")["epochs"], section_defaults("finetune")["lr"])
    assert (train.epochs, train.lr) == (section_defaults("train")["epochs"], section_defaults("train")["lr"])
    assert ft.epochs != train.epochs and ft.lr != train.lr  # the schema gives the two recipes different defaults
    assert TrainSettings.of(ft) is ft and ft.replace(epochs=3).epochs == 3


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(KeyError, match=r"prune: unknown setting\(s\) \['round_too'\]"):
        PruneSettings.of({"round_too": 8})


def test_library_reads_the_settings():
    """lr_at with a partial dict uses the schema's schedule (cosine) and milestones."""
    assert section_defaults("train")["schedule"] == "cosine"
    assert lr_at(0, {"lr": 0.2, "epochs": 4}) == pytest.approx(0.2)
    assert lr_at(2, {"lr": 0.2, "epochs": 4}) == pytest.approx(0.1)
    marks = section_defaults("train")["milestones"]
    multi = {"lr": 1.0, "epochs": 100, "schedule": "multistep"}
    gamma = section_defaults("train")["gamma"]
    assert lr_at(int(marks[0] * 100), multi) == pytest.approx(gamma)


def test_method_options_come_from_the_schema():
    for name in method_names():
        assert METHODS[name].defaults == method_defaults(name), name
    assert method_defaults("screening") == {"lambda": 0.5} and method_defaults("magnitude") == {}
    assert method_defaults("no_such_method") is None


def test_every_method_module_registers_itself():
    """Adding a method is a module in prunelab/methods/ (no import line to add): each registers one method."""
    modules = {m.name for m in pkgutil.iter_modules(methods_pkg.__path__)} - {"variants"}
    assert modules == set(method_names())


def test_a_schema_method_cannot_redeclare_its_defaults():
    with pytest.raises(ValueError, match=r"methods\.screening.*do not pass defaults"):
        register_method("screening", defaults={"lambda": 0.1})
