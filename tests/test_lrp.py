"""LRP-αβ relevance passes (prunelab.stats.lrp) and the frs method: conservation through MLPs, convs, pools and
residual blocks, batched against per-sample, the input-relevance skip, the chain pass against the graph pass,
sessions over batches, clear errors for what the rules cannot follow; frs against a hand computation."""

import pytest
import torch
import torch.nn as nn

from prunelab.models import Add, ShortcutA, build_model, prunable_layers
from prunelab.stats.lrp import RelevanceSession, relevance, unit_relevance


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


ZOO = [("mlp", {}, [1, 8, 8]), ("cnn", {}, [1, 8, 8]), ("vgg11", {}, [3, 16, 16]),
       ("resnet20", {"shortcut": "A"}, [3, 8, 8]), ("resnet20", {"shortcut": "B"}, [3, 8, 8])]


def zoo_model(name, options, in_shape, seed=8):
    torch.manual_seed(seed)
    model = build_model({"name": name, "options": options, "in_shape": in_shape, "num_classes": 10}).double()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(6, *in_shape, dtype=torch.float64), torch.randint(0, 10, (6,))


@pytest.mark.parametrize("name,options,in_shape", ZOO)
def test_input_relevance_skip_gives_the_full_pass_layers(name, options, in_shape):
    model, x, y = zoo_model(name, options, in_shape)
    full, r_in = relevance(model, x, y)                       # propagates down to the input
    assert r_in.shape == x.shape
    skip = unit_relevance(model, x, y)                        # stops at the first weighted layers
    assert list(skip) == [n for n, _ in prunable_layers(model)] == list(full)
    for n in full:
        assert torch.allclose(skip[n], full[n], atol=1e-12, rtol=1e-10), n


class Hooked:
    """Forces the autograd (graph) pass: the chain pass runs no hooks, so any hook disables it."""

    def __init__(self, model):
        self.handle = model.register_forward_hook(lambda *_: None)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


def sequential_models():
    torch.manual_seed(9)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(inplace=True), nn.Dropout(0.3),
                        nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU()), nn.Identity(),
                        nn.Linear(16, 4))
    cnn = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return [(mlp.double(), torch.randn(5, 3, 2, 2, dtype=torch.float64)),
            (cnn.double(), torch.randn(5, 3, 12, 12, dtype=torch.float64))]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("reduce", [True, False])
def test_chain_pass_equals_graph_pass(index, reduce):
    model, x = sequential_models()[index]
    y = torch.tensor([0, 1, 2, 3, 1])
    for input_relevance in (False, True):
        with RelevanceSession(model, reduce=reduce, input_relevance=input_relevance) as lrp:
            assert lrp._chain is not None
            chain = lrp(x, y)
            with Hooked(model):
                graph = lrp(x, y)
        assert list(chain[0]) == list(graph[0]) == [n for n, _ in prunable_layers(model)]
        for n in chain[0]:
            assert torch.allclose(chain[0][n], graph[0][n], atol=1e-12), n
        assert torch.allclose(chain[2], graph[2], atol=1e-12) and torch.allclose(chain[2], model.eval()(x))
        if input_relevance:
            assert torch.allclose(chain[1], graph[1], atol=1e-12) and chain[1].shape == x.shape
        else:
            assert chain[1] is None and graph[1] is None
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_shared_module_in_sequential_runs_each_call():
    torch.manual_seed(10)
    lin, relu = nn.Linear(4, 4).double(), nn.ReLU()
    shared = nn.Sequential(lin, relu, lin)
    twin = nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 4).double())
    twin[2].load_state_dict(lin.state_dict())
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 3, 1])
    with RelevanceSession(shared) as lrp:
        assert lrp._chain is None                 # Sequential.forward runs `lin` twice: the graph pass
        got = lrp(x, y)[0]["0"]
    ref = unit_relevance(twin, x, y)
    assert torch.allclose(got, ref["0"] + ref["2"], atol=1e-12)


def test_session_over_batches_weight_changes_and_inert_forwards():
    model, x, y = zoo_model("resnet20", {"shortcut": "A"}, [3, 8, 8])
    with torch.no_grad():
        plain = model.eval()(x)
    model.train()
    with RelevanceSession(model) as lrp:
        first = lrp(x[:3], y[:3])[0]
        second = lrp(x[3:], y[3:])[0]
        with torch.no_grad():                         # between calls: the model's own forwards
            out = model(x)
        with torch.no_grad():
            model.fc.weight.mul_(-1.5)                # a weight change is picked up by the next call
        changed = lrp(x[3:], y[3:])[0]
        with torch.inference_mode():                  # callers in inference mode still get relevance
            again = lrp(x[3:], y[3:])[0]
    assert model.training and all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(out, plain)
    want = unit_relevance(model, x[3:], y[3:])
    for n in want:
        assert torch.allclose(changed[n], want[n], atol=1e-12) and torch.allclose(again[n], want[n], atol=1e-12)
    with torch.no_grad():
        model.fc.weight.div_(-1.5)
    for part, sl in ((first, slice(0, 3)), (second, slice(3, 6))):
        single = unit_relevance(model, x[sl], y[sl])
        for n in single:
            assert torch.allclose(part[n], single[n], atol=1e-10), n


def test_functional_op_on_first_layer_output_fails_clearly():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.l1(x)
            h += 1.0                      # functional, in place, on the first weighted layer's output
            return self.l2(h)

    with pytest.raises(ValueError, match=r"frs.*'\(model\)' \(InPlace\) applies 'AddBackward"):
        unit_relevance(InPlace(), torch.randn(3, 4), torch.tensor([0, 1, 1]))


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
