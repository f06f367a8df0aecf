"""ContributionRegularizer against a direct per-sample, per-output computation of r and its entropy."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from prunelab.models import build_model
from prunelab.stats import CONTRIBUTION_EPS
from prunelab.training.regularizers import ContributionRegularizer


def net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(2, 3, 3, stride=2, padding=1)), ("relu", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(3 * 3 * 3, 4)),
    ])).double()
    with torch.no_grad():
        model.conv.weight[1, 0, 1, 1] = 0.0                        # exact zeros: no NaN in values or grads
    return model


def receptive_fields(layer: nn.Conv2d, a: torch.Tensor):
    """Yield (sample, position) input patches C×kh×kw of a stride/padding conv, one at a time."""
    (sh, sw), (ph, pw), (kh, kw) = layer.stride, layer.padding, layer.kernel_size
    padded = nn.functional.pad(a, (pw, pw, ph, ph))
    for x in padded:
        for p in range(0, padded.shape[2] - kh + 1, sh):
            for q in range(0, padded.shape[3] - kw + 1, sw):
                yield x[:, p:p + kh, q:q + kw]


def direct(model: nn.Sequential, x: torch.Tensor, kind: str) -> torch.Tensor:
    """R by explicit loops over samples, positions and output units."""
    a_conv = x
    a_fc = model.flatten(model.relu(model.conv(x)))
    if kind == "contribution_l1":
        r = 0.0
        for layer, a in ((model.conv, a_conv), (model.fc, a_fc)):
            patches = list(receptive_fields(layer, a)) if a.dim() == 4 else list(a)
            r = r + sum((layer.weight.abs() * p.abs()).sum() for p in patches) / len(patches)
        return r
    means = []
    for layer, a in ((model.conv, a_conv), (model.fc, a_fc)):
        patches = list(receptive_fields(layer, a)) if a.dim() == 4 else list(a)
        entropies = []
        for p in patches:
            for j in range(layer.weight.shape[0]):
                c = (layer.weight[j] * p).abs()
                r = c / (c.sum() + CONTRIBUTION_EPS)
                entropies.append(-torch.where(r > 0, r * torch.log(r.clamp(min=1e-300)), 0.0).sum())
        means.append(torch.stack(entropies).mean())
    return torch.stack(means).mean()


@pytest.mark.parametrize("kind", ["contribution_entropy", "contribution_l1"])
def test_value_and_gradient_match_direct_computation(kind):
    model = net()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    reg = ContributionRegularizer(model, kind)
    model(x)
    value = reg.value()
    grads = torch.autograd.grad(value, [model.conv.weight, model.fc.weight])
    ref = direct(model, x, kind)
    ref_grads = torch.autograd.grad(ref, [model.conv.weight, model.fc.weight])
    torch.testing.assert_close(value, ref, rtol=1e-9, atol=1e-12)
    for g, rg in zip(grads, ref_grads):
        assert torch.isfinite(g).all() and g.abs().sum() > 0        # the gradient reaches the weights
        torch.testing.assert_close(g, rg, rtol=1e-7, atol=1e-10)
    reg.remove()


def test_entropy_is_zero_for_one_hot_contributions_and_log_fan_in_for_uniform():
    layer = nn.Linear(4, 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]]))
    reg = ContributionRegularizer(nn.Sequential(layer), "contribution_entropy")
    layer(torch.ones(3, 4, dtype=torch.float64))
    # output 0: one contributing input (H = 0); output 1: four equal ones (H = log 4)
    torch.testing.assert_close(reg.value(), torch.tensor(0.5 * torch.log(torch.tensor(4.0)).item(),
                                                         dtype=torch.float64))


def test_training_step_on_zoo_model_and_remove():
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "options": {"widths": [4, 6]}, "in_shape": [1, 6, 6], "num_classes": 3})
    x, y = torch.randn(8, 1, 6, 6), torch.arange(8) % 3
    with ContributionRegularizer(model, "contribution_entropy") as reg:
        loss = nn.functional.cross_entropy(model(x), y) + 0.1 * reg.value()
        loss.backward()
        assert all(torch.isfinite(m.weight.grad).all() for m in (model.conv1, model.conv2, model.fc))
        with pytest.raises(RuntimeError, match="run a forward pass"):
            reg.value()                                              # inputs released after value()
    assert not reg.handles
    model(x)
    assert reg.inputs == {}                                          # hooks gone


def test_bad_kind_fails():
    with pytest.raises(ValueError, match=r"unknown regularizer kind 'entropy'; valid kinds"):
        ContributionRegularizer(net(), "entropy")
