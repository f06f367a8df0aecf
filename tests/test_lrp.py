"""LRP-αβ (prunelab.stats.lrp) and the frs method, against brute-force loops and hand computations."""

import itertools

import pytest
import torch
import torch.nn as nn

from prunelab.models import Add, ShortcutA, build_model, prunable_layers
from prunelab.stats.lrp import EPS, alpha_beta_step, relevance, unit_relevance


def brute_alpha_beta(a, w, r, alpha, beta):
    """R_i = Σ_j [α (a_i w_ji)⁺/(z⁺_j+ε) − β (a_i w_ji)⁻/(z⁻_j−ε)] R_j by loops. a: I, w: J×I, r: J."""
    n_out, n_in = w.shape
    c = [[float(a[i]) * float(w[j, i].detach()) for i in range(n_in)] for j in range(n_out)]
    zp = [sum(max(v, 0.0) for v in c[j]) for j in range(n_out)]
    zn = [sum(min(v, 0.0) for v in c[j]) for j in range(n_out)]
    return [sum(alpha * max(c[j][i], 0.0) / (zp[j] + EPS) * float(r[j])
                - beta * min(c[j][i], 0.0) / (zn[j] - EPS) * float(r[j]) for j in range(n_out))
            for i in range(n_in)]


def test_hand_computed_linear_step():
    # a = (1, -2, 0.5), W = [[1, 2, -1], [-0.5, 1, 3]] -> contributions [[1, -4, -0.5], [-0.5, -2, 1.5]]
    # unit 0: z+ = 1, z- = -4.5;  unit 1: z+ = 1.5, z- = -2.5;  R = (1, 2), alpha 2, beta 1
    # R_0 = 2*1/1*1 - (-0.5)/(-2.5)*2 = 2 - 0.4 = 1.6
    # R_1 = -(-4)/(-4.5)*1 - (-2)/(-2.5)*2 = -0.8889 - 1.6 = -2.48889
    # R_2 = -(-0.5)/(-4.5)*1 + 2*1.5/1.5*2 = -0.1111 + 4 = 3.88889
    lin = nn.Linear(3, 2).double()  # the bias must be ignored
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, -1.0], [-0.5, 1.0, 3.0]]))
        lin.bias.fill_(7.0)
    a = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    r = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    got = alpha_beta_step(lin, a, r, 2.0, 1.0)[0]
    hand = torch.tensor([1.6, -0.8 / 0.9 - 1.6, -1 / 9 + 4.0], dtype=torch.float64)
    assert torch.allclose(got, hand, atol=1e-8)
    assert torch.allclose(got, torch.tensor(brute_alpha_beta(a[0], lin.weight, r[0], 2.0, 1.0),
                                            dtype=torch.float64), atol=1e-12)
    assert got.sum().item() == pytest.approx(3.0, abs=1e-8)  # alpha - beta = 1 conserves


def test_linear_model_input_relevance_matches_brute_force():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 3])
    for alpha, beta in [(2.0, 1.0), (1.0, 0.0), (3.0, 2.0)]:
        layers, r_in = relevance(nn.Sequential(lin), x, y, alpha=alpha, beta=beta)
        assert torch.equal(layers["0"], nn.functional.one_hot(y, 4).double())  # one-hot start
        for b in range(5):
            ref = brute_alpha_beta(x[b], lin.weight, nn.functional.one_hot(y[b], 4), alpha, beta)
            assert torch.allclose(r_in[b], torch.tensor(ref, dtype=torch.float64), atol=1e-10)
    logit = relevance(nn.Sequential(lin), x, y, init="logit")[0]["0"]
    assert torch.allclose(logit, nn.functional.one_hot(y, 4) * lin(x).detach())


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_step_matches_brute_force(groups):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=groups).double()
    a = torch.randn(2, 4, 5, 5, dtype=torch.float64)  # signed inputs
    r = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    got = alpha_beta_step(conv, a, r, 2.0, 1.0)
    w, ref, cin = conv.weight.detach(), torch.zeros_like(a), 4 // groups
    for b, j, oy, ox in itertools.product(range(2), range(4), range(3), range(3)):
        first = (j // (4 // groups)) * cin  # first input channel of output channel j's group
        taps = [(first + c, oy * 2 - 1 + ky, ox * 2 - 1 + kx, float(w[j, c, ky, kx]))
                for c, ky, kx in itertools.product(range(cin), range(3), range(3))
                if 0 <= oy * 2 - 1 + ky < 5 and 0 <= ox * 2 - 1 + kx < 5]
        contrib = [float(a[b, c, iy, ix]) * wv for c, iy, ix, wv in taps]
        zp, zn = sum(max(v, 0) for v in contrib), sum(min(v, 0) for v in contrib)
        for (c, iy, ix, _), v in zip(taps, contrib):
            ref[b, c, iy, ix] += (2 * max(v, 0) / (zp + EPS) - min(v, 0) / (zn - EPS)) * r[b, j, oy, ox]
    assert torch.allclose(got, ref, atol=1e-10)


def test_pool_and_shortcut_rules():
    x = torch.tensor([[[[1.0, 3.0], [4.0, 2.0]], [[5.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)  # 1×2×2×2
    y = torch.tensor([0])
    # max-pool: winner takes all
    _, r = relevance(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), x, y)
    assert torch.equal(r[0], torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64))
    # avg-pools: in proportion to the inputs
    for pool in (nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)):
        _, r = relevance(nn.Sequential(pool, nn.Flatten()), x, torch.tensor([1]))
        assert torch.allclose(r[0, 1], x[0, 1] / 8) and torch.equal(r[0, 0], torch.zeros(2, 2, dtype=torch.float64))
    # option-A shortcut 2 -> 4 channels, stride 2: input channel 0 sits at output channel 1, (0, 0) is kept
    net = nn.Sequential(ShortcutA(2, 4, 2), nn.Flatten())
    _, r = relevance(net, x, torch.tensor([1]))
    assert torch.equal(r[0], torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64))
    _, r = relevance(net, x, torch.tensor([3]))  # a zero-padded channel: nothing to route back
    assert torch.equal(r, torch.zeros_like(x))


def _totals(layers):
    return {k: v.flatten(1).sum(1) for k, v in layers.items()}


def test_conservation_mlp():
    # αβ conserves a unit's relevance only when it has contributions of both signs (z⁺ > 0 > z⁻):
    # layers wide enough that every unit sees many active inputs
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(20, 64, bias=False), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 48, bias=False),
                        nn.BatchNorm1d(48), nn.ReLU(), nn.Linear(48, 5, bias=False)).double().eval()
    net[4].running_var.uniform_(0.3, 3.0)
    x, y = torch.rand(16, 20, dtype=torch.float64) + 0.1, torch.randint(0, 5, (16,))
    for i in (0, 3, 6):
        c = net[:i](x)[:, None, :] * net[i].weight[None]  # B×J×I contributions
        assert ((c > 0).any(2) & (c < 0).any(2)).all()
    layers, r_in = relevance(net, x, y, reduce=False)
    assert list(layers) == ["0", "3", "6"]
    for total in [*_totals(layers).values(), r_in.sum(1)]:
        assert torch.allclose(total, torch.ones(16, dtype=torch.float64), atol=1e-4)


def test_conservation_conv_max_and_avg_pool():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(12, 16, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 6, bias=False)).double()
    net[1].running_mean.uniform_(-0.2, 0.2), net[1].running_var.uniform_(0.3, 3.0)  # identity rule: no effect
    x, y = torch.rand(4, 3, 18, 18, dtype=torch.float64) + 0.1, torch.randint(0, 6, (4,))
    w = net[0].weight  # first layer: every unit sees all 27 taps of a positive input, both signs
    assert (w.flatten(1) > 0).any(1).all() and (w.flatten(1) < 0).any(1).all()
    layers, r_in = relevance(net, x, y, reduce=False)
    assert [v.shape[1:] for v in layers.values()] == [(8, 16, 16), (12, 8, 8), (16, 4, 4), (6,)]
    for total in [*_totals(layers).values(), r_in.flatten(1).sum(1)]:
        assert torch.allclose(total, torch.ones(4, dtype=torch.float64), atol=1e-4)
    # reduced form: signed spatial mean of the full map
    units = unit_relevance(net, x, y)
    assert torch.allclose(units["4"], layers["4"].mean((2, 3)))
    net[2].inplace = True  # an in-place ReLU gives the same relevance
    assert all(torch.equal(units[k], v) for k, v in unit_relevance(net, x, y).items())


class ResNetTiny(nn.Module):
    """stem conv -> identity block (Add) -> option-A block (stride 2, 8 -> 16) -> GAP -> fc; no biases."""

    def __init__(self):
        super().__init__()
        self.stem, self.relu0 = nn.Conv2d(3, 8, 3, bias=False), nn.ReLU()
        self.c1, self.b1, self.r1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.c2, self.b2, self.add1, self.r2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), Add(), \
            nn.ReLU()
        self.c3, self.r3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.ReLU()
        self.c4, self.sc, self.add2, self.r4 = nn.Conv2d(16, 16, 3, padding=1, bias=False), ShortcutA(8, 16, 2), \
            Add(), nn.ReLU()
        self.gap, self.flat, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4, bias=False)

    def forward(self, x):
        x = self.relu0(self.stem(x))
        x = self.r2(self.add1(self.b2(self.c2(self.r1(self.b1(self.c1(x))))), x))
        x = self.r4(self.add2(self.c4(self.r3(self.c3(x))), self.sc(x)))
        return self.fc(self.flat(self.gap(x)))


def test_conservation_residual_with_add_and_shortcut_a():
    torch.manual_seed(4)
    net = ResNetTiny().double()
    x, y = torch.rand(3, 3, 10, 10, dtype=torch.float64) + 0.1, torch.randint(0, 4, (3,))
    assert (net.stem.weight.flatten(1) > 0).any(1).all() and (net.stem.weight.flatten(1) < 0).any(1).all()
    layers, r_in = relevance(net, x, y, reduce=False)
    one = torch.ones(3, dtype=torch.float64)
    # the stem output receives everything: conv branches + shortcuts
    for total in (layers["stem"].flatten(1).sum(1), r_in.flatten(1).sum(1), layers["fc"].sum(1)):
        assert torch.allclose(total, one, atol=1e-4)
    # branch + shortcut shares at the second add sum to the add's output relevance (= 1)
    assert layers["c4"].flatten(1).sum(1).abs().max() > 1e-3


def test_add_splits_in_proportion_to_summands():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.add = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False), Add()

        def forward(self, x):
            return self.add(self.l1(x), self.l2(x))

    net = TwoBranch().double()
    with torch.no_grad():
        net.l1.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0]]))
        net.l2.weight.copy_(torch.tensor([[3.0, -1.0, 0.5], [0.0, 1.0, 1.0]]))
    x = torch.tensor([[1.0, 1.0, 2.0], [2.0, 0.5, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # sample 0, class 0: a = 3, b = 3 -> 1/2 each; sample 1, class 1: a = 2, b = 1.5 -> 4/7, 3/7
    layers = unit_relevance(net, x, y)
    assert torch.allclose(layers["l1"], torch.tensor([[0.5, 0.0], [0.0, 4 / 7]], dtype=torch.float64))
    assert torch.allclose(layers["l2"], torch.tensor([[0.5, 0.0], [0.0, 3 / 7]], dtype=torch.float64))


def test_batched_equals_per_sample_and_model_untouched():
    torch.manual_seed(5)
    net = ResNetTiny()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    net.train()
    x, y = torch.randn(5, 3, 10, 10), torch.tensor([0, 1, 2, 3, 1])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    batched = unit_relevance(net, x, y)
    for b in range(5):
        single = unit_relevance(net, x[b:b + 1], y[b:b + 1])
        for name, v in batched.items():
            assert torch.allclose(v[b:b + 1], single[name], atol=1e-5, rtol=1e-4), name
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in net.parameters())
    assert all("forward" not in m.__dict__ for m in net.modules())
    with torch.no_grad():  # callers in no_grad still get relevance
        again = unit_relevance(net, x, y)
    assert all(torch.equal(again[k], batched[k]) for k in batched)


def test_unsupported_modules_fail_clearly():
    x, y = torch.randn(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"frs.*'1' \(GELU\)"):
        unit_relevance(nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)), x, y)

    class FunctionalResidual(nn.Module):  # like torchvision: `out += identity`
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.l2(self.l1(x) + x)

    with pytest.raises(ValueError, match=r"frs.*'\(model\)' \(FunctionalResidual\) applies 'AddBackward"):
        unit_relevance(FunctionalResidual(), x, y)
    class Tagged(nn.Module):  # a module may declare its rule
        lrp_rule = "route"

        def forward(self, x):
            return x[:, 1:3]

    _, r = relevance(nn.Sequential(Tagged()), x, y)
    assert torch.equal(r, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="labels"):
        unit_relevance(nn.Sequential(nn.Linear(4, 2)), x, torch.tensor([0, 2]))


class TorchvisionStyleBlock(nn.Module):
    """As torchvision's BasicBlock: in-place ReLU used twice and a functional in-place `out += identity`."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x
        return self.relu(out)


def test_functional_residual_rejected_naming_the_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Sequential(TorchvisionStyleBlock()),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"frs.*'2.0' \(TorchvisionStyleBlock\) applies 'AddBackward"):
        unit_relevance(net, torch.randn(2, 3, 8, 8), torch.tensor([1, 0]))
    assert all("forward" not in m.__dict__ for m in net.modules())  # restored after the error
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_layer_off_the_logit_path_gets_zeros():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.aux, self.fc = nn.Linear(4, 3), nn.Linear(4, 2)

        def forward(self, x):
            self.aux(x)  # computed, never used
            return self.fc(x)

    rel = unit_relevance(Aux(), torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    assert torch.equal(rel["aux"], torch.zeros(5, 3)) and rel["fc"].shape == (5, 2)


@pytest.mark.parametrize("name,options,in_shape", [
    ("mlp", {}, [1, 8, 8]), ("cnn", {}, [1, 8, 8]), ("vgg11", {}, [3, 16, 16]),
    ("resnet20", {"shortcut": "A"}, [3, 8, 8]), ("resnet20", {"shortcut": "B"}, [3, 8, 8])])
def test_zoo_models(name, options, in_shape):
    torch.manual_seed(6)
    model = build_model({"name": name, "options": options, "in_shape": in_shape, "num_classes": 10})
    x, y = torch.randn(4, *in_shape), torch.randint(0, 10, (4,))
    rel = unit_relevance(model, x, y)
    layers = prunable_layers(model)
    assert list(rel) == [n for n, _ in layers]
    for n, m in layers:
        units = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        assert rel[n].shape == (4, units) and torch.isfinite(rel[n]).all(), n
    assert torch.equal(rel[layers[-1][0]], nn.functional.one_hot(y, 10).float())
    # biases stay out of the denominators and BN is identity: the first layer's output holds about all
    # the relevance (exactly, but for the rare units whose contributions all have one sign)
    full, _ = relevance(model, x, y, reduce=False)
    assert torch.allclose(full[layers[0][0]].flatten(1).sum(1), torch.ones(4), atol=0.05)


# ------------------------------------------------------------------------------------------ frs method
def test_frs_matches_hand_computation():
    from prunelab.methods import score_model

    net = nn.Sequential(nn.Linear(3, 2))
    rel = torch.tensor([[2.0, -4.0], [3.0, 3.0], [5.0, 7.0]], dtype=torch.float64)   # K=3 × U=2 sums
    count = torch.tensor([2.0, 3.0, 0.0], dtype=torch.float64)                        # class 2: no samples
    acc = torch.tensor([0.5, 0.0, 0.9], dtype=torch.float64)                           # class 1: never right
    stats = {"needs": ["relevance"], "class_acc": acc, "lrp": {"alpha": 2.0, "beta": 1.0},
             "layers": {"0": {"weight_shape": [2, 3], "count": count, "relevance_sum": rel}}}
    sig = lambda v: 1 / (1 + torch.exp(-torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    w0, w1 = sig(0.9 / 0.5), sig(0.9 / 1e-6)          # class 2 is left out of the class average
    s = torch.stack([(w0 * 2.0 / 2 + w1 * 3.0 / 3) / 2, (w0 * -4.0 / 2 + w1 * 3.0 / 3) / 2]).abs()
    got = score_model(net, stats, "frs")["layers"]["0"]
    assert got["unstructured"] is None
    assert torch.allclose(got["structured"], s / s.norm(), atol=1e-12)
    assert got["structured"].norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        score_model(net, stats, "frs", {"alpha": 2.0, "beta": 0.5})
    with pytest.raises(ValueError, match="collect_stats"):
        score_model(net, stats, "frs", {"alpha": 3.0, "beta": 2.0})


def test_frs_zero_channel_scores_lowest():
    from prunelab.methods import score_model
    from prunelab.stats import collect_statistics

    torch.manual_seed(7)
    model = build_model({"name": "cnn", "options": {"widths": [6, 8]}, "in_shape": [1, 8, 8], "num_classes": 3})
    with torch.no_grad():
        model.conv2.weight[5].zero_()        # BN at init (mean 0, beta 0): the channel outputs exactly 0
    x, y = torch.randn(60, 1, 8, 8), torch.arange(60) % 3
    stats = collect_statistics(model, x, y, {"relevance"}, num_classes=3, batch_size=16)
    scores = score_model(model, stats, "frs")["layers"]
    assert set(scores) == {n for n, _ in prunable_layers(model)}
    conv2 = scores["conv2"]["structured"]
    others = torch.cat([scores[n]["structured"] for n in scores if n != "conv2"] + [conv2[:5], conv2[6:]])
    assert conv2[5] == 0 and (others > 0).all()
    for n, m in prunable_layers(model):
        assert scores[n]["structured"].norm().item() == pytest.approx(1.0)
