"""Which config a run reads (config/config.yaml as the base unless --configfile replaces it), --config values typed
as a config file types them, and what `device` says and refuses (prunelab.overrides, Snakefile, common.smk)."""
from __future__ import annotations

import logging
import re

import pytest
import torch
import yaml
from snakemake.cli import parse_config

from conftest import REPO, TINY, snakemake
from prunelab import models
from prunelab.overrides import typed


def planned(out: str) -> dict[str, int]:
    table = out[out.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.parametrize("text", ["[0, 1]", "{epochs: 2, lr: 0.05, nesterov: true}", "{screening: {lambda: [0, 0.5]}}",
                                  "{mode: live, uri: null}", "[mlp, cnn]", "0.25", "cuda", "false"])
def test_a_config_value_is_typed_as_in_a_config_file(text):
    """Snakemake's own reading of `--config key=TEXT`, typed, equals YAML's reading of `key: TEXT` in a file."""
    assert typed(parse_config([f"key={text}"])) == yaml.safe_load(f"key: {text}")


def test_config_on_the_command_line_goes_over_the_default_config(workdir):
    """Without --configfile the default config is the base: --config changes one key of it (typed), not all."""
    default = yaml.safe_load(open(workdir / "config" / "config.yaml"))
    out = snakemake(workdir, "-n", "--cores", "1", "--config", "seeds=[0]", "train={batch_size: 32}").stdout
    jobs = planned(out)
    pat_archs = default["regularizer"].get("archs") or default["archs"]  # pat may train only some archs
    per_seed = len(default["archs"]) + (len(pat_archs) if "pat" in default["regimes"] else 0)
    assert jobs["train_baseline"] == per_seed and jobs["prepare_data"] == 1
    assert not (workdir / "results").exists()


def test_a_config_file_replaces_the_default_and_command_line_values_go_over_it(workdir):
    (workdir / "tiny.yaml").write_text(TINY.read_text())
    out = snakemake(workdir, "-n", "--cores", "1", "--configfile", "tiny.yaml",
                    "--config", "seeds=[0, 1]", "methods={magnitude: {}, screening: {lambda: [0, 1]}}").stdout
    jobs = planned(out)
    # tiny: mlp + cnn, standard only; 2 seeds; magnitude + 2 screening variants, each at one ratio per granularity
    assert jobs["train_baseline"] == 4 and jobs["score"] == 4 * 3 and jobs["prune_finetune"] == 4 * 3 * 2


def test_a_wrong_command_line_value_is_refused_in_one_line_that_says_how_to_override(workdir):
    proc = snakemake(workdir, "-n", "--cores", "1", "--config", "seeds=[zero]", check=False)
    assert proc.returncode != 0
    line = next(ln for ln in proc.stdout.splitlines() if "config key 'seeds.0'" in ln)
    assert "'zero' is not of type 'integer'" in line and "--configfile config/config.yaml mine.yaml" in line
    assert not (workdir / "results").exists()


def test_device_auto_says_once_when_cuda_wheels_fall_back_to_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "_said_fallback", False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        assert models.pick_device("auto") == models.pick_device("auto") == torch.device("cpu")
    notes = [r.getMessage() for r in caplog.records if "device auto" in r.getMessage()]
    assert len(notes) == 1 and "built for CUDA 13.0" in notes[0] and "\n" not in notes[0]
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build of torch: nothing to say
    assert models.cpu_fallback_note() is None


def test_device_cuda_without_a_usable_gpu_stops_with_the_override_that_tries_the_cpu(monkeypatch):
    from prunelab.checks import ConfigError, check_device_available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--config device=cpu"):
        models.pick_device("cuda")
    with pytest.raises(ConfigError, match=r"config key 'device': cuda, .*--config device=cpu"):
        check_device_available("cuda")


def test_a_dry_run_needs_neither_data_nor_gpu_and_says_what_a_real_run_would_stop_on(tmp_path, monkeypatch):
    from snakemake.utils import validate

    from prunelab.checks import ConfigError, check_config, dry_run_notes

    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(device="cuda", resources={"gpu": 1},
               dataset={"name": "mnist", "data_root": str(tmp_path), "download": False})
    validate(cfg, schema=str(REPO / "workflow/schemas/config.schema.yaml"), set_default=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="config key 'dataset.download'"):
        check_config(cfg, check_device=False)  # a real run stops on the missing files
    with pytest.raises(ConfigError, match="config key 'device'"):
        check_config(cfg, check_files=False)  # and on the missing GPU
    check_config(cfg, check_device=False, check_files=False)  # what a dry run checks: the rest
    notes = dry_run_notes(cfg)
    assert len(notes) == 2 and all(n.startswith("a real run stops here: config key '") for n in notes)
    assert str(tmp_path) in notes[0] and "'device': cuda" in notes[1]
    assert dry_run_notes(cfg, check_device=False) == notes[:1]  # cluster: the nodes have the GPUs
