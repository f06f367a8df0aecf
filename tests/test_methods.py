"""The method registry and what every criterion owes the pipeline: scores for every zoo model in the file
contract (or a named reason it cannot score one), a zero unit scoring lowest under every structured criterion, plain
errors for unknown methods, options and statistics; the seeded random control."""

import pytest
import torch
from torch import nn

import prunelab.methods as methods
from conftest import mlp_and_data
from prunelab.methods import METHODS, inapplicable_reason, method_names, required_statistics, score_model
from prunelab.models import build_model, prunable_layers
from prunelab.stats import collect_statistics


BUILTIN = ["contribution", "magnitude", "random", "screening", "taylor"]


def zeroed_models():
    """(model, layer, zeroed unit, x, y): a conv channel and an MLP neuron with all-zero incoming weights."""
    torch.manual_seed(3)
    cnn = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6], "num_classes": 3})
    mlp = build_model({"name": "mlp", "options": {"hidden": [8, 5]}, "in_shape": [1, 4, 4], "num_classes": 3})
    with torch.no_grad():
        cnn.conv2.weight[2] = 0.0
        mlp.fc1.weight[5] = 0.0
        mlp.fc1.bias[5] = 0.0
    y = torch.arange(30) % 3
    return [(cnn, "conv2", 2, torch.randn(30, 1, 6, 6), y), (mlp, "fc1", 5, torch.randn(30, 1, 4, 4), y)]


@pytest.mark.parametrize("method", ["magnitude", "screening", "contribution"])
def test_zero_channel_gets_the_lowest_structured_score(method):
    for model, layer, unit, x, y in zeroed_models():
        stats = collect_statistics(model, x, y, required_statistics([method]), 3, 16, "cpu")
        s = score_model(model, stats, method)["layers"][layer]["structured"]
        others = torch.cat([s[:unit], s[unit + 1:]])
        assert s[unit] < others.min(), (method, layer, s)


def zeroed_models_with_bn():
    """(model, layer, unit, x, y): a conv channel and an MLP neuron whose every parameter is zero."""
    torch.manual_seed(3)
    cnn = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6], "num_classes": 3})
    mlp = build_model({"name": "mlp", "options": {"hidden": [8, 5]}, "in_shape": [1, 4, 4], "num_classes": 3})
    with torch.no_grad():
        cnn.conv2.weight[2] = 0.0
        cnn.bn2.weight[2] = cnn.bn2.bias[2] = 0.0
        mlp.fc1.weight[5] = mlp.fc1.bias[5] = 0.0
    y = torch.arange(30) % 3
    return [(cnn, "conv2", 2, torch.randn(30, 1, 6, 6), y), (mlp, "fc1", 5, torch.randn(30, 1, 4, 4), y)]


STRUCTURED = sorted(n for n, spec in METHODS.items() if "structured" in spec.granularities and n != "random")


@pytest.mark.parametrize("method", STRUCTURED)
def test_zero_channel_scores_lowest_under_every_structured_criterion(method):
    checked = 0
    for model, layer, unit, x, y in zeroed_models_with_bn():
        if inapplicable_reason(method, model) is not None:
            continue
        stats = collect_statistics(model, x, y, required_statistics([method]), 3, 16, "cpu")
        s = score_model(model, stats, method)["layers"][layer]["structured"]
        others = torch.cat([s[:unit], s[unit + 1:]])
        assert s[unit] < others.min(), (method, layer, s)
        checked += 1
    assert checked >= 1


def test_random_is_seeded_uniform():
    model = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6], "num_classes": 3})
    a = score_model(model, None, "random", {"seed": 1})["layers"]
    b = score_model(model, None, "random", {"seed": 1})["layers"]
    c = score_model(model, None, "random", {"seed": 2})["layers"]
    for name, entry in a.items():
        for kind in ("unstructured", "structured"):
            assert torch.equal(entry[kind], b[name][kind])
            assert not torch.equal(entry[kind], c[name][kind])
            assert 0 <= entry[kind].min() and entry[kind].max() < 1
    flat = torch.cat([e["unstructured"].flatten() for e in a.values()])
    assert abs(flat.mean().item() - 0.5) < 0.05            # ~U[0, 1): 600+ draws


def test_every_method_scores_zoo_models_in_the_file_contract():
    from prunelab.pruning.selection import validate_scores

    for name, shape in (("mlp", [1, 8, 8]), ("cnn", [1, 8, 8]), ("resnet20", [3, 8, 8])):
        model = build_model({"name": name, "options": {}, "in_shape": shape, "num_classes": 4})
        x, y = torch.randn(16, *shape), torch.arange(16) % 4
        stats = collect_statistics(model, x, y, required_statistics(BUILTIN), 4, 8, "cpu")
        for method in BUILTIN:
            scores = score_model(model, stats, method)
            assert scores["method"] == method and set(scores) == {"method", "config", "layers"}
            assert list(scores["layers"]) == [n for n, _ in prunable_layers(model)]
            validate_scores(model, scores)
            for entry in scores["layers"].values():
                assert entry["unstructured"].dtype == torch.float64


def test_new_methods_score_zoo_models_in_the_file_contract_or_say_why_not():
    from prunelab.pruning.selection import validate_scores

    new = ["wanda", "lamp", "fpgm", "bn_scale", "hrank", "obd"]
    refused = set()
    for arch, shape in (("mlp", [1, 8, 8]), ("cnn", [1, 8, 8]), ("resnet20", [3, 8, 8])):
        model = build_model({"name": arch, "options": {}, "in_shape": shape, "num_classes": 4})
        x, y = torch.randn(16, *shape), torch.arange(16) % 4
        usable = [m for m in new if inapplicable_reason(m, model) is None]
        refused |= {(arch, m) for m in new if m not in usable}
        stats = collect_statistics(model, x, y, required_statistics(usable), 4, 8, "cpu")
        for method in usable:
            scores = score_model(model, stats, method)
            validate_scores(model, scores)
            for entry in scores["layers"].values():
                for kind in ("unstructured", "structured"):
                    assert (entry[kind] is not None) <= (kind in METHODS[method].granularities)
    assert refused == {("mlp", "bn_scale"), ("mlp", "hrank")}


def test_registry_errors_name_the_problem(monkeypatch):
    model, x, y = mlp_and_data()
    assert set(BUILTIN) <= set(method_names())
    with pytest.raises(ValueError, match=r"unknown scoring method 'snip'; valid methods: \[.*'magnitude'"):
        score_model(model, None, "snip")
    with pytest.raises(ValueError, match=r"unknown config keys \['lamda'\]; valid keys: \['allocation', 'lambda'\]"):
        score_model(model, None, "screening", {"lamda": 0.5})
    with pytest.raises(ValueError, match=r"methods\.screening\.lambda: 1\.5 is greater than the maximum of 1"):
        stats = collect_statistics(model, x, y, required_statistics(["screening"]), 4, 8, "cpu")
        score_model(model, stats, "screening", {"lambda": 1.5})
    stats = collect_statistics(model, x, y, {"activations"}, 4, 8, "cpu")
    with pytest.raises(ValueError, match=r"needs statistics \['input_activations'\].*forcerun collect_stats"):
        score_model(model, stats, "screening")
    other, _, _ = mlp_and_data()
    other.fc1 = nn.Linear(6, 7).double()
    other.fc2 = nn.Linear(7, 4).double()
    with pytest.raises(ValueError, match="statistics do not match the model at layer 'fc1'"):
        score_model(other, collect_statistics(model, x, y, {"taylor"}, 4, 8, "cpu"), "taylor")
    monkeypatch.setattr(methods, "prunable_layers", lambda m: [("conv1d", nn.Conv1d(2, 2, 3))])
    with pytest.raises(ValueError, match="method 'magnitude' cannot score layer 'conv1d' of type Conv1d"):
        score_model(model, None, "magnitude")
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("magnitude")(lambda *a: {})
    with pytest.raises(ValueError, match="unknown statistics"):
        methods.register_method("new", needs={"hessian"})
