"""Selection and unstructured masks (prunelab.pruning.selection, .masks) against hand-computed references."""

import math

import pytest
import torch
from torch import nn

from prunelab.models import build_model, prunable_layers
from prunelab.models.graph import structured_groups
from prunelab.pruning.masks import MaskKeeper, apply_masks, prune_unstructured
from prunelab.pruning.schedules import iterative_ratios
from prunelab.pruning.selection import select_structured, select_unstructured, validate_scores
from prunelab.settings import PruneSettings


def arch(name, in_shape, **options):
    return {"name": name, "options": options, "in_shape": list(in_shape), "num_classes": 10}


def mlp(hidden=(128, 64), seed=0):
    torch.manual_seed(seed)
    return build_model(arch("mlp", (1, 8, 8), hidden=list(hidden)))


def random_scores(model, seed=0):
    """Distinct random scores (ties would make the reference ambiguous)."""
    g = torch.Generator().manual_seed(seed)
    return {"method": "random", "config": {}, "layers": {
        n: {"unstructured": torch.rand(m.weight.shape, generator=g, dtype=torch.float64),
            "structured": torch.rand(m.weight.shape[0], generator=g, dtype=torch.float64)}
        for n, m in prunable_layers(model)}}


# ------------------------------------------------------------------------------------------ unstructured
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_global_unstructured_removes_the_lowest_scores(ratio):
    model = mlp()
    scores = random_scores(model)
    masks = select_unstructured(model, scores, ratio, prune={"min_keep_fraction": 0.0})
    allscores = torch.cat([e["unstructured"].flatten() for e in scores["layers"].values()])
    n = allscores.numel()
    k = math.floor(ratio * n + 0.5)
    threshold = allscores.sort().values[k - 1]  # reference: one global threshold
    for name, e in scores["layers"].items():
        assert torch.equal(masks[name], e["unstructured"] > threshold), name
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == k and abs(removed / n - ratio) <= 0.5 / n


def test_layerwise_unstructured_prunes_each_layer_to_the_ratio():
    model = mlp()
    scores = random_scores(model)
    masks = select_unstructured(model, scores, 0.3, prune={"scope": "layerwise", "min_keep_fraction": 0.0})
    for name, e in scores["layers"].items():
        s = e["unstructured"].flatten()
        k = math.floor(0.3 * s.numel() + 0.5)
        assert torch.equal(masks[name].flatten(), s > s.sort().values[k - 1]), name


def test_min_keep_protects_a_layer_whose_scores_are_all_lowest():
    model = mlp()
    scores = random_scores(model)
    scores["layers"]["fc1"]["unstructured"] *= 1e-6  # global ranking would wipe fc1 first
    masks = select_unstructured(model, scores, 0.99, prune={"min_keep_fraction": 0.01})
    for name, m in masks.items():
        need = max(1, math.ceil(0.01 * m.numel()))
        assert int(m.sum()) >= need, name
    fc1 = masks["fc1"].flatten()
    s = scores["layers"]["fc1"]["unstructured"].flatten()
    need = math.ceil(0.01 * s.numel())
    assert int(fc1.sum()) == need  # exactly the protected ones, and they are fc1's best
    assert torch.equal(fc1, s >= s.sort(descending=True).values[need - 1])
    # the classifier (10 × 64 weights) is prunable in unstructured mode but keeps at least one weight
    model2 = mlp()
    sc2 = random_scores(model2)
    sc2["layers"]["fc3"]["unstructured"] *= 1e-9
    assert int(select_unstructured(model2, sc2, 0.9, prune={"min_keep_fraction": 0.0})["fc3"].sum()) == 1


def test_ignore_and_prune_unstructured_info():
    model = mlp()
    before = model.fc1.weight.detach().clone()
    model, masks, info = prune_unstructured(model, random_scores(model), 0.5, prune={"ignore_layers": ["fc1"]})
    assert "fc1" not in masks and torch.equal(model.fc1.weight, before)
    n = model.fc2.weight.numel() + model.fc3.weight.numel()
    zeros = int((model.fc2.weight == 0).sum() + (model.fc3.weight == 0).sum())
    assert info["n_prunable"] == n and zeros == info["n_removed"] == math.floor(0.5 * n + 0.5)
    assert info["sparsity_achieved"] == pytest.approx(zeros / n)
    assert info["layer_kept"]["fc1"] == 1.0
    assert info["layer_kept"]["fc2"] == pytest.approx(1 - float((model.fc2.weight == 0).float().mean()))


def test_prior_masks_stay_removed_in_iterative_steps():
    model = mlp()
    scores = random_scores(model)
    m1 = select_unstructured(model, scores, 0.3)
    flipped = {n: {"unstructured": -e["unstructured"], "structured": None} for n, e in scores["layers"].items()}
    m2 = select_unstructured(model, flipped, 0.6, prior=m1)  # scores now favour the removed weights
    for n in m1:
        assert not (m2[n] & ~m1[n]).any(), n
    total = sum(m.numel() for m in m2.values())
    assert sum(int((~m).sum()) for m in m2.values()) == math.floor(0.6 * total + 0.5)


def _train(model, masks, steps, keeper):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if keeper is not None:
            keeper.apply()
    return opt


def test_mask_keeper_holds_zeros_under_momentum_and_weight_decay():
    model = mlp()
    _train(model, None, 3, None)  # momentum buffers built before masking
    masks = select_unstructured(model, random_scores(model), 0.7)
    keeper = MaskKeeper(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(5):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, m in masks.items():  # hooks zero the masked gradients
            assert (model.get_submodule(name).weight.grad[~m] == 0).all()
        opt.step()
        keeper.apply()
    for name, m in masks.items():
        w = model.get_submodule(name).weight
        assert (w[~m] == 0).all() and (w[m] != 0).all(), name
    # control: without the keeper, masked weights come back
    model2 = mlp()
    apply_masks(model2, masks)
    _train(model2, masks, 3, None)
    assert any((model2.get_submodule(n).weight[~m] != 0).any() for n, m in masks.items())


def test_iterative_ratios_keep_a_geometric_fraction():
    r = iterative_ratios(0.9, 3)
    assert r[-1] == 0.9 and all(a < b for a, b in zip(r, r[1:]))
    kept = [1.0] + [1 - x for x in r]
    steps = [b / a for a, b in zip(kept, kept[1:])]
    assert steps == pytest.approx([0.1 ** (1 / 3)] * 3)
    assert iterative_ratios(0.5, 1) == [0.5]
    # the step count is the schema's to check (prune.iterative_steps), once, named
    with pytest.raises(ValueError, match=r"prune\.iterative_steps: 0 is less than the minimum of 1"):
        PruneSettings.of({"iterative_steps": 0})


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("ratio", [0, 1, 1.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_ratio_fails_clearly(ratio):
    model = mlp()
    with pytest.raises(ValueError, match="ratio must be a number in the open interval"):
        select_unstructured(model, random_scores(model), ratio)
    with pytest.raises(ValueError, match="ratio must be a number in the open interval"):
        select_structured(model, random_scores(model), ratio)


def test_scores_for_another_architecture_fail_clearly():
    model = mlp()
    other = random_scores(build_model(arch("cnn", (1, 8, 8))))
    with pytest.raises(ValueError, match="do not match the model's prunable layers"):
        select_unstructured(model, other, 0.5)
    wider = random_scores(mlp(hidden=(100, 64)))  # same names, other shapes
    with pytest.raises(ValueError, match=r"scores\['fc1'\]\['unstructured'\] has shape"):
        validate_scores(model, wider)
    bad = random_scores(model)
    bad["layers"]["fc2"]["structured"][3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select_structured(model, bad, 0.5)
    none = random_scores(model)
    none["layers"]["fc2"]["structured"] = None
    with pytest.raises(ValueError, match=r"scores\['fc2'\]\['structured'\] is None"):
        select_structured(model, none, 0.5)
    with pytest.raises(ValueError, match="not prunable layers"):
        select_unstructured(model, random_scores(model), 0.5, prune={"ignore_layers": ["conv9"]})


# --------------------------------------------------------------------------------------------- structured
def l2(s):
    return s / s.norm()


def mean_scaled(s):
    return s / s.abs().mean()


@pytest.mark.parametrize("rule,scale", [("l2", l2), ("mean", mean_scaled)])
def test_global_structured_ranks_normalised_scores_and_spares_the_classifier(rule, scale):
    model = mlp()
    scores = random_scores(model)
    scores["layers"]["fc2"]["structured"] *= 1000  # scale must not matter after normalisation
    remove = select_structured(model, scores, 0.4, prune={"normalize": rule})
    assert "fc3" not in remove  # classifier outputs are never removed
    names = ["fc1", "fc2"]
    allscores = torch.cat([scale(scores["layers"][n]["structured"]) for n in names])
    k = math.floor(0.4 * allscores.numel() + 0.5)
    threshold = allscores.sort().values[k - 1]
    for n in names:
        want = torch.nonzero(scale(scores["layers"][n]["structured"]) <= threshold).flatten()
        assert torch.equal(remove[n], want), n
    assert sum(len(v) for v in remove.values()) == k


def test_layerwise_structured_min_keep_and_ignore():
    model = mlp()
    scores = random_scores(model)
    remove = select_structured(model, scores, 0.5, prune={"scope": "layerwise"})
    for n, units in (("fc1", 128), ("fc2", 64)):
        s = scores["layers"][n]["structured"]
        assert torch.equal(remove[n], torch.sort(torch.argsort(s)[: units // 2]).values)
    remove = select_structured(model, scores, 0.99, prune={"min_keep_units": 5})
    assert 128 - len(remove["fc1"]) >= 5 and 64 - len(remove["fc2"]) >= 5
    assert min(128 - len(remove["fc1"]), 64 - len(remove["fc2"])) == 5
    remove = select_structured(model, scores, 0.5, prune={"ignore_layers": ["fc1"]})
    assert set(remove) == {"fc2"}


def test_first_conv_ignored_in_a_cnn():
    model = build_model(arch("cnn", (3, 8, 8)))
    remove = select_structured(model, random_scores(model), 0.5, prune={"ignore_layers": ["conv1"]})
    assert set(remove) == {"conv2", "conv3"}


def resnet(shortcut, depth=20):
    torch.manual_seed(0)
    return build_model(arch(f"resnet{depth}", (3, 16, 16), shortcut=shortcut))


def test_resnet_inner_policy_prunes_only_block_conv1():
    for sc in "AB":
        model = resnet(sc)
        x = torch.randn(1, 3, 16, 16)
        remove = select_structured(model, random_scores(model), 0.5, example_input=x)
        want = {n for n, _ in prunable_layers(model) if n.startswith("layer") and n.endswith(".conv1")}
        assert set(remove) == want and len(want) == 9
    with pytest.raises(ValueError, match="example_input"):
        select_structured(model, random_scores(model), 0.5)


def test_resnet_b_coupled_groups_share_indices_and_mean_score():
    model = resnet("B")
    x = torch.randn(1, 3, 16, 16)
    groups = {tuple(g["members"]) for g in structured_groups(model, x, residual="all") if g["residual"]}
    stream1 = ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    stream2 = ("layer2.0.conv2", "layer2.0.shortcut.conv", "layer2.1.conv2", "layer2.2.conv2")
    assert stream1 in groups and stream2 in groups and len(groups) == 3
    scores = random_scores(model)
    remove = select_structured(model, scores, 0.25, residual="all", example_input=x, prune={"scope": "layerwise"})
    mean = torch.stack([l2(scores["layers"][n]["structured"]) for n in stream2]).mean(0)
    want = torch.sort(torch.argsort(mean)[:8]).values  # 25 % of 32 channels
    for n in stream2:
        assert torch.equal(remove[n], want), n
    assert "fc" not in remove


def test_option_a_residual_stream_is_refused():
    model = resnet("A")
    with pytest.raises(ValueError, match="option-A"):
        select_structured(model, random_scores(model), 0.5, residual="all",
                          example_input=torch.randn(1, 3, 16, 16))
