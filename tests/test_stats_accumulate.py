"""The batched statistics pass (prunelab.stats.accumulate) against plain references: shared input/activation
moments only where the tensor is really the same, the softmax − onehot taylor gradient for few and many classes,
cheap input checks, independent result tensors, no silent reuse of a batch buffer."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from prunelab.stats import STAT_NAMES, _probe, collect_statistics
from prunelab.stats.accumulate import ce_grad


class AddOne(nn.Module):
    """Adds 1 to its input in place (a leaf that changes a tensor another layer already used)."""

    def forward(self, x):
        return x.add_(1.0)


class SkipAfterProbe(nn.Module):
    """fc1 → fc2, but fc2 is skipped for batches larger than the 2-sample probe (data-dependent control flow)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc1(x)
        return h if len(x) > 2 else self.fc2(h)


def moments_by_hand(z: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.double()
    return (torch.stack([z[y == c].sum(0) for c in range(k)]),
            torch.stack([(z[y == c] ** 2).sum(0) for c in range(k)]))


def test_input_moments_shared_only_with_the_same_unmodified_tensor():
    torch.manual_seed(0)
    shared = nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 5)), ("relu", nn.ReLU(inplace=True)),
                                        ("fc2", nn.Linear(5, 3))])).double()
    _, aliases = _probe(shared, torch.randn(2, 4, dtype=torch.float64), [("fc1", shared.fc1), ("fc2", shared.fc2)])
    assert aliases == {"fc2": "fc1"}                       # fc2 reads the (in-place) ReLU output itself
    modified = nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 5)), ("relu", nn.ReLU()), ("bump", AddOne()),
                                          ("fc2", nn.Linear(5, 3))])).double()
    _, aliases = _probe(modified, torch.randn(2, 4, dtype=torch.float64),
                        [("fc1", modified.fc1), ("fc2", modified.fc2)])
    assert aliases == {}                                   # same object, but changed in place after the ReLU
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.arange(10) % 3
    for model in (shared, modified):
        stats = collect_statistics(model, x, y, {"activations", "input_activations"}, 3, 4, "cpu")
        with torch.no_grad():
            act1 = torch.relu(model.fc1(x))
            in2 = act1 + 1 if model is modified else act1
        s, q = moments_by_hand(act1, y, 3)
        torch.testing.assert_close(stats["layers"]["fc1"]["act_sum"], s, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats["layers"]["fc1"]["act_sqsum"], q, rtol=1e-12, atol=1e-12)
        s, q = moments_by_hand(in2, y, 3)
        torch.testing.assert_close(stats["layers"]["fc2"]["in_sum"], s, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats["layers"]["fc2"]["in_sqsum"], q, rtol=1e-12, atol=1e-12)


def test_result_tensors_are_independent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.arange(8) % 3
    stats = collect_statistics(model, x, y, set(STAT_NAMES) - {"relevance"}, 3, 3, "cpu")
    first, second = stats["layers"]["0"], stats["layers"]["2"]
    before = {k: v.clone() for k, v in second.items() if torch.is_tensor(v)}
    for v in first.values():
        if torch.is_tensor(v):
            v.fill_(float("nan"))                           # includes act_sum, shared in the pass with 2's in_sum
    for k, v in before.items():
        torch.testing.assert_close(second[k], v)
    assert second["in_sum"].data_ptr() != first["act_sum"].data_ptr()


@pytest.mark.parametrize("k", [3, 20])                      # softmax over a short (transposed path) or long row
def test_ce_grad_is_the_autograd_gradient_of_summed_cross_entropy(k):
    z = torch.randn(7, k, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (7,))
    (expect,) = torch.autograd.grad(nn.functional.cross_entropy(z, y, reduction="sum"), [z])
    torch.testing.assert_close(ce_grad(z.detach(), y), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_taylor_sums_match_per_sample_autograd_with_many_classes(dtype, tol):
    torch.manual_seed(0)
    k = 20
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, k)).to(dtype)
    x, y = torch.randn(11, 6, dtype=dtype), torch.arange(11) % k
    stats = collect_statistics(model, x, y, {"taylor"}, k, 4, "cpu")
    grads = [torch.zeros_like(model[i].weight, dtype=torch.float64) for i in (0, 2)]
    units = [torch.zeros(8, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)]
    for xi, yi in zip(x, y):
        h = torch.relu(model[0](xi[None]))
        z = model[2](h)
        loss = nn.functional.cross_entropy(z, yi[None])
        g0, g2, gh, gz = torch.autograd.grad(loss, [model[0].weight, model[2].weight, h, z])
        grads[0] += g0.double()
        grads[1] += g2.double()
        units[0] += (h * gh)[0].detach().double() ** 2
        units[1] += (z * gz)[0].detach().double() ** 2
    for name, g, u in zip(("0", "2"), grads, units):
        torch.testing.assert_close(stats["layers"][name]["grad_sum"], g, rtol=tol, atol=tol)
        torch.testing.assert_close(stats["layers"][name]["taylor_unit_sq_sum"], u, rtol=tol, atol=tol)


def test_squared_contributions_alone_skip_the_mean():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.arange(6) % 2
    both = collect_statistics(model, x, y, {"contribution_mean", "contribution_sq"}, 2, 4, "cpu")["layers"]["0"]
    sq = collect_statistics(model, x, y, {"contribution_sq"}, 2, 4, "cpu")["layers"]["0"]
    assert "contrib_r_sum" not in sq
    torch.testing.assert_close(sq["contrib_r2_sum"], both["contrib_r2_sum"], rtol=1e-12, atol=1e-12)
    assert sq["contrib_positions"] == both["contrib_positions"] == 6.0


def test_non_finite_inputs_fail_but_a_sum_overflow_does_not():
    model = nn.Sequential(nn.Linear(3, 2))
    y = torch.tensor([0, 1, 0, 1])
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(4, 3)
        x[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            collect_statistics(model, x, y, {"activations"}, 2, 2, "cpu")
    big = torch.full((4, 3), 3e38)                         # finite, but its float32 sum overflows
    stats = collect_statistics(model, big, y, {"input_activations"}, 2, 2, "cpu")
    assert torch.isfinite(stats["layers"]["0"]["in_sum"]).all()
    for labels in (torch.tensor([0, 1, -1, 1]), torch.tensor([0, 1, 2, 1])):
        with pytest.raises(ValueError, match=r"labels y must lie in \[0, 2\)"):
            collect_statistics(model, torch.zeros(4, 3), labels, {"activations"}, 2, 2, "cpu")


def test_a_layer_missing_from_a_later_batch_raises_instead_of_reusing_the_buffer():
    torch.manual_seed(0)
    model = SkipAfterProbe()
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    with pytest.raises(RuntimeError, match="fc2"):
        collect_statistics(model, x, y, {"input_activations"}, 3, 3, "cpu")
    with pytest.raises(RuntimeError, match="fc2"):
        collect_statistics(model, x, y, {"contribution_mean"}, 3, 3, "cpu")
    assert not model._forward_hooks and not model.fc2._forward_hooks      # hooks removed after the error


def test_cpu_conv_model_is_placed_channels_last_and_mode_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)).eval()
    assert not model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(4, 2, 4, 4), torch.tensor([0, 1, 0, 1])
    collect_statistics(model, x, y, {"activations"}, 2, 2, "cpu")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(m.training for m in model.modules())
