"""The fast paths of prunelab.stats.lrp (stacked products, transposed convs, input-relevance skip, chain pass,
sessions) against the plain formulas and against each other, in float64."""

import itertools

import pytest
import torch
import torch.nn as nn

from prunelab.models import build_model, prunable_layers
from prunelab.stats.lrp import RelevanceSession, relevance, unit_relevance
from prunelab.stats.lrp_rules import EPS, _AlphaBeta, alpha_beta_step

CONVS = [dict(stride=s, padding=p, dilation=d, groups=g)
         for s, p, d, g in itertools.product((1, 2), (0, 1), (1, 2), (1, 2))]


def reference_step(m, a, r, alpha, beta):
    """The αβ step as four plain products + conv2d_input (the formula before the fast paths)."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        fwd, bwd = (lambda x, k: x @ k.T), (lambda s, k: s @ k)
    else:
        geo = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        fwd = lambda x, k: nn.functional.conv2d(x, k, None, **geo)  # noqa: E731
        bwd = lambda s, k: torch.nn.grad.conv2d_input(a.shape, k, s, **geo)  # noqa: E731
    wp, wn, ap, an = w.clamp(min=0), w.clamp(max=0), a.clamp(min=0), a.clamp(max=0)
    zp, zn = fwd(ap, wp) + fwd(an, wn), fwd(ap, wn) + fwd(an, wp)
    sp, sn = alpha * r / (zp + EPS), beta * r / (zn - EPS)
    return ap * (bwd(sp, wp) - bwd(sn, wn)) + an * (bwd(sp, wn) - bwd(sn, wp)), zp, zn


def conv_case(cfg, size=9, cin=4, cout=6, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, bias=True, **cfg).double()
    return conv, torch.randn(2, cin, size, size, dtype=torch.float64)


@pytest.mark.parametrize("cfg", CONVS)
@pytest.mark.parametrize("signed", [True, False])
def test_conv_stacked_forward_and_transposed_product(cfg, signed):
    conv, a = conv_case(cfg)
    a = a if signed else a.relu()
    rule = _AlphaBeta(conv, 2.0, 1.0)
    z, zs = rule.forward(a, signed)
    ref, zp, zn = reference_step(conv, a, torch.ones_like(conv(a)), 2.0, 1.0)
    assert torch.allclose(z, conv(a), atol=1e-12)                                # the module's output
    assert torch.allclose(zs, torch.cat([zp + EPS, zn - EPS], 1), atol=1e-12)   # [z⁺ + ε; z⁻ − ε]
    s = torch.randn_like(zs)                                                     # transposed product
    want = torch.cat([torch.nn.grad.conv2d_input(a.shape, k, sk, stride=cfg["stride"], padding=cfg["padding"],
                                                 dilation=cfg["dilation"], groups=cfg["groups"])[None]
                      for k, sk in zip((2.0 * conv.weight.clamp(min=0), -conv.weight.clamp(max=0)),
                                       s.split(6, 1))]).sum(0).detach()
    assert torch.allclose(rule._transposed(s, rule.pos[1], a.shape), want, atol=1e-12)


@pytest.mark.parametrize("cfg", CONVS)
@pytest.mark.parametrize("signed", [True, False])
def test_conv_step_matches_plain_formula(cfg, signed):
    conv, a = conv_case(cfg, size=8, seed=1)   # even size: output_padding differs from the odd case
    a = a if signed else a.relu()
    r = torch.randn_like(conv(a))
    assert torch.allclose(alpha_beta_step(conv, a, r, 3.0, 2.0), reference_step(conv, a, r, 3.0, 2.0)[0],
                          atol=1e-10)


@pytest.mark.parametrize("signed", [True, False])
def test_linear_stacked_forward_and_step(signed):
    torch.manual_seed(2)
    lin = nn.Linear(7, 5).double()
    a = torch.randn(3, 4, 7, dtype=torch.float64)                                 # extra leading dims
    a = a if signed else a.relu()
    z, zs = _AlphaBeta(lin, 2.0, 1.0).forward(a, signed)
    assert torch.allclose(z, lin(a), atol=1e-12) and zs.shape == (3, 4, 10)
    r = torch.randn(3, 4, 5, dtype=torch.float64)
    assert torch.allclose(alpha_beta_step(lin, a, r, 2.0, 1.0), reference_step(lin, a, r, 2.0, 1.0)[0],
                          atol=1e-10)


def test_channels_last_float32_output_matches_module():
    torch.manual_seed(3)
    conv = nn.Conv2d(16, 32, 3, padding=1).to(memory_format=torch.channels_last)
    a = torch.randn(8, 16, 12, 12).relu().contiguous(memory_format=torch.channels_last)
    z, zs = _AlphaBeta(conv, 2.0, 1.0).forward(a, False)
    want = conv(a).detach()
    assert (z - want).abs().max() <= 1e-5 * want.abs().max()
    assert zs.is_contiguous(memory_format=torch.channels_last)


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
