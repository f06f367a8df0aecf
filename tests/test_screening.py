"""screening (prunelab.methods.screening) against sklearn's f_classif and hand formulas: the ANOVA F of each unit,
the blend of F and |w| by λ (λ = 0 selects what magnitude selects), channel means for convolutions, and the anova
allocation of layer budgets."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.feature_selection import f_classif
from torch import nn

from conftest import mlp_and_data
from prunelab.methods import required_statistics, score_model
from prunelab.methods.screening import anova_f
from prunelab.models import prunable_layers
from prunelab.stats import collect_statistics


def moments(z: np.ndarray, y: np.ndarray, k: int):
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    count = torch.bincount(yt, minlength=k).double()
    sums = torch.zeros(k, z.shape[1], dtype=torch.float64).index_add_(0, yt, zt)
    sq = torch.zeros(k, z.shape[1], dtype=torch.float64).index_add_(0, yt, zt ** 2)
    return count, sums, sq


def test_anova_f_equals_sklearn_f_classif_with_singleton_class_and_constant_unit():
    rng = np.random.default_rng(0)
    y = np.array([0] * 6 + [1] * 5 + [2] * 1 + [3] * 4)           # class 2 has a single sample
    z = rng.normal(size=(len(y), 5)) + y[:, None] * np.array([0.0, 0.5, 1.0, 2.0, 0.1])
    z[:, 0] = 0.7                                                  # constant unit
    f = anova_f(*moments(z, y, 5)).numpy()                         # class 4 absent: left out, as sklearn does
    ref, _ = f_classif(z[:, 1:], y)
    np.testing.assert_allclose(f[1:], ref, rtol=1e-6)
    assert f[0] == 0.0 and not np.isnan(f).any()


def test_anova_f_separated_unit_is_inf_and_too_few_samples_fail():
    z = np.array([[0.0], [0.0], [1.0], [1.0]])
    y = np.array([0, 0, 1, 1])
    assert anova_f(*moments(z, y, 2)).item() == float("inf")
    with pytest.raises(ValueError, match="at least two classes"):
        anova_f(*moments(z[:2], y[:2], 2))
    with pytest.raises(ValueError, match="more calibration samples"):
        anova_f(*moments(z[1:3], y[1:3], 2))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # sklearn on the constant unit
def test_screening_scores_match_hand_formula_with_sklearn_f():
    model, x, y = mlp_and_data()
    needs = required_statistics(["screening"])
    stats = collect_statistics(model, x, y, needs, 4, 16, "cpu")
    lam = 0.3
    scores = score_model(model, stats, "screening", {"lambda": lam})
    assert scores["config"] == {"lambda": lam, "allocation": "magnitude"}
    with torch.no_grad():
        h = torch.relu(model.fc1(x))
    for name, inp, out in (("fc1", x, h), ("fc2", h, model.fc2(h).detach())):
        w = getattr(model, name).weight.detach()
        f_in = np.nan_to_num(f_classif(inp.numpy(), y.numpy())[0])          # sklearn: NaN for constant units
        f_out = np.nan_to_num(f_classif(out.numpy(), y.numpy())[0])
        f_in, f_out = torch.from_numpy(f_in), torch.from_numpy(f_out)
        blend = lam * f_in / f_in.max() + (1 - lam) * w.abs() / w.abs().max()
        norms = w.abs().sum(dim=1)
        expect_s = lam * f_out / f_out.max() + (1 - lam) * norms / norms.max()
        got = scores["layers"][name]["unstructured"]
        # the layer's own |w| values, re-assigned in the blend's order (brute force: sort both)
        ranked = sorted(range(w.numel()), key=lambda i: (float(blend.expand_as(w).flatten()[i]),
                                                         float(w.abs().flatten()[i]), i))
        expect_u = torch.empty(w.numel(), dtype=torch.float64)
        expect_u[ranked] = torch.sort(w.abs().flatten()).values
        torch.testing.assert_close(got, expect_u.view_as(w), rtol=0, atol=0)
        torch.testing.assert_close(scores["layers"][name]["structured"], expect_s, rtol=1e-6, atol=0)


def selected_weights(model, scores, ratio, scope):
    from prunelab.pruning.selection import select_unstructured
    return select_unstructured(model, scores, ratio, prune={"scope": scope})


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("ratio", [0.3, 0.6, 0.9])
def test_screening_lambda0_selects_exactly_what_magnitude_selects(scope, ratio):
    from prunelab.pruning.selection import select_structured

    model, x, y = mlp_and_data(n=48)
    with torch.no_grad():
        model.fc2.weight.mul_(3.0)                                 # layers on different weight scales
    stats = collect_statistics(model, x, y, required_statistics(["screening"]), 4, 16, "cpu")
    s0 = score_model(model, stats, "screening", {"lambda": 0.0})
    mag = score_model(model, stats, "magnitude")
    for n, keep in selected_weights(model, s0, ratio, scope).items():
        assert torch.equal(keep, selected_weights(model, mag, ratio, scope)[n]), n
    drop0 = select_structured(model, s0, 0.4, example_input=x[:2], prune={"scope": scope})
    drop_mag = select_structured(model, mag, 0.4, example_input=x[:2], prune={"scope": scope})
    assert {k: v.tolist() for k, v in drop0.items()} == {k: v.tolist() for k, v in drop_mag.items()}


def test_screening_lambda1_is_pure_screening_within_a_layer_with_magnitudes_layer_budget():
    model, x, y = mlp_and_data(n=48)
    stats = collect_statistics(model, x, y, required_statistics(["screening"]), 4, 16, "cpu")
    s1 = score_model(model, stats, "screening", {"lambda": 1.0})
    mag = score_model(model, stats, "magnitude")
    f_in = anova_f(stats["layers"]["fc1"]["count"], stats["layers"]["fc1"]["in_sum"],
                   stats["layers"]["fc1"]["in_sqsum"])
    keep = selected_weights(model, s1, 0.5, "layerwise")["fc1"]
    # layer-wise: the kept weights are the columns of the highest-F inputs (ties within a column by |w|)
    order = sorted(range(6), key=lambda i: -float(f_in[i]))
    assert keep[:, order[0]].all() and not keep[:, order[-1]].any()
    for glob, ref in zip(selected_weights(model, s1, 0.7, "global").values(),
                         selected_weights(model, mag, 0.7, "global").values()):
        assert int(glob.sum()) == int(ref.sum())                   # global: magnitude's per-layer budget


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_screening_anova_allocation_takes_layer_budgets_from_f_and_orders_by_the_blend(lam):
    """allocation anova, brute force: rank every weight of every layer by (F of its input unit, |w|) with sklearn's
    f_classif on the raw inputs and hidden activations; a global selection removes from each layer as many weights
    as that ranking does, and within the layer the ones the allocation-magnitude blend of the same lambda removes."""
    model, x, y = mlp_and_data(n=48)
    stats = collect_statistics(model, x, y, required_statistics(["screening"]), 4, 16, "cpu")
    anova = score_model(model, stats, "screening", {"lambda": lam, "allocation": "anova"})
    blend = score_model(model, stats, "screening", {"lambda": lam})
    with torch.no_grad():
        hidden = torch.relu(model.fc1(x))
    f = {"fc1": f_classif(x.numpy()[:, :5], y.numpy())[0].tolist() + [0.0],   # input 5 is constant: F = 0
         "fc2": f_classif(hidden.numpy(), y.numpy())[0]}
    keys = sorted((float(f[n][i]), float(abs(m.weight.detach()[j, i])), n) for n, m in prunable_layers(model)
                  for j in range(m.weight.shape[0]) for i in range(m.weight.shape[1]))
    for ratio in (0.3, 0.6):
        k = int(ratio * len(keys) + 0.5)
        want = {n: sum(1 for *_, layer in keys[:k] if layer == n) for n, _ in prunable_layers(model)}
        got = selected_weights(model, anova, ratio, "global")
        assert {n: int((~keep).sum()) for n, keep in got.items()} == want
        for n, keep in got.items():   # within a layer: the blend's order
            order = torch.argsort(blend["layers"][n]["unstructured"].flatten(), stable=True)
            assert set(torch.nonzero(~keep.flatten()).flatten().tolist()) == set(order[:want[n]].tolist()), n
    assert torch.equal(anova["layers"]["fc1"]["structured"], blend["layers"]["fc1"]["structured"])


def test_screening_conv_uses_channel_means_of_input_and_output():
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(2, 3, 3, padding=1)), ("relu1", nn.ReLU()),
                                       ("conv2", nn.Conv2d(3, 4, 3, stride=2)), ("relu2", nn.ReLU()),
                                       ("flatten", nn.Flatten()), ("fc", nn.Linear(4 * 2 * 2, 3))])).double()
    x = torch.randn(24, 2, 5, 5, dtype=torch.float64)
    y = torch.arange(24) % 3
    x[:, 1] += 0.5 * y[:, None, None]                                # class signal in input channel 1
    stats = collect_statistics(model, x, y, required_statistics(["screening"]), 3, 10, "cpu")
    s = score_model(model, stats, "screening", {"lambda": 1.0})["layers"]
    with torch.no_grad():
        h1 = model.relu1(model.conv1(x))
        h2 = model.relu2(model.conv2(h1))
    f_in = torch.from_numpy(f_classif(h1.mean((2, 3)).numpy(), y.numpy())[0])
    f_out = torch.from_numpy(f_classif(h2.mean((2, 3)).numpy(), y.numpy())[0])
    def assert_ordered_by_input_f(score, f, w):
        # λ = 1: the layer's |w| values, in the order of (F of the weight's input channel, |w|)
        flat_f = f[None, :, None, None].expand_as(w).flatten()
        ranked = sorted(range(w.numel()), key=lambda i: (float(flat_f[i]), float(w.abs().flatten()[i]), i))
        expect = torch.empty(w.numel(), dtype=torch.float64)
        expect[ranked] = torch.sort(w.abs().flatten()).values
        torch.testing.assert_close(score, expect.view_as(w), rtol=0, atol=0)

    assert_ordered_by_input_f(s["conv2"]["unstructured"], f_in, model.conv2.weight.detach())
    torch.testing.assert_close(s["conv2"]["structured"], f_out / f_out.max(), rtol=1e-6, atol=0)
    f_pix = torch.from_numpy(f_classif(x.mean((2, 3)).numpy(), y.numpy())[0])   # first layer: input channels
    assert_ordered_by_input_f(s["conv1"]["unstructured"], f_pix, model.conv1.weight.detach())
