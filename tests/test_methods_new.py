"""wanda, lamp, fpgm, bn_scale, hrank and obd against independent references: brute-force loops, numpy.linalg,
scipy's minimiser, per-sample autograd and Torch-Pruning's importance classes; a zero channel scores lowest
under every structured criterion; inapplicable architectures are named."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch_pruning as tp
from scipy.optimize import minimize
from torch import nn

import prunelab.stats.extra as stats_extra
from prunelab.methods import METHODS, inapplicable_reason, required_statistics, score_model
from prunelab.methods.fpgm import geometric_median
from prunelab.methods.lamp import lamp_layer
from prunelab.models import build_model
from prunelab.stats import collect_statistics


def convnet() -> nn.Sequential:
    """conv(stride 2, pad 1) → BN → ReLU → conv(no pad) → ReLU → flatten → Linear → ReLU → Linear, float64."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 5, 3, stride=2, padding=1)), ("bn1", nn.BatchNorm2d(5)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(5, 4, 2)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(4 * 3 * 3, 6)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(6, 3))])).double()
    net.bn1.running_mean.uniform_(-0.2, 0.2)
    net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


def data(n=9, shape=(2, 7, 7), k=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64), torch.arange(n) % k


def layer_io(net, x):
    """{layer: (its input, its unit activation)} of one forward, by hand."""
    h1 = net.relu1(net.bn1(net.conv1(x)))
    h2 = net.relu2(net.conv2(h1))
    f = net.flatten(h2)
    h3 = net.relu3(net.fc1(f))
    return {"conv1": (x, h1), "conv2": (h1, h2), "fc1": (f, h3), "fc2": (h3, net.fc2(h3))}


# ------------------------------------------------------------------------------------------------- wanda
def test_wanda_is_weight_times_input_norm_by_loops():
    net, (x, y) = convnet(), data()
    scores = score_model(net, collect_statistics(net, x, y, {"input_sqnorm"}, 3, 4, "cpu"), "wanda")["layers"]
    with torch.no_grad():
        io = layer_io(net, x)
    for name, (a, _) in io.items():
        w = getattr(net, name).weight.detach()
        norm = torch.zeros(a.shape[1], dtype=torch.float64)
        for sample in a:                                   # Σ over samples and positions
            for i in range(a.shape[1]):
                for v in sample[i].reshape(-1, 1):
                    norm[i] += float(v @ v)
        norm = norm.sqrt()
        expect = torch.empty_like(w)
        for idx in np.ndindex(*w.shape):
            expect[idx] = abs(w[idx]) * norm[idx[1]]
        torch.testing.assert_close(scores[name]["unstructured"], expect, rtol=1e-12, atol=0)
        assert scores[name]["structured"] is None


# ------------------------------------------------------------------------------------------------- lamp
def lamp_brute(w: torch.Tensor) -> torch.Tensor:
    flat = w.flatten().double()
    out = torch.zeros_like(flat)
    for u in range(len(flat)):
        den = sum(float(v) ** 2 for v in flat if abs(v) >= abs(flat[u]))
        out[u] = flat[u] ** 2 / den if den > 0 else 0.0
    return out.reshape(w.shape)


def test_lamp_matches_brute_force_with_ties_and_zeros_and_torch_pruning():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(lamp_layer(w), lamp_brute(w), rtol=1e-12, atol=0)
    tied = torch.tensor([[0.5, -0.5, 0.0, 1.0], [0.0, 0.25, -1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(lamp_layer(tied), lamp_brute(tied), rtol=1e-12, atol=0)
    assert lamp_layer(torch.zeros(3, 2)).eq(0).all()
    ref = tp.importance.LAMPImportance()._lamp(w.flatten().square().float()).double()   # no ties: same order
    torch.testing.assert_close(lamp_layer(w).flatten(), ref, rtol=1e-5, atol=0)
    net = convnet()
    s = score_model(net, None, "lamp")["layers"]["conv2"]["unstructured"]
    torch.testing.assert_close(s, lamp_brute(net.conv2.weight.detach()), rtol=1e-12, atol=0)
    assert s.max() == 1.0


# ------------------------------------------------------------------------------------------------- fpgm
def gm_objective(y, p):
    return np.linalg.norm(p - y, axis=1).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_geometric_median_minimises_the_summed_distance(seed):
    p = np.random.default_rng(seed).normal(size=(9, 5))
    gm = geometric_median(torch.from_numpy(p)).numpy()
    ref = minimize(gm_objective, p.mean(0), args=(p,), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000})
    assert gm_objective(gm, p) <= ref.fun + 1e-9
    np.testing.assert_allclose(gm, ref.x, atol=1e-4)
    for _ in range(20):                                    # no nearby point is better
        assert gm_objective(gm + 1e-4 * np.random.default_rng(_).normal(size=5), p) > gm_objective(gm, p)


def test_geometric_median_at_a_data_point():
    p = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [3.0, 0.2]])  # the origin wins
    gm = geometric_median(torch.from_numpy(p)).numpy()
    assert gm_objective(gm, p) <= gm_objective(np.zeros(2), p) + 1e-12
    np.testing.assert_allclose(gm, [0.0, 0.0], atol=1e-9)


def test_fpgm_scores_distance_to_median_and_sum_mode_equals_torch_pruning():
    net = convnet()
    w = net.conv2.weight.detach()
    s = score_model(net, None, "fpgm")["layers"]
    f = w.flatten(1).numpy()
    gm = minimize(gm_objective, f.mean(0), args=(f,), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14}).x
    np.testing.assert_allclose(s["conv2"]["structured"].numpy(), np.linalg.norm(f - gm, axis=1), atol=1e-4)
    assert s["conv2"]["unstructured"] is None
    with torch.no_grad():                                  # TP measures |w|^p: equal to the paper for w ≥ 0
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
    summed = score_model(net, None, "fpgm", {"center": "sum"})["layers"]
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 2, 7, 7, dtype=torch.float64))
    imp = tp.importance.FPGMImportance(p=1, group_reduction="first", normalizer=None)
    for name in ("conv1", "conv2", "fc1"):
        layer = getattr(net, name)
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        group = dg.get_pruning_group(layer, fn, list(range(layer.weight.shape[0])))
        torch.testing.assert_close(summed[name]["structured"], imp(group).double(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"methods\.fpgm\.center: 'mean' is not one of \['median', 'sum'\]"):
        score_model(net, None, "fpgm", {"center": "mean"})


# ------------------------------------------------------------------------------------------------- bn_scale
def test_bn_scale_equals_torch_pruning_and_refuses_layers_without_batchnorm():
    model = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6], "num_classes": 3})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
    s = score_model(model, None, "bn_scale")["layers"]
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 6, 6))
    imp = tp.importance.BNScaleImportance(normalizer=None)
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        layer = getattr(model, conv)
        group = dg.get_pruning_group(layer, tp.prune_conv_out_channels, list(range(layer.out_channels)))
        torch.testing.assert_close(s[conv]["structured"], imp(group).double())
        torch.testing.assert_close(s[conv]["structured"], getattr(model, bn).weight.detach().double().abs())
    assert s["fc"]["structured"] is None                   # the classifier: never structurally pruned
    assert inapplicable_reason("bn_scale", model) is None
    mlp = build_model({"name": "mlp", "options": {"hidden": [8]}, "in_shape": [1, 4, 4], "num_classes": 3})
    reason = inapplicable_reason("bn_scale", mlp)
    assert "layer 'fc1'" in reason and "BatchNorm" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="layer 'fc1' of Sequential has none"):
        score_model(mlp, None, "bn_scale")


# ------------------------------------------------------------------------------------------------- hrank
def test_hrank_mean_rank_equals_numpy_matrix_rank_per_map():
    net, (x, y) = convnet(), data()
    with torch.no_grad():
        net.conv1.bias[1] = -50.0                          # channel 1 dead after ReLU: rank 0
        net.conv2.weight[2] = 0.0                          # constant map relu(b): rank 1 or 0
    stats = collect_statistics(net, x, y, {"feature_rank"}, 3, 4, "cpu")
    s = score_model(net, stats, "hrank")["layers"]
    with torch.no_grad():
        io = layer_io(net, x)
    for name, (_, act) in io.items():
        a = act.numpy()
        if a.ndim == 2:
            a = a[:, :, None, None]
        expect = [np.mean([np.linalg.matrix_rank(a[i, u]) for i in range(len(a))]) for u in range(a.shape[1])]
        np.testing.assert_allclose(s[name]["structured"].numpy(), expect, rtol=0, atol=1e-12)
    assert s["conv1"]["structured"][1] == 0 and s["conv1"]["structured"].max() > 1
    mlp = build_model({"name": "mlp", "options": {"hidden": [8]}, "in_shape": [1, 4, 4], "num_classes": 3})
    assert "no Conv2d" in inapplicable_reason("hrank", mlp)


# ------------------------------------------------------------------------------------------------- obd
def fisher_by_hand(net, x, y, names):
    params = [getattr(net, n).weight for n in names]
    fisher = [torch.zeros_like(p) for p in params]
    for xi, yi in zip(x, y):                              # one sample at a time, plain autograd
        loss = nn.functional.cross_entropy(net(xi[None]), yi[None])
        for f, g in zip(fisher, torch.autograd.grad(loss, params)):
            f += g.square()
    return {n: f.detach() / len(x) for n, f in zip(names, fisher)}


@pytest.mark.parametrize("chunk,shifted", [(1 << 24, 8), (50, 8), (1 << 24, 1)])   # im2col: one chunk, one sample
def test_obd_is_half_fisher_times_squared_weight_by_per_sample_autograd(monkeypatch, chunk, shifted):
    monkeypatch.setattr(stats_extra, "CHUNK_ELEMENTS", chunk)      # shifted=1: both convs (stride 2, 1) by views
    monkeypatch.setattr(stats_extra, "SHIFTED_MIN_CHANNELS", shifted)
    net, (x, y) = convnet(), data()
    names = ["conv1", "conv2", "fc1", "fc2"]
    s = score_model(net, collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu"), "obd")["layers"]
    fisher = fisher_by_hand(net, x, y, names)
    for n in names:
        expect = 0.5 * fisher[n] * getattr(net, n).weight.detach().square()
        torch.testing.assert_close(s[n]["unstructured"], expect, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(s[n]["structured"], expect.flatten(1).sum(1), rtol=1e-10, atol=1e-14)


def test_obd_structured_ranks_like_torch_pruning_hessian_importance():
    net, (x, y) = convnet(), data()
    s = score_model(net, collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu"), "obd")["layers"]
    names = ["conv1", "conv2", "fc1"]
    fisher = fisher_by_hand(net, x, y, names)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=x[:1])
    imp = tp.importance.HessianImportance(group_reduction="first", normalizer=None)
    for name in names:
        # TP 1.6.0's accumulate_grad keeps only the last sample's g² (it keys its dicts by parameter but tests
        # membership by name), so its accumulator is filled with the per-sample sums it means to hold
        layer = getattr(net, name)
        layer.weight.grad = torch.zeros_like(layer.weight)
        imp._accu_grad, imp._counter = {layer.weight: fisher[name] * len(x)}, {layer.weight: len(x)}
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        ref = imp(dg.get_pruning_group(layer, fn, list(range(layer.weight.shape[0])))).double()
        torch.testing.assert_close(2 * s[name]["structured"], ref, rtol=1e-5, atol=1e-9)   # TP: no ½


def test_fisher_refuses_an_output_changed_in_place():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"fisher: the outputs of layers \['0'\] are modified in place"):
        collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu")


# ------------------------------------------------------------------------------------------------- all
def zeroed_models():
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
    for model, layer, unit, x, y in zeroed_models():
        if inapplicable_reason(method, model) is not None:
            continue
        stats = collect_statistics(model, x, y, required_statistics([method]), 3, 16, "cpu")
        s = score_model(model, stats, method)["layers"][layer]["structured"]
        others = torch.cat([s[:unit], s[unit + 1:]])
        assert s[unit] < others.min(), (method, layer, s)
        checked += 1
    assert checked >= 1


def test_new_statistics_only_when_declared():
    net, (x, y) = convnet(), data()
    keys = {"input_sqnorm": "input_sqnorm", "feature_rank": "rank_sum", "fisher": "fisher_sum"}
    for need, key in keys.items():
        entry = collect_statistics(net, x, y, {need}, 3, 4, "cpu")["layers"]["conv2"]
        assert key in entry and not (set(keys.values()) - {key}) & set(entry)
    assert required_statistics(["wanda", "lamp", "fpgm", "bn_scale", "hrank", "obd"]) == set(keys)


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


def test_fisher_sharing_taylors_backward_gives_the_same_sums():
    from prunelab.stats import STAT_NAMES

    net, (x, y) = convnet(), data()                        # fc2 is its own activation source: one tensor, twice
    alone = collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu")["layers"]
    taylor = collect_statistics(net, x, y, {"taylor"}, 3, 4, "cpu")["layers"]
    both = collect_statistics(net, x, y, set(STAT_NAMES), 3, 4, "cpu")["layers"]
    for name, entry in both.items():
        torch.testing.assert_close(entry["fisher_sum"], alone[name]["fisher_sum"], rtol=1e-12, atol=0)
        for key in ("grad_sum", "taylor_unit_sq_sum"):
            torch.testing.assert_close(entry[key], taylor[name][key], rtol=1e-12, atol=1e-15)
