"""Criteria computed from the weights alone (magnitude, lamp, fpgm, bn_scale) against hand formulas, brute-force
loops, scipy's minimiser and Torch-Pruning's importance classes."""

import numpy as np
import pytest
import torch
import torch_pruning as tp
from scipy.optimize import minimize
from torch import nn

from conftest import convnet, mlp_and_data
from prunelab.methods import inapplicable_reason, score_model
from prunelab.methods.fpgm import geometric_median
from prunelab.methods.lamp import lamp_layer
from prunelab.models import build_model


def test_magnitude_formulas():
    model, _, _ = mlp_and_data()
    mag = score_model(model, None, "magnitude")["layers"]["fc1"]
    w = model.fc1.weight.detach()
    torch.testing.assert_close(mag["unstructured"], w.abs())
    torch.testing.assert_close(mag["structured"], w.abs().sum(1))


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
