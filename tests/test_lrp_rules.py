"""The αβ rule of each layer type (prunelab.stats.lrp_rules) against brute-force loops, hand computations and the
plain four-product formula: linear and conv steps (stride, padding, dilation, groups; signed and non-negative
inputs), the stacked forward and transposed products of the fast path, pools and the option-A shortcut."""

import itertools

import pytest
import torch
import torch.nn as nn

from prunelab.models import ShortcutA
from prunelab.stats.lrp import relevance
from prunelab.stats.lrp_rules import EPS, _AlphaBeta, alpha_beta_step


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
