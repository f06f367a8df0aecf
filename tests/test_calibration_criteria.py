"""Criteria computed from the calibration pass's statistics (taylor, wanda, hrank, obd) and the statistics they add
(input_sqnorm, feature_rank, fisher) against per-sample autograd, brute-force loops, numpy.linalg and
Torch-Pruning's HessianImportance. screening, contribution and frs have their own modules."""

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

import prunelab.stats.extra as stats_extra
from conftest import calibration_batch, convnet, layer_io, mlp_and_data
from prunelab.methods import inapplicable_reason, required_statistics, score_model
from prunelab.models import build_model
from prunelab.stats import collect_statistics


def test_taylor_equals_per_sample_autograd_by_hand():
    model, x, y = mlp_and_data(n=9, k=3)
    stats = collect_statistics(model, x, y, {"taylor"}, 3, 4, "cpu")
    scores = score_model(model, stats, "taylor")["layers"]
    grad1 = torch.zeros_like(model.fc1.weight)
    grad2 = torch.zeros_like(model.fc2.weight)
    unit1 = torch.zeros(5, dtype=torch.float64)
    unit2 = torch.zeros(3, dtype=torch.float64)
    for xi, yi in zip(x, y):                        # one sample at a time, plain autograd
        h = torch.relu(model.fc1(xi[None]))
        logits = model.fc2(h)
        loss = nn.functional.cross_entropy(logits, yi[None])
        g1, g2, gh, gl = torch.autograd.grad(loss, [model.fc1.weight, model.fc2.weight, h, logits])
        grad1 += g1
        grad2 += g2
        unit1 += (h * gh)[0].detach() ** 2
        unit2 += (logits * gl)[0].detach() ** 2
    torch.testing.assert_close(scores["fc1"]["unstructured"], (model.fc1.weight * grad1).abs().detach())
    torch.testing.assert_close(scores["fc2"]["unstructured"], (model.fc2.weight * grad2).abs().detach())
    torch.testing.assert_close(scores["fc1"]["structured"], unit1)
    torch.testing.assert_close(scores["fc2"]["structured"], unit2)


def test_taylor_structured_sums_spatial_positions_before_squaring():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).double()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1])
    scores = score_model(model, collect_statistics(model, x, y, {"taylor"}, 2, 2, "cpu"), "taylor")["layers"]
    expect = torch.zeros(2, dtype=torch.float64)
    for xi, yi in zip(x, y):
        a = model[1](model[0](xi[None]))
        loss = nn.functional.cross_entropy(model[3](model[2](a)), yi[None])
        (ga,) = torch.autograd.grad(loss, [a])
        expect += (a * ga).sum((2, 3))[0].detach() ** 2
    torch.testing.assert_close(scores["0"]["structured"], expect)


def test_wanda_is_weight_times_input_norm_by_loops():
    net, (x, y) = convnet(), calibration_batch()
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


def test_hrank_mean_rank_equals_numpy_matrix_rank_per_map():
    net, (x, y) = convnet(), calibration_batch()
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
    net, (x, y) = convnet(), calibration_batch()
    names = ["conv1", "conv2", "fc1", "fc2"]
    s = score_model(net, collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu"), "obd")["layers"]
    fisher = fisher_by_hand(net, x, y, names)
    for n in names:
        expect = 0.5 * fisher[n] * getattr(net, n).weight.detach().square()
        torch.testing.assert_close(s[n]["unstructured"], expect, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(s[n]["structured"], expect.flatten(1).sum(1), rtol=1e-10, atol=1e-14)


def test_obd_structured_ranks_like_torch_pruning_hessian_importance():
    net, (x, y) = convnet(), calibration_batch()
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


def test_fisher_sharing_taylors_backward_gives_the_same_sums():
    from prunelab.stats import STAT_NAMES

    net, (x, y) = convnet(), calibration_batch()                        # fc2 is its own activation source: one tensor, twice
    alone = collect_statistics(net, x, y, {"fisher"}, 3, 4, "cpu")["layers"]
    taylor = collect_statistics(net, x, y, {"taylor"}, 3, 4, "cpu")["layers"]
    both = collect_statistics(net, x, y, set(STAT_NAMES), 3, 4, "cpu")["layers"]
    for name, entry in both.items():
        torch.testing.assert_close(entry["fisher_sum"], alone[name]["fisher_sum"], rtol=1e-12, atol=0)
        for key in ("grad_sum", "taylor_unit_sq_sum"):
            torch.testing.assert_close(entry[key], taylor[name][key], rtol=1e-12, atol=1e-15)


def test_new_statistics_only_when_declared():
    net, (x, y) = convnet(), calibration_batch()
    keys = {"input_sqnorm": "input_sqnorm", "feature_rank": "rank_sum", "fisher": "fisher_sum"}
    for need, key in keys.items():
        entry = collect_statistics(net, x, y, {need}, 3, 4, "cpu")["layers"]["conv2"]
        assert key in entry and not (set(keys.values()) - {key}) & set(entry)
    assert required_statistics(["wanda", "lamp", "fpgm", "bn_scale", "hrank", "obd"]) == set(keys)
