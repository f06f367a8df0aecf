"""Gradual FRS pruning while training (prunelab.pruning.gradual, rule train_gradual) against hand references."""
import json
import re
import shutil

import pytest
import torch
import yaml
from torch import nn

from conftest import TINY, copy_run, job_blocks, snakemake
from prunelab.data import split_tensors
from prunelab.io import load_model
from prunelab.models import architecture_for, build_model, prunable_layers
from prunelab.models.graph import structured_groups
from prunelab.pruning.gradual import ChannelKeeper, GradualFRS, auto_ignore, select_channels, train_gradual
from prunelab.pruning.schedules import cumulative_targets, pruning_epochs
from prunelab.pruning.selection import select_structured
from prunelab.records import METRICS_KEYS
from prunelab.settings import GradualSettings
from prunelab.training import SGD, seed_everything, train_model

CNN = {"name": "cnn", "options": {"widths": [8, 8, 8]}}
CONVS = ("conv1", "conv2", "conv3")
TRAIN = {"epochs": 4, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3}


def zero_channels(model) -> set:
    """(layer, channel) of the cnn whose conv row and BN weight and bias are all exactly zero."""
    mods = dict(model.named_modules())
    out = set()
    for i, conv in enumerate(CONVS, start=1):
        w, bn = mods[conv].weight.detach(), mods[f"bn{i}"]
        for c in range(w.shape[0]):
            if (w[c] == 0).all() and bn.weight[c] == 0 and bn.bias[c] == 0:
                out.add((conv, c))
    return out


def test_schedule_and_budget():
    assert pruning_epochs(2, 6, 10) == [2, 4, 6]
    assert GradualSettings.of({"stop_epoch": None}).stop_epoch_for(10) == 5   # null: half the run
    assert GradualSettings.of({"stop_epoch": 3}).stop_epoch_for(10) == 3
    assert pruning_epochs(2, GradualSettings.of({}).stop_epoch_for(10), 10) == [2, 4]
    assert pruning_epochs(3, 7, 8) == [3, 6]
    for bad in ((2, 10, 10), (4, 3, 10), (0, 3, 10)):
        with pytest.raises(ValueError):
            pruning_epochs(*bad)
    assert cumulative_targets(10, 3) == [3, 7, 10]        # round(10 k / 3)
    assert cumulative_targets(10, 3, 4) == [4, 8, 10]     # x per step, the last takes the rest
    with pytest.raises(ValueError, match="cannot reach"):
        cumulative_targets(10, 2, 4)


def test_keeper_holds_channels_through_momentum_and_weight_decay():
    seed_everything(0)
    model = build_model({**CNN, "in_shape": [1, 8, 8], "num_classes": 10, "shapes": None})
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)

    def step(after=None):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if after:
            after()

    for _ in range(3):  # momentum buffers of every channel nonzero before pruning
        step()
    keeper = ChannelKeeper(model, list(CONVS), {f"conv{i}": f"bn{i}" for i in (1, 2, 3)})
    keeper.prune({"conv1": torch.tensor([1, 3]), "conv2": torch.tensor([0])})
    pruned = {("conv1", 1), ("conv1", 3), ("conv2", 0)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(5):
        step(keeper.apply)
        assert zero_channels(model) == pruned
    assert not torch.equal(before["conv1.weight"][0], model.conv1.weight[0])  # live channels train
    acts = {}
    model.relu1.register_forward_hook(lambda m, i, o: acts.__setitem__(m.training, o))
    model.train()(x), model.eval()(x)
    for mode in (True, False):  # a masked channel outputs exactly 0 after BN + ReLU, train and eval mode
        assert (acts[mode][:, [1, 3]] == 0).all() and (acts[mode][:, [0, 2]] != 0).any()


def test_each_step_masks_exactly_x_lowest_frs_channels_and_they_stay_zero(data):
    from prunelab.data import calibration_subset
    from prunelab.methods import score_model
    from prunelab.stats import collect_statistics

    arch = architecture_for(CNN, data)
    seed_everything(0)
    model = build_model(arch)
    cfg = {"interval": 1, "stop_epoch": 3, "channels_per_step": 4}
    stats_cfg = {"samples": 64, "batch_size": 32}
    pruner = GradualFRS(model, "cnn", data, 0.5, TRAIN["epochs"], cfg, None, stats_cfg, 0, "cpu")
    assert pruner.n_total == 24 and pruner.cumulative == [4, 8, 12]
    xc, yc = calibration_subset(data, 64, 0)
    steps, ends = [], []

    def before_epoch(epoch, m):
        zero0 = zero_channels(m)
        stats = collect_statistics(m, xc, yc, {"relevance"}, 10, 32)
        sc = score_model(m, stats, "frs", {})["layers"]
        pruner.before_epoch(epoch, m)
        if epoch in pruner.epochs_at:
            # reference: the 4 lowest L2-normalised scores among live channels, one global ranking
            cand = [(float(sc[n]["structured"][c] / sc[n]["structured"].norm()), k, c)
                    for k, n in enumerate(CONVS) for c in range(8) if (n, c) not in zero0]
            lowest = {(CONVS[k], c) for _, k, c in sorted(cand)[:4]}
            steps.append((zero0, zero_channels(m), lowest))

    train_model(model, data, {**TRAIN, "select": "last"}, "cpu", 0, after_step=pruner.after_step,
                before_epoch=before_epoch, on_epoch=lambda r: ends.append(zero_channels(model)))
    assert len(steps) == 3
    for k, (z0, z1, lowest) in enumerate(steps):
        assert z0 <= z1 and len(z1 - z0) == 4 and len(z1) == 4 * (k + 1)
        assert z1 - z0 == lowest
    assert ends == [set(), steps[0][1], steps[1][1], steps[2][1]]  # zero through every optimiser step

    masked = model.eval()
    pruned, new_arch, info = pruner.finish(model, arch)
    x, _ = split_tensors(data, "test")
    with torch.no_grad():
        ref = masked(x)
        assert torch.allclose(pruned.eval()(x), ref, atol=1e-5)
        rebuilt = build_model(new_arch)
        rebuilt.load_state_dict(pruned.state_dict(), strict=True)
        assert torch.allclose(rebuilt.eval()(x), ref, atol=1e-5)
    kept = {n: 8 - sum(1 for l, _ in steps[-1][1] if l == n) for n in CONVS}
    assert {n: new_arch["shapes"][n]["out"] for n in CONVS} == kept
    assert info["n_removed"] == 12 and info["ratio_achieved"] == 0.5


def test_train_gradual_selects_after_last_step(data):
    recs = []
    model, arch, info, result = train_gradual(data, CNN, {**TRAIN, "epochs": 5}, {"interval": 2, "stop_epoch": 2},
                                              0.25, 1, "cpu", stats_cfg={"samples": 64, "batch_size": 64},
                                              on_epoch=recs.append)
    assert info["pruning_epochs"] == [2] and info["n_removed"] == 6      # round(0.25 × 24) in one step
    assert [r["channels_pruned"] for r in recs] == [0, 0, 6, 6, 6]
    assert result.best_epoch >= 3
    assert result.best_top1_val == max(r["top1_val"] for r in recs[2:])
    assert sum(m.weight.shape[0] for n, m in model.named_modules() if n in CONVS) == 18


def test_never_pruned_layers(data):
    vgg = build_model({"name": "vgg11", "options": {}, "in_shape": [1, 8, 8], "num_classes": 10})
    assert auto_ignore(vgg, "vgg11") == ["features.0", "features.4"] and auto_ignore(vgg, "cnn") == []
    cfg = {"interval": 1, "stop_epoch": 1}
    p = GradualFRS(vgg, "vgg11", data, 0.5, 3, cfg, None, {"samples": 8, "batch_size": 8}, 0, "cpu")
    convs = [n for n, m in vgg.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(n for g in p.groups for n in g["members"]) == sorted(convs[2:])  # no classifier, no first 2
    res = build_model({"name": "resnet20", "options": {}, "in_shape": [1, 8, 8], "num_classes": 10})
    p = GradualFRS(res, "resnet20", data, 0.5, 3, cfg, None, {"samples": 8, "batch_size": 8}, 0, "cpu")
    inner = [n for n, _ in res.named_modules() if re.fullmatch(r"layer\d\.\d\.conv1", n)]
    assert len(inner) == 9 and sorted(n for g in p.groups for n in g["members"]) == sorted(inner)
    with pytest.raises(ValueError, match="ignore_layers"):
        GradualFRS(res, "resnet20", data, 0.5, 3, {**cfg, "ignore_layers": ["nope"]}, None,
                   {"samples": 8, "batch_size": 8}, 0, "cpu")


@pytest.mark.e2e
def test_workflow_writes_gradual_metrics(tiny_reference, tmp_path):
    """The gradual job on a copy of the session's tiny run, which holds its prepared data."""
    wd = copy_run(tiny_reference, tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["gradual"] = {"enabled": True, "ratios": [0.5], "interval": 1, "stop_epoch": 2, "archs": ["cnn"]}
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = f"results/{cfg['experiment']}/gradual/cnn/seed0/frs/r0.50"
    run = snakemake(wd, "--configfile", "cfg.yaml", "--cores", "2", f"{out}/metrics.json")
    assert [r for r, _, _ in job_blocks(run.stdout)] == ["train_gradual"]
    rec = json.loads((wd / out / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(rec)
    assert (rec["stage"], rec["method"], rec["granularity"], rec["ratio_requested"]) == \
        ("gradual", "frs", "structured", 0.5)
    assert rec["epochs"] == cfg["train"]["epochs"] and rec["wall_s"] > 0 and 0 <= rec["top1_test"] <= 100
    assert rec["macs_effective"] < rec["macs_dense"] and rec["params_total"] < rec["params_total"] * rec["compression"]
    assert rec["ratio_achieved"] == 0.5 and rec["pruning_epochs"] == [1, 2]
    model, arch, _ = load_model(wd / out / "model.pt")
    widths = cfg["archs"]["cnn"]["options"]["widths"]
    assert sum(arch["shapes"][n]["out"] for n in CONVS) == sum(widths) // 2
    assert (wd / out / "run.json").exists()
    assert (wd / f"results/{cfg['experiment']}/logs/train_gradual/cnn/seed0/frs/r0.50.log").exists()
    shutil.rmtree(wd / "results")


@pytest.mark.parametrize("ratio,min_keep", [(0.3, 1), (0.5, 2), (0.75, 1)])
def test_a_gradual_step_on_fresh_channels_is_the_one_shot_global_selection(ratio, min_keep):
    """One global ranking for one-shot and gradual: on a model with every channel alive, a gradual step of
    round(ratio × N) channels removes exactly what one-shot structured selection at `ratio` removes."""
    seed_everything(0)
    model = build_model({**CNN, "in_shape": [1, 8, 8], "num_classes": 4}).eval()
    gen = torch.Generator().manual_seed(1)
    scores = {n: {"unstructured": None, "structured": torch.rand(m.weight.shape[0], generator=gen)}
              for n, m in prunable_layers(model)}
    groups = [g for g in structured_groups(model, None, "inner") if g["members"] != ["fc"]]
    keep = {n: torch.ones(g["units"], dtype=torch.bool) for g in groups for n in g["members"]}
    n_total = sum(g["units"] * len(g["members"]) for g in groups)
    gradual = select_channels(scores, groups, keep, round(ratio * n_total), min_keep)
    one_shot = select_structured(model, scores, ratio, {"min_keep_units": min_keep})
    assert set(gradual) == set(one_shot)
    assert all(torch.equal(gradual[n], one_shot[n]) for n in one_shot)
    assert sum(len(v) for v in one_shot.values()) > 0


def test_gradual_to_a_macs_target_meets_one_shot_at_the_same_cost(data):
    """prune.target macs: every step removes channels until its share of the MACs target is gone, and the
    physically pruned model has the target's MACs within one channel's cost, as a one-shot prune to it does."""
    from prunelab.measure import count_macs
    from prunelab.models import classifier_name
    from prunelab.pruning.costs import CostModel

    recs = []
    gradual_cfg = {"interval": 1, "stop_epoch": 2, "target": "macs"}
    model, arch, info, _ = train_gradual(data, CNN, {**TRAIN, "epochs": 3}, gradual_cfg, 0.5, 1, "cpu",
                                         stats_cfg={"samples": 64, "batch_size": 64}, on_epoch=recs.append)
    dense = build_model(architecture_for(CNN, data))
    shape = tuple(data["in_shape"])
    x = torch.zeros(2, *shape)
    groups = [g for g in structured_groups(dense, x, "inner") if classifier_name(dense) not in g["members"]]
    costs = CostModel(dense, x, groups)
    one_channel = max(costs.removed("macs", [g["units"] - (i == j) for j, g in enumerate(groups)])
                      for i in range(len(groups)))
    removed = count_macs(dense, shape) - count_macs(model, shape)
    assert abs(removed - 0.5 * count_macs(dense, shape)) <= one_channel
    assert info["prune_target"] == "macs" and info["cost_removed"] == pytest.approx(removed / count_macs(dense, shape))
    assert 0 < recs[1]["channels_pruned"] < recs[2]["channels_pruned"]   # two steps, each a share of the cost
    with pytest.raises(ValueError, match="channels_per_step counts channels"):
        GradualFRS(build_model(architecture_for(CNN, data)), "cnn", data, 0.5, 3,
                   {**gradual_cfg, "channels_per_step": 4}, None, {"samples": 8, "batch_size": 8}, 0, "cpu")
