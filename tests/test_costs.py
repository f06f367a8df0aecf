"""Pruning to a cost (prune.target params / macs): the cost model against the physically pruned model's own counts,
and methods with different allocations reaching the same target."""
import random

import pytest
import torch
from torch import nn

from prunelab.measure import count_macs, count_params
from prunelab.methods import score_model
from prunelab.models import build_model, classifier_name, prunable_layers
from prunelab.models.graph import structured_groups
from prunelab.pruning.costs import CostModel
from prunelab.pruning.removal import remove_units
from prunelab.pruning.stage import prune_model

ARCHS = [("mlp", (1, 28, 28), {"hidden": [300, 100]}),      # the Fashion-MNIST FNN
         ("lenet5", (1, 28, 28), {"batchnorm": True}),
         ("resnet20", (3, 16, 16), {"shortcut": "A"})]
IDS = [a[0] for a in ARCHS]


def make(name, in_shape, options):
    a = {"name": name, "options": options, "in_shape": list(in_shape), "num_classes": 10}
    torch.manual_seed(0)
    return build_model(a).eval(), a


def prunable_groups(model, x):
    head = classifier_name(model)
    return [g for g in structured_groups(model, x, "inner") if head not in g["members"]]


@pytest.mark.parametrize("name,in_shape,options", ARCHS, ids=IDS)
def test_cost_model_equals_the_physical_models_counts(name, in_shape, options):
    """For random kept counts per group the predicted params and MACs are the pruned model's own count_params and
    count_macs (an independent count: module parameters and forward hooks on the rebuilt layers)."""
    model, _ = make(name, in_shape, options)
    x = torch.randn(2, *in_shape)
    groups = prunable_groups(model, x)
    costs = CostModel(model, x, groups)
    assert costs.dense == {"params": count_params(model), "macs": count_macs(model, in_shape)}
    rng = random.Random(0)
    for _ in range(3):
        counts = [rng.randint(1, g["units"]) for g in groups]
        remove = {n: torch.arange(c, g["units"]) for g, c in zip(groups, counts) for n in g["members"]}
        pruned = remove_units(make(name, in_shape, options)[0], remove, groups, x)
        assert costs.cost("params", counts) == pytest.approx(count_params(pruned), abs=1e-6)
        assert costs.cost("macs", counts) == pytest.approx(count_macs(pruned, in_shape), abs=1e-6)


def favouring(model, layer):
    """L1 scores with `layer`'s units spread down a ramp (0.01 .. 1 of their L1): after the selection's per-layer
    normalisation many of its units rank lowest, so this scoring takes more from `layer` than L1 does."""
    out = {}
    for n, m in prunable_layers(model):
        s = m.weight.detach().abs().flatten(1).sum(1).double()
        out[n] = {"unstructured": None,
                  "structured": s * torch.linspace(0.01, 1, len(s), dtype=torch.float64) if n == layer else s}
    return {"method": f"l1-ramp-{layer}", "layers": out}


def unit_costs(model, x, kind):
    """The largest cost one unit of any group carries at the dense widths (what 'within one unit' means)."""
    groups = prunable_groups(model, x)
    costs = CostModel(model, x, groups)
    full = [g["units"] for g in groups]
    return max(costs.removed(kind, full[:i] + [full[i] - 1] + full[i + 1:]) for i in range(len(groups)))


@pytest.mark.parametrize("kind", ["macs", "params"])
@pytest.mark.parametrize("name,in_shape,options", ARCHS, ids=IDS)
def test_methods_with_different_allocations_reach_the_same_cost(name, in_shape, options, kind):
    model, a = make(name, in_shape, options)
    x = torch.randn(4, *in_shape)
    dense = count_macs(model, in_shape) if kind == "macs" else count_params(model)
    one_unit = unit_costs(model, x, kind)
    achieved, splits = [], []
    magnitude = score_model(model, None, "magnitude")
    kept = prune_model(model, a, magnitude, "structured", 0.6, prune={"target": kind}, example_input=x)[3]["layer_kept"]
    spared = max((g["members"][0] for g in prunable_groups(model, x)), key=lambda n: kept[n])  # magnitude's least cut
    for scores in (magnitude, score_model(model, None, "random", {"seed": 3}), favouring(model, spared)):
        pruned, _, _, info = prune_model(model, a, scores, "structured", 0.6, prune={"target": kind},
                                         example_input=x)
        cost = count_macs(pruned, in_shape) if kind == "macs" else count_params(pruned)
        assert abs((dense - cost) - 0.6 * dense) <= one_unit, (scores["method"], dense - cost, 0.6 * dense)
        assert info["cost_removed"] == pytest.approx(1 - cost / dense)
        assert info["prune_target"] == kind
        achieved.append(1 - cost / dense)
        splits.append(tuple(round(v, 3) for v in info["layer_kept"].values()))
    assert len(set(splits)) == 3, "the three scorings were meant to allocate differently"
    assert max(achieved) - min(achieved) <= 2 * one_unit / dense


def test_units_target_is_todays_meaning_and_round_to_is_kept():
    model, a = make("lenet5", (1, 28, 28), {"batchnorm": True})
    x = torch.randn(4, 1, 28, 28)
    scores = score_model(model, None, "magnitude")
    _, _, _, units = prune_model(model, a, scores, "structured", 0.5, example_input=x)
    assert units["prune_target"] == "units" and units["cost_removed"] == pytest.approx(units["ratio_achieved"])
    pruned, _, _, info = prune_model(model, a, scores, "structured", 0.5, prune={"target": "macs", "round_to": 4},
                                     example_input=x)
    widths = [m.weight.shape[0] for n, m in prunable_layers(pruned) if n != classifier_name(pruned)]
    dense = dict(prunable_layers(model))
    assert all(w % 4 == 0 or w == dense[n].weight.shape[0]
               for w, n in zip(widths, [n for n, _ in prunable_layers(model) if n != classifier_name(model)]))
    assert abs(info["cost_removed"] - 0.5) < 0.05


def test_unreachable_or_layerwise_cost_targets_are_refused_in_one_line():
    model, a = make("mlp", (1, 28, 28), {"hidden": [300, 100]})
    x = torch.randn(2, 1, 28, 28)
    scores = score_model(model, None, "magnitude")
    with pytest.raises(ValueError, match=r"prune.target macs: removing 0.999 more .* cannot be reached"):
        prune_model(model, a, scores, "structured", 0.999, prune={"target": "macs"}, example_input=x)
    with pytest.raises(ValueError, match="needs prune.scope global"):
        prune_model(model, a, scores, "structured", 0.5, prune={"target": "params", "scope": "layerwise"},
                    example_input=x)


def test_iterative_rounds_reach_the_cost_target(data):
    a = {"name": "cnn", "options": {"widths": [8, 16, 16]}, "in_shape": [1, 8, 8], "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(a).eval()
    pruned, _, _, info = prune_model(model, a, score_model(model, None, "magnitude"), "structured", 0.5, data,
                                     {"target": "macs", "schedule": "iterative", "iterative_steps": 2}, "cpu", 0,
                                     rescore=lambda m: score_model(m, None, "magnitude"),
                                     finetune={"epochs": 2, "batch_size": 32})
    assert info["rounds"] == 2
    assert abs(info["cost_removed"] - 0.5) <= unit_costs(model, torch.randn(2, 1, 8, 8), "macs") / \
        count_macs(model, (1, 8, 8))
    assert isinstance(pruned, nn.Module)


def test_l2_scale_empties_a_wide_cheap_layer_first_and_mean_does_not():
    """The documented reason for prune.normalize: LeNet-5's fc1 (500 units of 810 MACs each) gets L2-normalised scores
    of order 1/sqrt(500), so a MACs target takes all but min_keep_units of it before any conv channel; scaled by
    each layer's mean, magnitude reaches the same MACs with fc1 intact."""
    model, a = make("lenet5", (1, 28, 28), {"batchnorm": True})
    x = torch.randn(4, 1, 28, 28)
    kept = {}
    for rule in ("l2", "mean"):
        _, _, _, info = prune_model(model, a, score_model(model, None, "magnitude"), "structured", 0.25,
                                    prune={"target": "macs", "normalize": rule}, example_input=x)
        kept[rule] = info["layer_kept"]
        assert abs(info["cost_removed"] - 0.25) < 0.02 and info["normalize"] == rule
    assert kept["l2"]["fc1"] == 1 / 500 and kept["mean"]["fc1"] == 1.0
