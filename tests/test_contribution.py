"""contribution method against independent references: per-sample loops for μ, per-unit loops for the
structured (outgoing) score, hand-written consumer maps for the tracing."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from prunelab.methods import required_statistics, score_model
from prunelab.methods.contribution import Consumer, downstream_consumers
from prunelab.models import Add, build_model, classifier_name, prunable_layers
from prunelab.pruning.selection import validate_scores
from prunelab.stats import CONTRIBUTION_EPS, collect_statistics

MEAN_ONLY = {"contribution_mean"}


# --------------------------------------------------------------------------- brute-force references
def brute_mu(layer: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """μ_ij = mean over samples (× output positions) of |w_ij a_i| / (Σ_i' |w_i'j a_i'| + ε), one at a time."""
    w = layer.weight.detach().double()
    total, n = torch.zeros_like(w), 0
    if isinstance(layer, nn.Linear):
        for x in a.double():
            for j in range(w.shape[0]):
                c = (w[j] * x).abs()
                total[j] += c / (c.sum() + CONTRIBUTION_EPS)
            n += 1
        return total / n
    (sh, sw), (ph, pw), (kh, kw) = layer.stride, layer.padding, w.shape[2:]
    for x in nn.functional.pad(a.double(), (pw, pw, ph, ph)):
        for p in range(0, x.shape[1] - kh + 1, sh):
            for q in range(0, x.shape[2] - kw + 1, sw):
                field = x[:, p:p + kh, q:q + kw]
                for j in range(w.shape[0]):
                    c = (w[j] * field).abs()
                    total[j] += c / (c.sum() + CONTRIBUTION_EPS)
                n += 1
    return total / n


def brute_outgoing(units: int, consumers: list[tuple[torch.Tensor, dict[int, list[tuple]]]]) -> torch.Tensor:
    """s_u = Σ_consumers (1/J) Σ_j Σ_{weight positions reading u} μ[j, pos]; `reads[u]` lists the positions
    (index tuples into μ[j]) of the consumer's weights that read unit u."""
    s = torch.zeros(units, dtype=torch.float64)
    for mu, reads in consumers:
        for u in range(units):
            for j in range(mu.shape[0]):
                for pos in reads[u]:
                    s[u] += mu[j][pos] / mu.shape[0]
    return s


def conv_reads(conv: nn.Conv2d, shift: int = 0) -> dict[int, list[tuple]]:
    kh, kw = conv.kernel_size
    return {u: [(u + shift, p, q) for p in range(kh) for q in range(kw)] for u in range(conv.in_channels - shift)}


def flatten_reads(fc: nn.Linear, channels: int) -> dict[int, list[tuple]]:
    """in-features of a Linear behind Flatten of a channels×H×W map: feature f belongs to channel f // (H·W)."""
    hw = fc.in_features // channels
    return {u: [(f,) for f in range(fc.in_features) if f // hw == u] for u in range(channels)}


def scores_of(model, x, y, k, cfg=None, needs=MEAN_ONLY):
    stats = collect_statistics(model, x, y, needs, k, 7, "cpu")
    return score_model(model, stats, "contribution", cfg)["layers"]


def incoming(mu: torch.Tensor) -> torch.Tensor:
    return mu.flatten(1).sum(1)


# --------------------------------------------------------------------------- models
def linear_chain(seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(6, 5)), ("relu1", nn.ReLU()), ("fc2", nn.Linear(5, 4)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(4, 3))])).double().eval()


def conv_chain(seed=0) -> nn.Sequential:
    """conv → BN → ReLU → maxpool → conv → ReLU → flatten → linear (6×6 input: 3×3 maps after the pool)."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 3, 3, padding=1)), ("bn1", nn.BatchNorm2d(3)), ("relu1", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)), ("conv2", nn.Conv2d(3, 4, 3, padding=1)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(4 * 3 * 3, 3))])).double()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.1, 0.3)
    return net.eval()


class ResidualNet(nn.Module):
    """conv0 → ReLU → (conv1 → ReLU → conv2) + skip → ReLU → conv3 (stride 2) → ReLU → GAP → flatten → fc.

    inline=True adds with `+` and flattens with torch.flatten (what torch.fx sees in torchvision models)."""

    def __init__(self, inline: bool):
        super().__init__()
        self.inline = inline
        self.conv0, self.conv1 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        self.conv2, self.conv3 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 3, stride=2)
        self.add, self.relu, self.gap, self.flat = Add(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        h = self.relu(self.conv0(x))
        b = self.conv2(self.relu(self.conv1(h)))
        h = self.relu(h + b if self.inline else self.add(h, b))
        g = self.gap(self.relu(self.conv3(h)))
        return self.fc(torch.flatten(g, 1) if self.inline else self.flat(g))


def data(n, shape, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64), torch.arange(n) % k


# --------------------------------------------------------------------------- structured score = brute force
def test_linear_chain_structured_score_is_outgoing_mu_by_brute_force():
    model = linear_chain()
    x, y = data(13, (6,))
    s = scores_of(model, x, y, 3)
    with torch.no_grad():
        a1 = model.relu1(model.fc1(x))
        a2 = model.relu2(model.fc2(a1))
    mu2, mu3 = brute_mu(model.fc2, a1), brute_mu(model.fc3, a2)
    one = {u: [(u,)] for u in range(5)}
    torch.testing.assert_close(s["fc1"]["structured"], brute_outgoing(5, [(mu2, one)]))
    torch.testing.assert_close(s["fc2"]["structured"], brute_outgoing(4, [(mu3, {u: [(u,)] for u in range(4)})]))
    torch.testing.assert_close(s["fc3"]["structured"], incoming(mu3))         # classifier: incoming μ
    torch.testing.assert_close(s["fc1"]["unstructured"], brute_mu(model.fc1, x))   # unchanged: μ (κ = 0)


def test_conv_chain_structured_score_is_outgoing_mu_by_brute_force():
    model = conv_chain()
    x, y = data(9, (2, 6, 6))
    s = scores_of(model, x, y, 3)
    with torch.no_grad():
        p = model.pool(model.relu1(model.bn1(model.conv1(x))))
        a2 = model.relu2(model.conv2(p))
    mu_conv2, mu_fc = brute_mu(model.conv2, p), brute_mu(model.fc, a2.flatten(1))
    torch.testing.assert_close(s["conv1"]["structured"], brute_outgoing(3, [(mu_conv2, conv_reads(model.conv2))]))
    torch.testing.assert_close(s["conv2"]["structured"], brute_outgoing(4, [(mu_fc, flatten_reads(model.fc, 4))]))
    torch.testing.assert_close(s["fc"]["structured"], incoming(mu_fc))
    assert downstream_consumers(model) == {"conv1": [Consumer("conv2", (0, 1, 2))],
                                           "conv2": [Consumer("fc", (0, 1, 2, 3), 9)], "fc": []}


@pytest.mark.parametrize("inline", [False, True])
def test_residual_add_sums_over_every_consumer_of_the_stream(inline):
    model = ResidualNet(inline).double().eval()
    x, y = data(6, (2, 5, 5))
    s = scores_of(model, x, y, 3)
    with torch.no_grad():
        h0 = model.relu(model.conv0(x))
        h1 = model.relu(model.conv1(h0))
        h = model.relu(h0 + model.conv2(h1))
        g = model.gap(model.relu(model.conv3(h))).flatten(1)
    mu1, mu2, mu3, mu_fc = (brute_mu(model.conv1, h0), brute_mu(model.conv2, h1), brute_mu(model.conv3, h),
                            brute_mu(model.fc, g))
    # conv0 feeds conv1 directly and conv3 through the skip + add; conv2 feeds conv3 through the add
    torch.testing.assert_close(s["conv0"]["structured"],
                               brute_outgoing(4, [(mu1, conv_reads(model.conv1)), (mu3, conv_reads(model.conv3))]))
    torch.testing.assert_close(s["conv1"]["structured"], brute_outgoing(3, [(mu2, conv_reads(model.conv2))]))
    torch.testing.assert_close(s["conv2"]["structured"], brute_outgoing(4, [(mu3, conv_reads(model.conv3))]))
    torch.testing.assert_close(s["conv3"]["structured"], brute_outgoing(2, [(mu_fc, flatten_reads(model.fc, 2))]))
    torch.testing.assert_close(s["fc"]["structured"], incoming(mu_fc))


# --------------------------------------------------------------------------- zero units
def test_unit_with_zero_outgoing_weights_scores_lowest():
    lin, conv = linear_chain(), conv_chain()
    with torch.no_grad():
        lin.fc2.weight[:, 2] = 0.0                      # fc1 unit 2 is read by nobody
        conv.conv2.weight[:, 1] = 0.0                   # conv1 channel 1 is read by nobody
    for model, layer, unit, shape in ((lin, "fc1", 2, (6,)), (conv, "conv1", 1, (2, 6, 6))):
        x, y = data(12, shape)
        stats = collect_statistics(model, x, y, MEAN_ONLY, 3, 7, "cpu")
        s = score_model(model, stats, "contribution")["layers"][layer]["structured"]
        assert s[unit] == 0 and (torch.cat([s[:unit], s[unit + 1:]]) > 0).all(), s
        # the incoming sum, the old score, cannot see it: the unit's own inputs are as alive as any
        mu = stats["layers"][layer]["contrib_r_sum"] / stats["layers"][layer]["contrib_positions"]
        assert incoming(mu)[unit] > 0.99


def test_dead_unit_with_zero_incoming_weights_and_bias_scores_lowest():
    lin, conv = linear_chain(), conv_chain()
    with torch.no_grad():
        lin.fc1.weight[3], lin.fc1.bias[3] = 0.0, 0.0   # fc1 unit 3: pre-activation 0, ReLU output 0
        conv.conv1.weight[0], conv.conv1.bias[0] = 0.0, 0.0
        conv.bn1.running_mean[0], conv.bn1.bias[0] = 0.0, 0.0    # BN keeps the zero channel at 0
    for model, layer, unit, shape in ((lin, "fc1", 3, (6,)), (conv, "conv1", 0, (2, 6, 6))):
        x, y = data(12, shape)
        s = scores_of(model, x, y, 3)[layer]["structured"]
        assert s[unit] == 0 and (torch.cat([s[:unit], s[unit + 1:]]) > 0).all(), s


# --------------------------------------------------------------------------- the degenerate case is gone
def test_cnn_scores_rank_units_where_the_incoming_sum_is_all_one():
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "options": {}, "in_shape": [1, 8, 8], "num_classes": 4})
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    stats = collect_statistics(model, x, y, MEAN_ONLY, 4, 16, "cpu")
    s = score_model(model, stats, "contribution")["layers"]
    entry = stats["layers"]["conv2"]
    old = incoming(entry["contrib_r_sum"] / entry["contrib_positions"])
    torch.testing.assert_close(old, torch.ones_like(old), rtol=0, atol=1e-6)    # the defect being fixed
    for name in ("conv1", "conv2", "conv3"):
        t = s[name]["structured"]
        assert len(torch.unique(t)) == len(t) and t.std() > 0.1 * t.mean(), (name, t)


# --------------------------------------------------------------------------- zoo models and tracing
ZOO = [("mlp", {}, [1, 8, 8]), ("cnn", {}, [1, 8, 8]), ("vgg11", {}, [3, 8, 8]), ("resnet20", {}, [3, 8, 8]),
       ("resnet20", {"shortcut": "B"}, [3, 8, 8])]


@pytest.mark.parametrize("name,options,shape", ZOO, ids=["mlp", "cnn", "vgg11", "resnet20-A", "resnet20-B"])
def test_zoo_models_get_finite_scores_of_the_right_shapes(name, options, shape):
    torch.manual_seed(0)
    model = build_model({"name": name, "options": options, "in_shape": shape, "num_classes": 4})
    x, y = torch.randn(8, *shape), torch.arange(8) % 4
    stats = collect_statistics(model, x, y, required_statistics(["contribution"]), 4, 8, "cpu")
    scores = score_model(model, stats, "contribution", {"kappa": 1.0})
    validate_scores(model, scores)                      # names, shapes, finite
    head = classifier_name(model)
    for layer, m in prunable_layers(model):
        entry = scores["layers"][layer]
        assert entry["structured"].shape == (m.weight.shape[0],)
        assert entry["unstructured"].shape == m.weight.shape
        if layer != head:
            assert entry["structured"].std() > 0, layer


def test_resnet_consumers_follow_the_residual_stream_and_option_a_shortcuts():
    a = downstream_consumers(build_model({"name": "resnet20", "options": {}, "in_shape": [3, 8, 8],
                                          "num_classes": 4}))
    b = downstream_consumers(build_model({"name": "resnet20", "options": {"shortcut": "B"},
                                          "in_shape": [3, 8, 8], "num_classes": 4}))
    r = lambda n, shift=0: tuple(range(shift, shift + n))   # noqa: E731
    assert a["layer1.0.conv1"] == b["layer1.0.conv1"] == [Consumer("layer1.0.conv2", r(16))]
    # stage-1 stream: later blocks' convs; a ShortcutA pads 16 → 32 channels (+8), then 32 → 64 (+16)
    assert a["layer1.2.conv2"] == [Consumer("layer2.0.conv1", r(16)), Consumer("layer2.1.conv1", r(16, 8)),
                                   Consumer("layer2.2.conv1", r(16, 8)), Consumer("layer3.0.conv1", r(16, 8)),
                                   Consumer("layer3.1.conv1", r(16, 24)), Consumer("layer3.2.conv1", r(16, 24)),
                                   Consumer("fc", r(16, 24), 1)]
    assert b["layer1.2.conv2"] == [Consumer("layer2.0.conv1", r(16)), Consumer("layer2.0.shortcut.conv", r(16))]
    assert b["conv1"] == [Consumer(f"layer1.{i}.conv1", r(16)) for i in range(3)] + [
        Consumer("layer2.0.conv1", r(16)), Consumer("layer2.0.shortcut.conv", r(16))]
    assert a["layer3.2.conv2"] == b["layer3.2.conv2"] == [Consumer("fc", r(64), 1)]
    assert a["fc"] == b["fc"] == []


def test_inline_flatten_view_and_spatial_mean_are_followed():
    class Inline(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 2, 1)
            self.f1, self.f2, self.f3 = nn.Linear(3, 4), nn.Linear(2 * 2 * 2, 4), nn.Linear(4, 2)

        def forward(self, x):                        # x: B×1×4×4 → c1: B×3×2×2
            h = torch.relu(self.c1(x))
            g = self.c2(h)
            return self.f3(self.f1(h.mean((2, 3))) + self.f2(g.view(g.size(0), -1)))

    assert downstream_consumers(Inline()) == {
        "c1": [Consumer("c2", (0, 1, 2)), Consumer("f1", (0, 1, 2), 1)], "c2": [Consumer("f2", (0, 1), 4)],
        "f1": [Consumer("f3", (0, 1, 2, 3), 1)], "f2": [Consumer("f3", (0, 1, 2, 3), 1)], "f3": []}


def test_unsupported_op_between_layers_raises_naming_it():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(ValueError, match=r"cannot follow the output of layer 'a' through call_function 'cat'"):
        downstream_consumers(Cat())


# --------------------------------------------------------------------------- unstructured and config (moved)
def test_unstructured_is_mu_plus_kappa_sigma_and_kappa_zero_needs_only_the_mean():
    model = linear_chain()
    x, y = data(40, (6,))
    stats = collect_statistics(model, x, y, required_statistics(["contribution"]), 3, 7, "cpu")
    entry = stats["layers"]["fc1"]
    mu = entry["contrib_r_sum"] / entry["contrib_positions"]
    sigma = (entry["contrib_r2_sum"] / entry["contrib_positions"] - mu ** 2).sqrt()
    con = score_model(model, stats, "contribution", {"kappa": 2.0})["layers"]
    torch.testing.assert_close(con["fc1"]["unstructured"], mu + 2.0 * sigma)
    lean = collect_statistics(model, x, y, required_statistics(["contribution"], {"contribution": {}}), 3, 7, "cpu")
    plain = score_model(model, lean, "contribution")["layers"]
    torch.testing.assert_close(plain["fc1"]["unstructured"], mu)
    for name in ("fc1", "fc2", "fc3"):                  # the structured score does not depend on κ
        torch.testing.assert_close(plain[name]["structured"], con[name]["structured"])
    with pytest.raises(ValueError, match=r"needs statistics \['contribution_sq'\].*collect_stats"):
        score_model(model, lean, "contribution", {"kappa": 1.0})
    with pytest.raises(ValueError, match="'kappa' must be a finite number"):
        score_model(model, stats, "contribution", {"kappa": float("nan")})
