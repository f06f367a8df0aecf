"""Hardware-aligned structured widths (`round_to`): kept units per group rounded up to a multiple, best-scored
units restored, the achieved ratio reported honestly; plus the iterative structured schedule's rescore rule."""

import copy
import math

import jsonschema
import pytest
import torch
import yaml

from conftest import REPO, TINY
from prunelab.methods import score_model
from prunelab.models import build_model, prunable_layers
from prunelab.pruning.selection import select_structured
from prunelab.pruning.stage import prune_model

CPU = torch.device("cpu")


def arch(name, in_shape, **options):
    return {"name": name, "options": options, "in_shape": list(in_shape), "num_classes": 10}


def model_of(a, seed=0):
    torch.manual_seed(seed)
    return build_model(a).eval()


def random_scores(model, seed=0):
    """Distinct random structured scores (ties would make the top-k reference ambiguous)."""
    g = torch.Generator().manual_seed(seed)
    return {"method": "random", "config": {}, "layers": {
        n: {"unstructured": None, "structured": torch.rand(m.weight.shape[0], generator=g, dtype=torch.float64)}
        for n, m in prunable_layers(model)}}


def ceil_to(k, multiple, cap):
    return min(cap, math.ceil(k / multiple) * multiple)


def top_kept(score, n_kept):
    """Reference: the n_kept highest-scored units are kept; returns the sorted indices of the others."""
    return torch.sort(torch.argsort(score, descending=True)[n_kept:]).values


def removed_fraction(model, remove):
    units = {n: m.weight.shape[0] for n, m in prunable_layers(model) if n in remove}
    return sum(len(remove[n]) for n in units) / sum(units.values())


# ------------------------------------------------------------------------------------------------ selection
def test_layerwise_keeps_the_top_scored_multiple_of_round_to():
    model = model_of(arch("mlp", (1, 8, 8), hidden=[30, 13, 6, 3]))
    scores = random_scores(model)
    ratio = 0.5
    remove = select_structured(model, scores, ratio, prune={"scope": "layerwise", "round_to": 4})
    assert set(remove) == {"fc1", "fc2", "fc3", "fc4"}  # the classifier fc5 is never pruned
    for n, units in (("fc1", 30), ("fc2", 13), ("fc3", 6), ("fc4", 3)):
        kept_unrounded = units - math.floor(ratio * units + 0.5)
        n_kept = ceil_to(kept_unrounded, 4, units)
        assert units - len(remove[n]) == n_kept and (n_kept % 4 == 0 or n_kept == units), n
        assert torch.equal(remove[n], top_kept(scores["layers"][n]["structured"], n_kept)), n
    assert len(remove["fc4"]) == 0  # 3 units < round_to: all kept
    assert [30 - len(remove["fc1"]), 13 - len(remove["fc2"]), 6 - len(remove["fc3"])] == [16, 8, 4]
    assert removed_fraction(model, remove) <= ratio


@pytest.mark.parametrize("ratio", [0.3, 0.55, 0.8])
def test_global_rounding_only_restores_the_best_removed_units(ratio):
    model = model_of(arch("mlp", (1, 8, 8), hidden=[40, 27, 12]))
    scores = random_scores(model, seed=1)
    plain = select_structured(model, scores, ratio)
    unrounded = select_structured(model, scores, ratio, prune={"round_to": 1})
    assert all(torch.equal(plain[n], v) for n, v in unrounded.items())
    rounded = select_structured(model, scores, ratio, prune={"round_to": 8})
    for n, m in prunable_layers(model):
        if n not in plain:
            continue
        units = m.weight.shape[0]
        n_kept = ceil_to(units - len(plain[n]), 8, units)
        assert units - len(rounded[n]) == n_kept and (n_kept % 8 == 0 or n_kept == units), n
        assert torch.equal(rounded[n], top_kept(scores["layers"][n]["structured"], n_kept)), n
        assert set(rounded[n].tolist()) <= set(plain[n].tolist()), n
    assert sum(len(v) for v in plain.values()) == math.floor(ratio * 79 + 0.5)  # 40 + 27 + 12 prunable units
    assert removed_fraction(model, rounded) <= removed_fraction(model, plain)
    assert removed_fraction(model, rounded) < removed_fraction(model, plain)  # rounding did something here


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_groups_smaller_than_round_to_keep_every_unit(scope):
    model = model_of(arch("mlp", (1, 8, 8), hidden=[12, 5]))
    remove = select_structured(model, random_scores(model), 0.7, prune={"scope": scope, "round_to": 16})
    assert {n: len(v) for n, v in remove.items()} == {"fc1": 0, "fc2": 0}


def test_coupled_groups_round_on_their_mean_score():
    model = model_of(arch("resnet20", (3, 16, 16), shortcut="B"))
    x = torch.randn(1, 3, 16, 16)
    scores = random_scores(model, seed=2)
    stream = ("layer2.0.conv2", "layer2.0.shortcut.conv", "layer2.1.conv2", "layer2.2.conv2")  # 32 channels
    remove = select_structured(model, scores, 0.3, {"scope": "layerwise", "round_to": 8}, residual="all",
                               example_input=x)
    s = scores["layers"]
    mean = torch.stack([s[n]["structured"] / s[n]["structured"].norm() for n in stream]).mean(0)
    want = top_kept(mean, ceil_to(32 - math.floor(0.3 * 32 + 0.5), 8, 32))  # 22 kept -> 24
    assert len(want) == 8
    for n in stream:
        assert torch.equal(remove[n], want), n
    for n, m in prunable_layers(model):
        if n in remove:
            assert (m.weight.shape[0] - len(remove[n])) % 8 == 0, n


# ------------------------------------------------------------------------------------------ physical removal
def test_pruned_resnet20_widths_are_multiples_of_8():
    a = arch("resnet20", (3, 32, 32), shortcut="A")
    model = model_of(a)
    x = torch.randn(4, 3, 32, 32)
    scores = random_scores(model, seed=3)
    # 0.6 layerwise would keep 6 / 13 / 26 of the inner convs' 16 / 32 / 64 channels; rounded: 8 / 16 / 32
    pruned, new_arch, _, info = prune_model(model, a, scores, "structured", 0.6, prune={"scope": "layerwise", "round_to": 8},
                                            example_input=x)
    dense = dict(prunable_layers(model))
    inner = [n for n in dense if n.startswith("layer") and n.endswith(".conv1")]
    widths = {n: m.weight.shape[0] for n, m in prunable_layers(pruned)}
    assert {n: widths[n] for n in inner} == {n: dense[n].weight.shape[0] // 2 for n in inner}
    for n in inner:
        assert info["removed"][n] == top_kept(scores["layers"][n]["structured"], widths[n]).tolist(), n
    assert info["round_to"] == 8 and info["ratio_requested"] == 0.6 and info["ratio_achieved"] == 0.5
    assert info["max_logit_diff"] <= 1e-4 * 10  # prune_model checked it against the masked dense model
    fresh = build_model(new_arch).eval()
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), pruned.eval()(x))


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8", None])
def test_bad_round_to_is_refused_up_front(bad, data):
    a = arch("cnn", (1, 8, 8), widths=[8, 8])
    model = model_of(a)
    scores = random_scores(model)
    with pytest.raises(ValueError, match=r"prune\.round_to: "):  # the schema's check, named
        select_structured(model, scores, 0.5, prune={"round_to": bad})
    with pytest.raises(ValueError, match="round_to"):
        prune_model(model, a, scores, "structured", 0.5, prune={"round_to": bad}, example_input=torch.randn(2, 1, 8, 8))
    rescored = []
    with pytest.raises(ValueError, match="round_to"):
        prune_model(model, a, scores, "structured", 0.5, data, {"round_to": bad, "schedule": "iterative"}, CPU, 0,
                    rescore=lambda m: rescored.append(m) or random_scores(m))
    assert rescored == []  # nothing pruned, nothing re-scored


# ------------------------------------------------------------------------------------------ iterative rounds
def test_iterative_structured_without_rescore_fails_before_pruning(data):
    a = arch("cnn", (1, 8, 8), widths=[8, 8])
    model = model_of(a)
    state = copy.deepcopy(model.state_dict())
    cfg = {"schedule": "iterative", "iterative_steps": 3}
    with pytest.raises(ValueError, match="iterative structured schedule .* needs a rescore function"):
        prune_model(model, a, random_scores(model), "structured", 0.5, data, cfg, CPU, 0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # one round: nothing to re-score, so no rescore function is needed
    pruned, _, _, info = prune_model(model, a, random_scores(model), "structured", 0.5, data,
                                     {**cfg, "iterative_steps": 1}, CPU, 0)
    assert info["rounds"] == 1 and sum(len(v) for v in info["removed"].values()) == 8


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_iterative_rounds_keep_multiples_and_catch_up(data, scope):
    a = arch("cnn", (1, 8, 8), widths=[16, 16, 16])
    model = model_of(a)
    convs = ("conv1", "conv2", "conv3")
    seen = []

    def rescore(m):  # before rounds 2 and 3: the widths the previous round left
        seen.append({n: mod.weight.shape[0] for n, mod in prunable_layers(m) if n in convs})
        return score_model(m, None, "magnitude")

    cfg = {"schedule": "iterative", "iterative_steps": 3, "scope": scope, "round_to": 4}
    pruned, _, _, info = prune_model(model, a, score_model(model, None, "magnitude"), "structured", 0.7, data, cfg,
                                     CPU, 0, rescore=rescore)
    final = {n: m.weight.shape[0] for n, m in prunable_layers(pruned) if n in convs}
    assert len(seen) == 2 and info["rounds"] == 3 and info["round_to"] == 4
    for widths in seen + [final]:
        assert all(w % 4 == 0 for w in widths.values()), widths
    n0, target = 48, round(0.7 * 48)
    assert info["n_prunable"] == n0 and info["n_removed"] == n0 - sum(final.values())
    assert info["ratio_achieved"] == pytest.approx(info["n_removed"] / n0)
    # rounding keeps at most round_to - 1 extra units per layer; later rounds remove what earlier ones kept
    assert 0 <= target - info["n_removed"] < len(convs) * 4
    assert info["ratio_achieved"] <= 0.7


# --------------------------------------------------------------------------------------------------- config
def schema_errors(prune):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    cfg = yaml.safe_load(TINY.read_text())
    cfg["prune"] = {**cfg.get("prune", {}), **prune}
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(cfg)]


def test_schema_accepts_round_to_and_rejects_bad_values():
    assert schema_errors({"round_to": 8}) == []
    assert any("less than the minimum of 1" in m for m in schema_errors({"round_to": 0}))
    assert any("is not of type 'integer'" in m for m in schema_errors({"round_to": 2.5}))
