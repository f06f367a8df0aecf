"""Pruning-aware training (regime pat): β = 0 is standard training bit for bit, the hooks leave the forward
pass alone, β > 0 lowers R on held-out digits, and the workflow runs every stage for both regimes."""
import json
import re

import pytest
import torch
import yaml

from conftest import TINY, copy_run, job_blocks, make_workdir, snakemake
from prunelab.data import prepare_dataset, split_tensors
from prunelab.methods.variants import pat_regimes
from prunelab.models import architecture_for, build_model
from prunelab.training import seed_everything, train_baseline, train_model
from prunelab.training.regularizers import KINDS, ContributionRegularizer

CNN = {"name": "cnn", "options": {"widths": [4, 8, 8]}}   # conv + BN + linear: every hook type
MLP = {"name": "mlp", "options": {"hidden": [32, 16]}}
SHORT = {"epochs": 2, "batch_size": 32, "lr": 0.05}


@pytest.fixture(scope="module")
def data():
    return prepare_dataset("digits", None, val_fraction=0.2, max_train=200)


def same_run(a, b):
    (ma, _, ra), (mb, _, rb) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) and ra.history == rb.history


@pytest.mark.parametrize("kind", KINDS)
def test_beta_zero_is_standard_training_bit_for_bit(data, kind):
    std = train_baseline(data, CNN, SHORT, 0, "cpu", None)
    assert same_run(train_baseline(data, CNN, SHORT, 0, "cpu", {"kind": kind, "beta": 0}), std)
    assert not same_run(train_baseline(data, CNN, SHORT, 0, "cpu", {"kind": kind, "beta": 0.01}), std)


@pytest.mark.parametrize("kind", KINDS)
def test_attached_regularizer_times_zero_leaves_training_unchanged(data, kind):
    """train_baseline's pat path with the hooks live and R computed every step, but scaled by 0.0."""
    std = train_baseline(data, CNN, SHORT, 0, "cpu", None)
    seed_everything(0)
    model = build_model(architecture_for(CNN, data))
    values = []
    with ContributionRegularizer(model, kind) as reg:
        def zero_times_r():
            r = reg.value()
            values.append(float(r.detach()))
            return 0.0 * r
        result = train_model(model, data, SHORT, "cpu", 0, extra_loss=zero_times_r)
    steps = SHORT["epochs"] * -(-len(data["train"]["y"]) // SHORT["batch_size"])
    assert len(values) == steps and min(values) > 0  # R was really computed, with its graph, at every step
    assert same_run((model, None, result), std)


def mean_r(model, data, kind):
    """R on the validation split (eval mode, one batch)."""
    model.eval()
    x, _ = split_tensors(data, "val")
    with ContributionRegularizer(model, kind) as reg, torch.no_grad():
        model(x)
        return float(reg.value())


# Measured (mlp [32, 16], digits 200 train, 10 epochs, no augmentation, seeds 0/1/2): mean entropy on val
# 2.698/2.749/2.652 standard vs 2.544/2.611/2.474 with β = 0.05 (top-1 val 86.8/81.6/77.1 vs 84.0/78.1/74.0 %);
# β = 0.001 (the default) 2.698 -> 2.698, 2.749 -> 2.745, 2.652 -> 2.650. contribution_l1 at β = 0.001:
# R_l1 322.6/312.4/275.0 -> 254.1/246.9/202.2.
@pytest.mark.parametrize("kind, beta", [("contribution_entropy", 0.05), ("contribution_l1", 0.001)])
def test_positive_beta_lowers_r_on_held_out_data(data, kind, beta):
    cfg = {"epochs": 10, "batch_size": 32, "lr": 0.05, "augment": False}
    std, _, _ = train_baseline(data, MLP, cfg, 0, "cpu", None)
    pat, _, _ = train_baseline(data, MLP, cfg, 0, "cpu", {"kind": kind, "beta": beta})
    r_std, r_pat = mean_r(std, data, kind), mean_r(pat, data, kind)
    assert r_pat < 0.95 * r_std, (r_std, r_pat)


@pytest.mark.e2e
def test_workflow_runs_every_stage_for_both_regimes(tiny_reference, tmp_path):
    """On a copy of the session's tiny run (its standard mlp baseline is there): every stage is planned for both
    regimes, and the pat baseline trains with the regulariser."""
    wd = copy_run(tiny_reference, tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    assert cfg["archs"]["mlp"] == MLP
    cfg.update(regimes=["standard", "pat"], regularizer={"kind": "contribution_entropy", "beta": 0.05},
               archs={"mlp": MLP})
    (wd / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(wd, "--configfile", "c.yaml", "--cores", "1", "--summary").stdout
    rows = [line.split("\t") for line in out.splitlines() if line.startswith("results/")]
    by_rule: dict[str, set] = {}
    for path, _, rule, *_ in rows:
        m = re.search(r"/(standard|pat)/", path)
        by_rule.setdefault(rule, set()).add(m and m.group(1))
    for rule in ("train_baseline", "collect_stats", "score", "prune_finetune"):
        assert by_rule[rule] == {"standard", "pat"}, rule
    # both baselines for real (the standard one is the tiny run's): the regulariser reaches only the pat job,
    # and changes its training
    root = wd / "results" / cfg["experiment"] / "baseline/mlp"
    trained = snakemake(wd, "--configfile", "c.yaml", "--cores", "2",
                        *(str((root / f"{g}/seed0/metrics.json").relative_to(wd)) for g in ("standard", "pat")))
    assert [(r, w["regime"]) for r, w, _ in job_blocks(trained.stdout)] == [("train_baseline", "pat")]
    run = {g: json.loads((root / f"{g}/seed0/run.json").read_text()) for g in ("standard", "pat")}
    assert run["standard"]["params"]["regularizer"] is None
    reg = run["pat"]["params"]["regularizer"]
    assert (reg["kind"], reg["beta"]) == ("contribution_entropy", 0.05)
    assert run["standard"]["history"] != run["pat"]["history"]


def test_a_beta_list_sweeps_pat_regimes():
    """regularizer.beta as a list: one pat regime per value, named like a method variant; one value keeps `pat`."""
    assert pat_regimes({"regularizer": {"beta": 0.001}}) == {"pat": 0.001}
    assert pat_regimes({"regularizer": {"beta": [0.001, 0.01]}}) == {"pat-beta0.001": 0.001, "pat-beta0.01": 0.01}


def test_workflow_plans_each_swept_beta_with_the_methods_it_names(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(regimes=["standard", "pat"], archs={"mlp": MLP},
               regularizer={"beta": [0.01, 0.1], "methods": ["magnitude"]})
    (wd / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(wd, "--configfile", "c.yaml", "--cores", "1", "--summary").stdout
    paths = [line.split("\t")[0] for line in out.splitlines() if line.startswith("results/")]
    baselines = sorted(p.split("/")[4] for p in paths if "/baseline/" in p and p.endswith("metrics.json"))
    assert baselines == ["pat-beta0.01", "pat-beta0.1", "standard"]
    for regime in ("pat-beta0.01", "pat-beta0.1"):   # regularizer.methods: only magnitude after pat training
        methods = {p.split("/")[6] for p in paths if f"/finetuned/mlp/{regime}/" in p}
        assert methods == {"magnitude"}, (regime, methods)
