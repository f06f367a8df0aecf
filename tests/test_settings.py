"""prunelab.settings: typed settings whose defaults are the workflow schema's, nowhere else."""
from __future__ import annotations

import copy
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from snakemake.utils import validate

import prunelab.methods as methods_pkg
from conftest import REPO, TINY
from prunelab.methods import METHODS, method_names, register_method
from prunelab.settings import (FinetuneSettings, LatencySettings, PruneSettings, TrainSettings, method_defaults,
                               section_defaults)
from prunelab.training import lr_at

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def snakemake_filled(cfg: dict) -> dict:
    """What the workflow gets: the config validated by Snakemake with the schema's defaults filled in."""
    cfg = copy.deepcopy(cfg)
    validate(cfg, schema=SCHEMA, set_default=True)
    return cfg


@pytest.mark.parametrize("cls,section", [(TrainSettings, "train"), (FinetuneSettings, "finetune"),
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
    assert method_defaults("screening") == {"lambda": 0.5, "allocation": "magnitude"}
    assert method_defaults("magnitude") == {}
    assert method_defaults("no_such_method") is None


def test_every_method_module_registers_itself():
    """Adding a method is a module in prunelab/methods/ (no import line to add): each registers one method."""
    modules = {m.name for m in pkgutil.iter_modules(methods_pkg.__path__)} - {"variants"}
    assert modules == set(method_names())


def test_a_schema_method_cannot_redeclare_its_defaults():
    with pytest.raises(ValueError, match=r"methods\.screening.*do not pass defaults"):
        register_method("screening", defaults={"lambda": 0.1})


def test_a_job_builds_its_settings_from_the_validated_config_without_a_second_check():
    """A job turns the config sections Snakemake validated into typed settings (`from_config`), so no job process
    imports jsonschema (~0.1 s each); a dict from a notebook is checked by the schema, naming the key."""
    code = textwrap.dedent("""
        import sys
        import torch
        from prunelab.jobs import script_params
        from prunelab.pruning.stage import prune_model
        from prunelab.methods import score_model
        from prunelab.models import build_model
        from prunelab.settings import PruneSettings, section_defaults

        params = {"prune": {**section_defaults("prune"), "round_to": 2}, "finetune": section_defaults("finetune"),
                  "latency": section_defaults("latency"), "device": "cpu"}
        smk = type("Smk", (), {"params": params})()
        p = script_params(smk)
        assert isinstance(p.prune, PruneSettings) and p.prune.round_to == 2, p.prune
        arch = {"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 8, 8], "num_classes": 3}
        model = build_model(arch).eval()
        gen = torch.Generator().manual_seed(0)
        data = {"train": {"x": torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8, generator=gen),
                          "y": torch.arange(16) % 3},
                "mean": torch.tensor([0.5]), "std": torch.tensor([0.25]), "in_shape": [1, 8, 8], "num_classes": 3}
        scores = score_model(model, None, "magnitude")
        pruned, _, _, info = prune_model(model, arch, scores, "structured", 0.5, data, p.prune, "cpu", 0,
                                         finetune=p.finetune)
        assert all(m.out_channels % 2 == 0 for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)), info
        assert info["round_to"] == 2
        print("jsonschema" in sys.modules)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
    with pytest.raises(ValueError, match=r"^prune\.scope: 'wide' is not one of \['global', 'layerwise'\]$"):
        PruneSettings.of({"scope": "wide"})
