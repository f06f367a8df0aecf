"""Paper-scale experiment configs (config/experiments/*.yaml): each validates, plans its whole DAG without the data
(`snakemake -n` in a temporary folder: prepare_data is only planned), asks for a GPU, and carries published figures
the report can print beside ours."""
from __future__ import annotations

import re
import shutil

import jsonschema
import pytest
import torch
import yaml

from conftest import REPO, make_workdir, snakemake
from prunelab.settings import GradualSettings

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
CONFIGS = sorted((REPO / "config/experiments").glob("*.yaml"))
EXPECTED = {"mnist_lenet300", "mnist_lenet5", "fashion_mnist", "cifar10_resnet56", "cifar10_resnet110_frs",
            "cifar10_vgg16", "cifar100_vgg16"}
CPU_EXPERIMENTS = {"fashion_mnist"}  # runs on these 2-core machines with the system package's data
STRUCTURED_ONLY = {"frs"}  # methods with no weight-level score (workflow/rules/common.smk says the same)
DENSE_ONLY_MODELS = {"mlp", "lenet300_100"}  # no channels: never gradual unless named in gradual.archs
REPORT_REQUIRED = ("arch", "source")  # prunelab.report.tables.REFERENCE_REQUIRED
ids = [p.stem for p in CONFIGS]


def load(path):
    return yaml.safe_load(path.read_text())


def test_every_issue_config_is_there():
    assert EXPECTED <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=ids)
def test_config_is_valid_and_asks_for_a_gpu(path):
    cfg = load(path)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(cfg)]
    assert errors == []
    assert cfg["experiment"] == path.stem  # results/<file name>/: one folder per config
    res = cfg["resources"]
    assert res["gpu"] == (0 if path.stem in CPU_EXPERIMENTS else 1)
    assert cfg["device"] == ("cpu" if path.stem in CPU_EXPERIMENTS else "cuda")  # no silent CPU fallback
    assert res["mem_mb"] >= 2000 and res["runtime"] >= 30
    assert cfg["dataset"]["name"] != "digits"  # paper scale, real data
    assert len(cfg["seeds"]) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=ids)
def test_reference_entries_match_the_config(path):
    cfg = load(path)
    for i, ref in enumerate(cfg.get("reference", [])):
        where = f"reference[{i}]"
        assert ref["arch"] in cfg["archs"], f"{where} names arch {ref['arch']!r}, not one of {list(cfg['archs'])}"
        assert all(ref.get(k) is not None for k in REPORT_REQUIRED), f"{where}: the report needs {REPORT_REQUIRED}"
        assert ref.get("dataset", cfg["dataset"]["name"]) == cfg["dataset"]["name"], where
        if ref.get("top1_delta") is None:
            assert 0 < ref["top1_pruned"] <= 100 and 0 < ref["top1_dense"] <= 100, where
        else:
            assert abs(ref["top1_delta"]) < 100, where
        if ref.get("flops_reduction") is not None:
            assert 0 < ref["flops_reduction"] < 1, f"{where}: flops_reduction is a fraction removed"
        gran = ref.get("granularity")
        if gran is not None:
            assert gran in cfg["granularities"], f"{where}: granularity {gran!r} is not run by this config"
        if ref.get("method") is not None:  # printed beside our row: that row must exist
            assert ref["method"] in cfg["methods"], where
            assert gran is not None and ref.get("ratio") is not None, f"{where}: method needs granularity + ratio"
            assert any(abs(ref["ratio"] - r) < 1e-9 for r in cfg["granularities"][gran]), where


def planned_jobs(out: str) -> dict[str, int]:
    """{rule: count} of a dry run's job table, with its 'total' (the `all` target included)."""
    table = out[out.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def readme_job_counts() -> dict[str, int]:
    """{config file name: jobs} as the README quotes them: the paper-scale table's "jobs" column, and the
    Fashion-MNIST and default experiments' "(N jobs)"."""
    text = (REPO / "README.md").read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("| config |"))
    col = [c.strip() for c in header.strip("|").split("|")].index("jobs")
    counts = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and cells[0].strip("`").endswith(".yaml") and len(cells) > col:
            counts[cells[0].strip("`")] = int(cells[col])
    for name in ("fashion_mnist.yaml", "config.yaml"):
        quoted = re.findall(rf"`config/(?:experiments/)?{name}`[^.]*?\((\d+) jobs", text)
        assert len(quoted) == 1, f"README should quote the job count of {name} once, as `...{name}` ... (N jobs)"
        counts[name] = int(quoted[0])
    return counts



# Counted by hand from config/experiments/fashion_mnist.yaml. FNN, 5 seeds: 12 unstructured-capable variants
# (random, magnitude, taylor, screening 2 lambdas x 2 allocations, contribution 2 kappas, lamp, obd, wanda) x 4
# ratios + 9 structured ones (allocation and kappa do not change structured scores: screening 2, contribution 1;
# frs, fpgm; no bn_scale, hrank: no BatchNorm, no conv) x 4. pat: 2 betas x 5 seeds x (magnitude, contribution-kappa0)
# x (4 + 4). LeNet-5, 3 seeds: 8 unstructured x 1 + 10 structured x 3. Scores: FNN 14 variants, pat 2, LeNet-5 12.
# Scratch: magnitude at 0.5 on the standard baselines; gradual: LeNet-5, 3 seeds.
FASHION_JOBS = {"prepare_data": 1, "train_baseline": 5 + 10 + 3, "collect_stats": 5 + 10 + 3,
                "score": 5 * 14 + 10 * 2 + 3 * 12,
                "prune_finetune": 5 * (12 * 4 + 9 * 4) + 10 * 2 * (4 + 4) + 3 * (8 * 1 + 10 * 3),
                "train_gradual": 3, "train_scratch": 5 + 3}


def expected_jobs(cfg: dict) -> dict[str, int]:
    """What the workflow should plan for a config, counted independently of the rules."""
    if cfg["experiment"] == "fashion_mnist":
        return FASHION_JOBS
    runs = len(cfg["archs"]) * len(cfg.get("regimes", ["standard"])) * len(cfg["seeds"])
    methods = list(cfg["methods"])
    models = sum(len([m for m in methods if g == "structured" or m not in STRUCTURED_ONLY]) * len(ratios)
                 for g, ratios in cfg["granularities"].items())
    return {"prepare_data": 1, "train_baseline": runs, "collect_stats": runs, "score": runs * len(methods),
            "prune_finetune": runs * models}


def gradual_jobs(cfg: dict) -> int:
    g = cfg.get("gradual") or {}
    if not g.get("enabled"):
        return 0
    archs = g.get("archs") or [a for a, spec in cfg["archs"].items() if spec["name"] not in DENSE_ONLY_MODELS]
    ratios = g.get("ratios") or cfg["granularities"].get("structured", [])
    return sum(len(cfg["archs"][a].get("seeds") or cfg["seeds"]) for a in archs) * len(ratios)


@pytest.mark.parametrize("path", CONFIGS, ids=ids)
def test_dry_run_plans_the_whole_experiment_without_data(path, tmp_path):
    wd = make_workdir(tmp_path / "wd")
    shutil.copy(path, wd / path.name)
    proc = snakemake(wd, "--configfile", path.name, "--cores", "2", "-n", timeout=120)
    assert not (wd / "data").exists() and not (wd / "results").exists()  # a dry run touches nothing
    cfg = load(path)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():  # planned all the same; said in one line
        assert "dry run: a real run stops here: config key 'device': cuda" in proc.stdout
    planned = planned_jobs(proc.stdout)
    quoted = readme_job_counts()[path.name]
    assert quoted == planned["total"], f"README says {quoted} jobs, snakemake -n plans {planned}"
    for rule, n in expected_jobs(cfg).items():
        assert planned.get(rule) == n, f"{rule}: planned {planned.get(rule)}, expected {n}\n{proc.stdout[-3000:]}"
    assert planned.get("report") == 1
    n_gradual = gradual_jobs(cfg)
    if n_gradual and "train_gradual" not in planned:
        common = (REPO / "workflow/rules/common.smk").read_text()
        if "gradual" not in common:
            pytest.xfail("gradual.enabled, but train_gradual is not yet a target (all_metrics() in "
                         "workflow/rules/common.smk does not include gradual_metrics())")
    assert planned.get("train_gradual", 0) == n_gradual


def test_readme_quotes_the_default_experiments_job_count(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    planned = planned_jobs(snakemake(wd, "--cores", "2", "-n", timeout=120).stdout)
    assert readme_job_counts()["config.yaml"] == planned["total"]


GRADUAL = [p for p in CONFIGS if (load(p).get("gradual") or {}).get("enabled")]


def gradual_pool(spec: dict, num_classes: int) -> int:
    """Channels gradual FRS may prune, counted on the built model: the inner convs of residual blocks (conv1 of
    each block) or, for VGG, every conv after the first two (as the paper; prunelab.pruning.gradual.auto_ignore)."""
    from torch import nn

    from prunelab.models import build_model

    model = build_model({"name": spec["name"], "options": spec.get("options") or {}, "in_shape": [3, 32, 32],
                         "num_classes": num_classes})
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if spec["name"] == "lenet5":  # conv1, conv2 and fc1 (Caffe sizes); the classifier's outputs are never pruned
        return 20 + 50 + 500
    if spec["name"].startswith("resnet"):
        return sum(m.out_channels for n, m in convs if n.endswith(".conv1"))
    assert spec["name"].startswith("vgg"), spec
    return sum(m.out_channels for _, m in convs[2:])


@pytest.mark.parametrize("path", GRADUAL, ids=[p.stem for p in GRADUAL])
def test_gradual_schedule_reaches_its_ratios(path):
    """Ten steps of channels_per_step must reach round(ratio x pool) before stop_epoch, with epochs left to
    fine-tune: the schedule check of prunelab.pruning.gradual (which otherwise fails the job before training)."""
    gradual = pytest.importorskip("prunelab.pruning.gradual")
    cfg = load(path)
    g = cfg["gradual"]
    stop = GradualSettings.of({"stop_epoch": g.get("stop_epoch")}).stop_epoch_for(cfg["train"]["epochs"])
    steps = gradual.pruning_epochs(g["interval"], stop, cfg["train"]["epochs"])
    classes = 100 if cfg["dataset"]["name"] == "cifar100" else 10
    for arch, spec in cfg["archs"].items():
        if not g.get("archs") and spec["name"] in DENSE_ONLY_MODELS or g.get("archs") and arch not in g["archs"]:
            continue
        pool = gradual_pool(spec, classes)
        for ratio in g.get("ratios") or cfg["granularities"]["structured"]:
            target = int(ratio * pool + 0.5)
            plan = gradual.cumulative_targets(target, len(steps), g.get("channels_per_step"))
            assert plan[-1] == target and steps[-1] < cfg["train"]["epochs"], (arch, ratio, pool, plan)
