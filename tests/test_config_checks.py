"""DAG-time config checks (prunelab.checks): each hostile config stops with one line naming the key."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, TINY, snakemake
from prunelab import checks as cc
from prunelab.checks.models import meta_build
from prunelab.data import formats as datasets_io

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
BASE = yaml.safe_load(TINY.read_text())
SHIPPED = [TINY, REPO / "config/config.yaml", *sorted((REPO / "config/experiments").glob("*.yaml"))]


def filled(cfg: dict) -> dict:
    """`cfg` validated by the schema, defaults filled (as common.smk does before check_config)."""
    cfg = copy.deepcopy(cfg)
    validate(cfg, schema=SCHEMA, set_default=True)
    return cfg


def changed(*edits) -> dict:
    """tiny.yaml with (dotted.key, value) edits; value None deletes the key."""
    cfg = copy.deepcopy(BASE)
    for key, value in edits:
        *path, last = key.split(".")
        node = cfg
        for k in path:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return cfg


def error_of(cfg: dict, files=()) -> str:
    with pytest.raises(cc.ConfigError) as info:
        cc.check_config(filled(cfg), list(files))
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 1000, msg
    return msg


def image(path, size=(8, 8), mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def image_folder(root, classes=("a", "b"), per_class=130, size=(8, 8)):
    for c in classes:
        for i in range(per_class):
            image(root / "train" / c / f"{i}.png", size)
    return root


def imagefolder_cfg(root, **ds):
    return changed(("dataset", {"name": "imagefolder", "data_root": str(root), "val_fraction": 0.5, **ds}),
                   ("stats.samples", 20))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_pass(path, monkeypatch):
    monkeypatch.setattr(datasets_io, "missing_files", lambda name, root: [])  # CIFAR files are absent here
    cfg = yaml.safe_load(path.read_text())
    cfg["dataset"]["download"] = False  # the data lookup runs
    cc.check_config(filled(cfg), [str(path)], check_device=False)


HOSTILE = [  # (edits, key named in the message)
    ([("archs.cnn.name", "tv:resnet_nope")], "archs.cnn.name"),
    ([("archs.mlp.name", "mlp3")], "archs.mlp.name"),  # the registry, not a copy in the schema, knows the models
    ([("regularizer", {"methods": ["magnitud"]}), ("regimes", ["standard", "pat"])], "regularizer.methods"),
    ([("archs.cnn", {"name": "tv:resnet18", "options": {"weights": "x"}})], "archs.cnn.options"),
    ([("archs.cnn", {"name": "tv:resnet18", "options": {"no_such": 1}})], "archs.cnn.options"),
    ([("archs.cnn", {"name": "tv:alexnet"})], "archs.cnn"),  # 8x8 digits shrink to nothing
    ([("archs.mlp.options", {"hidden": 3})], "archs.mlp.options"),
    ([("archs.mlp.options", {"hidden": [0]})], "archs.mlp.options"),
    ([("archs.cnn.options", {"widths": "a"})], "archs.cnn.options"),
    ([("archs.cnn.options", {"widths": []})], "archs.cnn.options"),
    ([("archs.mlp.options", {"hiden": [8]})], "archs.mlp.options"),
    ([("archs.mlp.options", {"hidden": []})], "archs.mlp"),
    ([("archs.cnn", {"name": "lenet5"})], "archs.cnn"),  # needs 16x16 inputs, digits are 8x8
    ([("archs.cnn", {"name": "resnet20", "options": {"shortcut": "C"}})], "archs.cnn.options"),
    ([("archs.cnn", {"name": "vgg11", "options": {"batch_norm": True}})], "archs.cnn.options"),
    ([("prune.ignore_layers", ["conv9"])], "prune.ignore_layers"),
    ([("prune.ignore_layers", ["conv1"])], "prune.ignore_layers"),  # the mlp has no conv1
    ([("gradual", {"enabled": True, "ignore_layers": ["nope"]})], "gradual.ignore_layers"),
    ([("gradual", {"enabled": True, "stop_epoch": 8})], "gradual.stop_epoch"),
    ([("gradual", {"enabled": True, "stop_epoch": 20})], "gradual.stop_epoch"),
    ([("gradual", {"enabled": True, "interval": 6})], "gradual.stop_epoch"),
    ([("gradual", {"enabled": True, "archs": ["cnnn"]})], "gradual.archs"),
    ([("gradual", {"enabled": True}), ("archs", {"mlp": {"name": "mlp"}})], "gradual.enabled"),
    ([("gradual", {"enabled": True, "archs": ["mlp"], "ratios": [0.5]}), ("archs.mlp.options", {"hidden": []}),
      ("granularities", {"unstructured": [0.5]})], "gradual.archs"),
    ([("gradual", {"enabled": True}), ("granularities", {"unstructured": [0.5]})], "gradual.ratios"),
    ([("gradual", {"enabled": True, "ratios": [0.001]})], "gradual.ratios"),
    ([("prune", {"schedule": "iterative", "iterative_steps": 5})], "prune.iterative_steps"),
    ([("prune", {"schedule": "iterative", "iterative_steps": 3}), ("finetune.epochs", 0)], "prune.iterative_steps"),
    ([("granularities.unstructured", [0.001])], "granularities.unstructured"),
    ([("granularities.structured", [0.999])], "granularities.structured"),
    ([("granularities.unstructured", [0.5, 0.503])], "granularities.unstructured"),
    ([("granularities.structured", [0.503])], "granularities.structured"),
    ([("scratch", {"enabled": True, "ratios": [0.25, 0.251]})], "scratch.ratios"),
    ([("space", {"enabled": True, "regimes": [0.5, 0.501]})], "space.regimes"),
    ([("space", {"enabled": True, "regimes": [0.004]})], "space.regimes"),
    ([("regimes", ["standard", "pat"]), ("regularizer.archs", ["cnnn"])], "regularizer.archs"),
    ([("regimes", ["standard", "pat"]), ("regularizer.methods", ["taylor"])], "regularizer.methods"),
    ([("regimes", ["standard", "pat"]), ("regularizer.methods", [])], "regularizer.methods"),
    ([("regularizer.archs", ["cnn"])], "regularizer"),  # regimes: [standard] only
    ([("scratch", {"enabled": True, "methods": ["taylor"]})], "scratch.methods"),
    ([("scratch", {"enabled": True, "methods": []})], "scratch.methods"),
    ([("scratch", {"enabled": True, "regimes": ["pat"]})], "scratch.regimes"),   # tiny trains standard only
    ([("scratch", {"enabled": True}), ("granularities", {"unstructured": [0.5]})], "scratch.ratios"),
    ([("space", {"enabled": True, "archs": ["nope"]})], "space.archs"),
    ([("granularities", {})], "granularities"),
    ([("granularities", {"unstructured": [], "structured": []})], "granularities"),
    ([("methods", {"frs": {}}), ("granularities", {"unstructured": [0.5]})], "methods.frs"),
    ([("prune.round_to", 1000)], "prune.round_to"),
    ([("prune.round_to", 16)], "prune.round_to"),  # widest prunable layer: 32 (mlp), 16 (cnn)
    ([("stats.samples", 5000)], "stats.samples"),
    ([("stats.samples", 301)], "stats.samples"),  # max_train 300
    ([("stats.samples", 10)], "stats.samples"),  # screening: 2 per class
    ([("dataset.val_fraction", 0.01)], "dataset.val_fraction"),
    ([("dataset.max_train", 10)], "dataset.max_train"),
    ([("train", {"epochs": 8, "schedule": "multistep", "milestones": [4, 8]})], "train.milestones"),
    ([("prune.min_keep_fraction", 1)], "granularities.unstructured"),
    ([("prune.min_keep_fraction", 0.6)], "granularities.unstructured"),  # ratio 0.5 leaves 0.4 prunable
    ([("prune.min_keep_units", 20)], "granularities.structured"),  # mlp [32, 16]: 12 of 48 units can go
    ([("granularities.structured", [0.95])], "granularities.structured"),  # cnn [8, 16, 16]: at most 37/40
    ([("archs", {"mlp": {"name": "mlp", "options": {"hidden": [8]}}}),
      ("prune.ignore_layers", ["fc1", "fc2"])], "prune.ignore_layers"),
    ([("reference", [{"arch": "cnnn", "source": "x", "top1_delta": 0}])], "reference.0.arch"),
    ([("reference", [{"arch": "cnn", "method": "taylor", "source": "x", "top1_delta": 0}])], "reference.0.method"),
    ([("gradual", {"enabled": True, "ratios": [0.5], "stop_epoch": 4, "interval": 2, "channels_per_step": 5}),
      ("archs.cnn.options", {"widths": [8, 16, 16]})], "gradual.channels_per_step"),  # 2 x 5 < 20 of 40
    ([("reference", [{"arch": "cnn", "granularity": "structured", "ratio": 0.4, "source": "x", "top1_delta": 0}])],
     "reference.0.ratio"),
    ([("archs.mlp.granularities", {"unstructured": [0.5, 0.503]})], "archs.mlp.granularities.unstructured"),
    ([("archs.mlp.options", {"hidden": []}), ("archs.mlp.granularities", {"structured": [0.5]}),
      ("granularities", {"unstructured": [0.5]})], "archs.mlp"),
    ([("archs.cnn.granularities", {"structured": [0.95]})], "archs.cnn.granularities.structured"),
    ([("gradual", {"enabled": True, "stop_epoch": 4}), ("archs.cnn.train", {"epochs": 4})], "gradual.stop_epoch"),
    ([("prune", {"schedule": "iterative", "iterative_steps": 2}), ("finetune.epochs", 4),
      ("archs.mlp.finetune", {"epochs": 1})], "prune.iterative_steps"),
    ([("prune", {"target": "macs", "scope": "layerwise"})], "prune.target"),
    ([("finetune", {"epochs": 2, "budgets": [3, 20]})], "finetune.budgets"),   # not whole epochs
    ([("finetune", {"epochs": 2, "steps_per_epoch": 5, "budgets": [5]})], "finetune.budgets"),  # largest is not the run
    ([("finetune", {"epochs": 4, "steps_per_epoch": 5, "budgets": [5, 20]}),
      ("prune", {"schedule": "iterative", "iterative_steps": 2})], "finetune.budgets"),
    ([("archs.mlp.finetune", {"epochs": 2, "steps_per_epoch": 5, "budgets": [5, 20]})], "archs.mlp.finetune.budgets"),
    ([("experiment", "..")], "experiment"),
    ([("experiment", ".hidden")], "experiment"),
    ([("experiment", "-x")], "experiment"),
]


@pytest.mark.parametrize("edits,key", HOSTILE, ids=[f"{k}-{i}" for i, (_, k) in enumerate(HOSTILE)])
def test_hostile_config_names_its_key(edits, key):
    cfg = changed(*edits)
    if key == "experiment":  # the schema's pattern refuses these too; the check itself is tested here
        with pytest.raises(Exception, match="does not match"):
            filled(cfg)
        with pytest.raises(cc.ConfigError, match="config key 'experiment'"):
            cc.check_experiment(cfg["experiment"])
        return
    assert f"config key '{key}" in error_of(cfg)


def test_cuda_without_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "config key 'device'" in error_of(changed(("device", "cuda")))
    cluster = changed(("device", "cuda"), ("resources", {"gpu": 1}))
    cc.check_config(filled(cluster), check_device=False)  # cluster: the nodes have the GPUs
    cluster["resources"]["gpu"] = 0
    with pytest.raises(cc.ConfigError, match="config key 'resources.gpu'"):
        cc.check_config(filled(cluster), check_device=False)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn"])
def test_missing_data_files_with_download_off(name, tmp_path):
    cfg = changed(("dataset", {"name": name, "data_root": str(tmp_path), "download": False}), ("stats.samples", 512))
    msg = error_of(cfg)
    assert "config key 'dataset.download'" in msg and str(tmp_path) in msg
    cfg["dataset"]["download"] = True  # the job fetches them
    cc.check_config(filled(cfg))


def test_missing_fashion_mnist_goes_through_the_data_lookup(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(datasets_io, "missing_files", lambda name, root: seen.append(name) or [f"{root}/x"])
    msg = error_of(changed(("dataset", {"name": "fashion_mnist", "data_root": str(tmp_path)})))
    assert seen == ["fashion_mnist"] and "config key 'dataset.download'" in msg


def test_imagefolder_good_then_one_class_mixed_corrupt(tmp_path):
    root = image_folder(tmp_path / "imgs")
    cc.check_config(filled(imagefolder_cfg(root)))
    one = image_folder(tmp_path / "one", classes=("a",), per_class=2)
    assert "at least two" in error_of(imagefolder_cfg(one))
    image(root / "train" / "b" / "big.png", size=(9, 8))
    assert "differ in size" in error_of(imagefolder_cfg(root))
    cc.check_config(filled(imagefolder_cfg(root, image_size=8)))  # resized: fine
    (root / "train" / "a" / "bad.png").write_bytes(b"not a png")
    msg = error_of(imagefolder_cfg(root, image_size=8))
    assert "config key 'dataset.data_root'" in msg and "bad.png" in msg
    assert "does not exist" in error_of(imagefolder_cfg(tmp_path / "nowhere"))
    image(root / "test" / "c" / "0.png")
    assert "class folders ['c']" in error_of(imagefolder_cfg(root, image_size=8))
    (root / "train" / "empty").mkdir()
    assert "holds no images" in error_of(imagefolder_cfg(root))


def test_read_imagefolder_names_the_file(tmp_path):
    """At run time (prepare_data): a truncated image or a single class stops with one line naming it."""
    root = image_folder(tmp_path / "imgs", per_class=3, size=(16, 16))
    bad = root / "train" / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:150])  # header intact, pixels cut
    with pytest.raises(ValueError, match=r"1\.png is corrupt") as info:
        datasets_io.read_imagefolder(root, None)
    assert "\n" not in str(info.value)
    (root / "train" / "a" / "2.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"2\.png is not a readable image"):
        datasets_io.read_imagefolder(root, None)
    with pytest.raises(ValueError, match="one class folder"):
        datasets_io.read_imagefolder(image_folder(tmp_path / "one", classes=("a",), per_class=2), None)


def test_duplicate_yaml_keys(tmp_path):
    text = TINY.read_text()
    top = tmp_path / "top.yaml"
    top.write_text(text + "seeds: [1]\n")
    msg = error_of(BASE, [top])
    assert str(top) in msg and "'seeds' appears twice" in msg
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("train: {epochs: 8,", "train: {epochs: 8, epochs: 9,"))
    assert "'epochs' appears twice" in error_of(BASE, [nested])
    cc.check_config(filled(BASE), [str(TINY)])


def test_method_variants_and_names_in_sections():
    """A method option given as a list (variants) passes; sections may name a method or one of its variants."""
    pytest.importorskip("prunelab.methods.variants")
    cfg = changed(("methods", {"magnitude": {}, "screening": {"lambda": [0, 0.5]}}),
                  ("regimes", ["standard", "pat"]), ("regularizer.methods", ["screening"]),
                  ("scratch", {"enabled": True, "methods": ["screening-lambda0.5"]}))
    cc.check_config(filled(cfg))


def test_ratio_bounds_are_the_paths_bounds():
    """Every accepted ratio survives the two-decimal path format exactly (brute force over a grid)."""
    base = filled(BASE)
    for r in np.round(np.arange(0.001, 1.0, 0.0005), 4).tolist():
        cfg = {**base, "granularities": {"unstructured": [r]}}
        try:
            cc.check_ratios(cfg)
        except cc.ConfigError:
            assert f"{r:.2f}" in ("0.00", "1.00") or round(r, 2) != r
        else:
            assert 0 < float(f"{r:.2f}") < 1 and float(f"{r:.2f}") == r


# ------------------------------------------------------------------------------------ end to end (dry run)

@pytest.mark.parametrize("edits,key", [
    ([("prune.round_to", 1000)], "prune.round_to"),
    ([("gradual", {"enabled": True, "stop_epoch": 8})], "gradual.stop_epoch"),
])
def test_dry_run_stops_before_any_job_with_one_line(workdir, edits, key):
    (workdir / "bad.yaml").write_text(yaml.safe_dump(changed(*edits)))
    proc = snakemake(workdir, "--configfile", "bad.yaml", "-n", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if f"config key '{key}'" in ln]
    assert len(lines) == 1, proc.stdout[-3000:]
    assert "rule " not in proc.stdout and "Job stats" not in proc.stdout
    assert not (workdir / "results").exists()


def test_dry_run_refuses_duplicate_keys(workdir):
    (workdir / "dup.yaml").write_text(TINY.read_text() + "experiment: other\n")
    proc = snakemake(workdir, "--configfile", "dup.yaml", "-n", check=False)
    assert proc.returncode != 0 and "'experiment' appears twice" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("name,in_shape", [("cnn", [1, 8, 8]), ("lenet5", [1, 28, 28]), ("mlp", [1, 8, 8]),
                                           ("vgg11", [3, 32, 32])])
def test_unit_counts_match_torch_pruning_groups(name, in_shape):
    """The unit counts behind the reachability checks equal torch-pruning's dependency groups (no residual)."""
    import torch

    from prunelab.models import build_model, classifier_name, prunable_layers
    from prunelab.models.graph import structured_groups
    from prunelab.pruning.gradual import auto_ignore

    arch = {"name": name, "options": {}, "in_shape": in_shape, "num_classes": 10}
    model = build_model(arch).eval()
    with meta_build():
        meta = build_model(arch)
    skip = set(auto_ignore(model, name)) | {classifier_name(model)}
    groups = [g for g in structured_groups(model, torch.zeros(2, *in_shape), "inner") if not skip & set(g["members"])]
    widths = [m.weight.shape[0] for n, m in prunable_layers(meta) if n not in skip]
    assert sorted(widths) == sorted(g["units"] for g in groups)
    assert all(len(g["members"]) == 1 for g in groups)


@pytest.mark.parametrize("keep", [0.3, 0.6])
def test_unstructured_reachability_matches_the_pruner(keep):
    """The check refuses a ratio exactly when prunelab.pruning.selection (random scores) removes less than its label."""
    import torch

    from prunelab.models import build_model, prunable_layers
    from prunelab.pruning.selection import select_unstructured

    model = build_model({"name": "mlp", "options": {"hidden": [32, 16]}, "in_shape": [1, 8, 8], "num_classes": 10})
    gen = torch.Generator().manual_seed(0)
    scores = {n: {"unstructured": torch.rand(m.weight.shape, generator=gen), "structured": None}
              for n, m in prunable_layers(model)}
    for r in (0.3, 0.4, 0.45, 0.69, 0.7, 0.75, 0.99):
        masks = select_unstructured(model, scores, r, {"scope": "global", "min_keep_fraction": keep})
        achieved = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        cfg = changed(("archs", {"mlp": BASE["archs"]["mlp"]}), ("granularities", {"unstructured": [r]}),
                      ("prune.min_keep_fraction", keep))
        if f"{achieved:.2f}" != f"{r:.2f}":  # the label of the result would be wrong
            assert "config key 'granularities.unstructured'" in error_of(cfg)
        else:
            cc.check_config(filled(cfg))


def test_granularities_left_out_is_a_baseline_run(tmp_path):
    """granularities left to its default ({}) trains baselines only; written out empty, it is refused."""
    minimal = {"experiment": "m", "dataset": {"name": "digits"}, "archs": {"mlp": {"name": "mlp"}}, "seeds": [0]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(minimal))
    cc.check_config(filled(minimal), [str(path)])
    path.write_text(yaml.safe_dump({**minimal, "granularities": {}}))
    assert "config key 'granularities'" in error_of({**minimal, "granularities": {}}, [path])


@pytest.mark.parametrize("arch,min_keep,round_to,scope", [
    ("mlp", 20, 1, "global"), ("cnn", 6, 1, "global"), ("cnn", 1, 16, "global"), ("cnn", 1, 12, "layerwise"),
    ("mlp", 1, 12, "layerwise"), ("cnn", 1, 12, "global"), ("mlp", 1, 20, "global")])
def test_structured_reachability_matches_the_pruner(arch, min_keep, round_to, scope):
    """min_keep_units: the check refuses a ratio exactly when prunelab.pruning.selection removes less than its label;
    round_to (lowers the achieved ratio by design): exactly when nothing is removed in layerwise scope, and
    in global scope never when something is removed (it cannot see the scores)."""
    import torch

    from prunelab.models import build_model, prunable_layers
    from prunelab.pruning.selection import select_structured_groups

    spec = BASE["archs"][arch]
    model = build_model({**spec, "in_shape": [1, 8, 8], "num_classes": 10}).eval()
    gen = torch.Generator().manual_seed(0)
    scores = {n: {"unstructured": None, "structured": torch.rand(m.weight.shape[0], generator=gen)}
              for n, m in prunable_layers(model)}
    for r in (0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9):
        prune = {"scope": scope, "min_keep_units": min_keep, "round_to": round_to}
        _, _, stats = select_structured_groups(model, scores, r, prune,
                                               example_input=torch.zeros(2, 1, 8, 8))
        cfg = filled(changed(("archs", {arch: spec}), ("granularities", {"structured": [r]}),
                             ("prune", {"min_keep_units": min_keep, "round_to": round_to, "scope": scope})))
        try:
            cc.check_config(cfg)
            refused = False
        except cc.ConfigError:
            refused = True
        target = math.floor(r * stats["n_prunable"] + 0.5) if scope == "global" else None
        if round_to == 1 and target is not None:  # refused iff capped below the target, and the label is wrong
            capped = stats["n_removed"] < target and f"{stats['ratio_achieved']:.2f}" != f"{r:.2f}"
            assert refused == capped, (r, stats)
        elif scope == "layerwise":
            assert refused == (stats["ratio_achieved"] == 0), (r, stats)
        else:
            assert not refused or stats["ratio_achieved"] == 0, (r, stats)


def test_an_archs_own_ratios_and_epochs_are_the_ones_checked():
    """archs.<name>.granularities / .train replace the top-level values for that arch: checked with them."""
    own = changed(("archs.mlp.options", {"hidden": []}), ("archs.mlp.granularities", {"unstructured": [0.5]}))
    cc.check_config(filled(own))  # no structured ratio for the hidden-less MLP: nothing to refuse
    longer = changed(("gradual", {"enabled": True, "stop_epoch": 10}), ("archs.cnn.train", {"epochs": 12}))
    cc.check_config(filled(longer))  # top-level train.epochs is 8, the cnn's own 12
    assert "archs.cnn.train.epochs" in error_of(changed(("gradual", {"enabled": True, "stop_epoch": 10}),
                                                        ("archs.cnn.train", {"epochs": 10})))


@pytest.mark.parametrize("beta", [0, [0.01, 0], [0.01]])
def test_schema_refuses_a_beta_that_trains_nothing_different(beta):
    """beta 0 (alone or in a sweep) makes pat training standard training; a one-value list sweeps nothing."""
    with pytest.raises(Exception, match="regularizer"):
        filled(changed(("regimes", ["standard", "pat"]), ("regularizer.beta", beta)))
