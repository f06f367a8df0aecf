"""collect_statistics against brute-force references (per-sample, per-weight loops in float64)."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from prunelab.io import CorruptFileError
from prunelab.methods import required_statistics
from prunelab.models import build_model
from prunelab.stats import (CONTRIBUTION_EPS, STAT_NAMES, activation_sources, collect_statistics, load_statistics,
                            save_statistics)


def small_convnet(stride=2) -> nn.Sequential:
    """conv(pad 1, stride) → BN → ReLU → conv → ReLU → flatten → Linear, float64."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 4, 3, stride=stride, padding=1)), ("bn1", nn.BatchNorm2d(4)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 3, 2)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(3 * 2 * 2 if stride == 2 else 3 * 4 * 4, 3)),
    ])).double()
    net.bn1.running_mean.uniform_(-0.2, 0.2)
    net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


def data(n=11, shape=(2, 5, 5), k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64), torch.arange(n) % k


# --------------------------------------------------------------------------- brute-force references
def brute_contribution(layer: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and σ of r per weight: explicit loops over samples, output units, positions and weights."""
    w = layer.weight.detach().double()
    a = a.double()
    rs = []                                    # one weight-shaped tensor of r per (sample, position)
    if isinstance(layer, nn.Linear):
        for x in a:
            r = torch.zeros_like(w)
            for j in range(w.shape[0]):
                c = [abs(float(w[j, i] * x[i])) for i in range(w.shape[1])]
                for i in range(w.shape[1]):
                    r[j, i] = c[i] / (sum(c) + CONTRIBUTION_EPS)
            rs.append(r)
    else:
        (sh, sw), (ph, pw), k = layer.stride, layer.padding, w.shape[2:]
        padded = nn.functional.pad(a, (pw, pw, ph, ph))
        ho = (padded.shape[2] - k[0]) // sh + 1
        wo = (padded.shape[3] - k[1]) // sw + 1
        for x in padded:
            for p in range(ho):
                for q in range(wo):
                    field = x[:, p * sh:p * sh + k[0], q * sw:q * sw + k[1]]
                    r = torch.zeros_like(w)
                    for j in range(w.shape[0]):
                        c = (w[j] * field).abs()
                        r[j] = c / (c.sum() + CONTRIBUTION_EPS)
                    rs.append(r)
    rs = torch.stack(rs)
    return rs.mean(0), rs.std(0, unbiased=False)


def layer_io(model, x):
    """Inputs and outputs of every module, by name, for one forward."""
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (i[0], o)))
             for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("stride", [1, 2])
def test_contribution_moments_match_brute_force_loops(stride):
    model = small_convnet(stride)
    x, y = data()
    stats = collect_statistics(model, x, y, {"contribution_mean", "contribution_sq"}, 3, 4, "cpu")
    io = layer_io(model, x)
    for name in ("conv1", "conv2", "fc"):
        mu, sigma = brute_contribution(getattr(model, name), io[name][0])
        entry = stats["layers"][name]
        n_terms = entry["contrib_positions"]
        mean = entry["contrib_r_sum"] / n_terms
        std = (entry["contrib_r2_sum"] / n_terms - mean ** 2).clamp(min=0).sqrt()
        torch.testing.assert_close(mean, mu, rtol=0, atol=1e-10)
        torch.testing.assert_close(std, sigma, rtol=0, atol=1e-6)


def test_contribution_float32_model_within_1e6():
    model = small_convnet(2).float()
    x, y = data()
    stats = collect_statistics(model, x.float(), y, {"contribution_mean", "contribution_sq"}, 3, 5, "cpu")
    io = layer_io(model, x.float())
    mu, sigma = brute_contribution(model.conv1, io["conv1"][0])
    entry = stats["layers"]["conv1"]
    mean = entry["contrib_r_sum"] / entry["contrib_positions"]
    torch.testing.assert_close(mean, mu, rtol=0, atol=1e-6)
    std = (entry["contrib_r2_sum"] / entry["contrib_positions"] - mean ** 2).clamp(min=0).sqrt()
    torch.testing.assert_close(std, sigma, rtol=0, atol=1e-5)


def test_activation_moments_per_class_after_bn_and_relu():
    model = small_convnet(2)
    x, y = data()
    stats = collect_statistics(model, x, y, {"activations", "input_activations"}, 3, 4, "cpu")
    io = layer_io(model, x)
    refs = {"conv1": ("relu1", "conv1"), "conv2": ("relu2", "conv2"), "fc": ("fc", "fc")}
    for name, (source, layer) in refs.items():
        entry = stats["layers"][name]
        assert entry["act_source"] == source
        out = io[source][1]
        inp = io[layer][0]
        z = out.mean((2, 3)) if out.dim() == 4 else out
        zi = inp.mean((2, 3)) if inp.dim() == 4 else inp
        for k in range(3):
            torch.testing.assert_close(entry["act_sum"][k], z[y == k].sum(0), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(entry["act_sqsum"][k], (z[y == k] ** 2).sum(0), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(entry["in_sum"][k], zi[y == k].sum(0), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(entry["in_sqsum"][k], (zi[y == k] ** 2).sum(0), rtol=1e-12, atol=1e-12)
        assert entry["count"].tolist() == [4.0, 4.0, 3.0]
    # the first layer's input units are the image channels
    assert stats["layers"]["conv1"]["in_sum"].shape == (3, 2)


def test_activation_sources_in_the_model_zoo():
    def sources(name, shape):
        m = build_model({"name": name, "options": {}, "in_shape": shape, "num_classes": 4}).eval()
        from prunelab.models import prunable_layers
        return {n: s for n, (s, _) in activation_sources(m, torch.randn(2, *shape), prunable_layers(m)).items()}

    assert sources("mlp", [1, 4, 4]) == {"fc1": "relu1", "fc2": "relu2", "fc3": "fc3"}
    assert sources("cnn", [1, 8, 8]) == {"conv1": "relu1", "conv2": "relu2", "conv3": "relu3", "fc": "fc"}
    res = sources("resnet20", [3, 8, 8])
    assert res["conv1"] == "relu1" and res["layer1.0.conv1"] == "layer1.0.relu1"
    assert res["layer1.0.conv2"] == "layer1.0.bn2"          # its BN output goes to the residual add
    assert res["fc"] == "fc"


def test_inplace_relu_is_followed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.arange(6) % 2
    stats = collect_statistics(model, x, y, {"activations"}, 2, 6, "cpu")
    assert stats["layers"]["0"]["act_source"] == "1"
    z = torch.relu(model[0](x)).detach()
    torch.testing.assert_close(stats["layers"]["0"]["act_sum"][1], z[y == 1].sum(0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_statistics_identical_in_one_batch_or_many(dtype):
    model = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6],
                         "num_classes": 3}).to(dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    x, y = data(n=13, shape=(1, 6, 6))
    x = x.to(dtype)
    needs = set(STAT_NAMES) - {"relevance"}
    one = collect_statistics(model, x, y, needs, 3, 13, "cpu")
    many = collect_statistics(model, x, y, needs, 3, 4, "cpu")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, entry in one["layers"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                assert value.dtype == torch.float64
                torch.testing.assert_close(many["layers"][name][key], value, rtol=tol, atol=tol)
            else:
                assert many["layers"][name][key] == value


def test_only_declared_statistics_are_computed():
    model = small_convnet(2)
    x, y = data()
    keys = {"activations": {"act_sum", "act_sqsum"}, "input_activations": {"in_sum", "in_sqsum"},
            "contribution_mean": {"contrib_r_sum", "contrib_positions"},
            "contribution_sq": {"contrib_r2_sum", "contrib_positions"},
            "taylor": {"grad_sum", "taylor_unit_sq_sum"}, "relevance": {"relevance_sum"}}
    base = {"type", "weight_shape", "count"}
    for need, expect in keys.items():
        stats = collect_statistics(model, x, y, {need}, 3, 4, "cpu")
        extra = set() if need == "relevance" else {"act_source"}
        for entry in stats["layers"].values():
            assert set(entry) == base | extra | expect, need
        assert ("class_acc" in stats) == (need == "relevance")
        assert stats["needs"] == [need]
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    stats = collect_statistics(model, x, y, set(), 3, 4, "cpu")
    assert calls == [] and stats["class_count"].tolist() == [4.0, 4.0, 3.0]


def test_relevance_sums_and_class_accuracy():
    from prunelab.stats.lrp import unit_relevance

    model = small_convnet(2)
    x, y = data()
    stats = collect_statistics(model, x, y, {"relevance"}, 3, 4, "cpu")
    rel = unit_relevance(model, x, y)
    pred = model(x).argmax(1)
    for k in range(3):
        assert stats["class_acc"][k] == pytest.approx(float((pred[y == k] == k).double().mean()))
        for name in ("conv1", "conv2", "fc"):
            torch.testing.assert_close(stats["layers"][name]["relevance_sum"][k], rel[name][y == k].sum(0).double())


def test_model_mode_restored_and_taylor_leaves_no_grad():
    model = small_convnet(2).train()
    model.fc.weight.requires_grad_(False)                # frozen: taylor still differentiates w.r.t. it
    x, y = data()
    stats = collect_statistics(model, x, y, {"taylor", "activations"}, 3, 4, "cpu")
    assert stats["layers"]["fc"]["grad_sum"].abs().sum() > 0
    assert model.training and model.bn1.training
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_required_statistics_union_and_kappa():
    assert required_statistics(["random", "magnitude"]) == set()
    assert required_statistics(["screening", "taylor"]) == {"activations", "input_activations", "taylor"}
    assert required_statistics(["contribution"]) == {"contribution_mean", "contribution_sq"}
    assert required_statistics(["contribution"], {"contribution": {"kappa": 0.0}}) == {"contribution_mean"}
    assert required_statistics(["contribution"], {"contribution": {"kappa": 1.0}}) == {"contribution_mean",
                                                                                       "contribution_sq"}
    with pytest.raises(ValueError, match="valid methods"):
        required_statistics(["nope"])


def test_bad_inputs_fail_early():
    model = small_convnet(2)
    x, y = data()
    with pytest.raises(ValueError, match="unknown statistics.*valid statistic names"):
        collect_statistics(model, x, y, {"gradients"}, 3, 4, "cpu")
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 2\)"):
        collect_statistics(model, x, y, {"activations"}, 2, 4, "cpu")
    with pytest.raises(ValueError, match="1-D integer tensor of 11 labels"):
        collect_statistics(model, x, y[:5], {"activations"}, 3, 4, "cpu")
    with pytest.raises(ValueError, match="batch_size"):
        collect_statistics(model, x, y, {"activations"}, 3, 0, "cpu")
    with pytest.raises(ValueError, match="x_float"):
        collect_statistics(model, x.long(), y, {"activations"}, 3, 4, "cpu")


def test_save_load_roundtrip_and_corrupt_file(tmp_path):
    model = small_convnet(2)
    x, y = data()
    stats = collect_statistics(model, x, y, {"activations", "contribution_mean"}, 3, 4, "cpu")
    path = tmp_path / "stats.pt"
    save_statistics(stats, path)
    back = load_statistics(path)
    assert back["needs"] == stats["needs"]
    torch.testing.assert_close(back["layers"]["fc"]["act_sum"], stats["layers"]["fc"]["act_sum"])
    assert [p.name for p in tmp_path.iterdir()] == ["stats.pt"]          # no temporary file left
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"stats\.pt is truncated.*regenerate it with: snakemake --cores all "
                                                r"--forcerun collect_stats"):
        load_statistics(path)
    with pytest.raises(CorruptFileError, match="missing.pt does not exist.*forcerun collect_stats"):
        load_statistics(tmp_path / "missing.pt")
