"""Physical structured pruning (prunelab.pruning.removal) against the masked dense model and hand counts."""

import pytest
import torch
from torch import nn

import prunelab.pruning.removal as structured
from prunelab.measure import count_macs, count_params
from prunelab.measure.deploy import EquivalenceError, fold_batchnorm
from prunelab.models import build_model, prunable_layers
from prunelab.models.graph import following_bn
from prunelab.pruning.removal import masked_dense_model, prune_selected
from prunelab.pruning.selection import select_structured, select_structured_groups


def prune_physically(model, a, scores, ratio, x, prune=None, residual="inner"):
    """The two primitives this module tests: selection, then physical removal → (pruned, new_arch, info)."""
    remove, groups, counts = select_structured_groups(model, scores, ratio, prune, residual=residual, example_input=x)
    pruned, new_arch, info = prune_selected(model, a, remove, groups, x)
    return pruned, new_arch, {**counts, **info}


def make(name, in_shape, **options):
    a = {"name": name, "options": options, "in_shape": list(in_shape), "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(a)
    with torch.no_grad():  # non-trivial BN: a BN left unmasked then shifts the logits
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    return model.eval(), a


def l1_scores(model):
    """Magnitude scores, L1 norm of each unit's incoming weights (Li et al. 2017)."""
    return {"method": "magnitude", "config": {}, "layers": {
        n: {"unstructured": m.weight.detach().abs(), "structured": m.weight.detach().abs().flatten(1).sum(1)}
        for n, m in prunable_layers(model)}}


CASES = [
    ("mlp", (1, 8, 8), {}, "inner"),
    ("cnn", (3, 8, 8), {}, "inner"),
    ("lenet5", (1, 28, 28), {}, "inner"),
    ("vgg11", (3, 32, 32), {}, "inner"),
    ("resnet20", (3, 16, 16), {"shortcut": "A"}, "inner"),
    ("resnet20", (3, 16, 16), {"shortcut": "B"}, "inner"),
    ("resnet20", (3, 16, 16), {"shortcut": "B"}, "all"),
    ("resnet56", (3, 16, 16), {"shortcut": "B"}, "all"),
]


@pytest.mark.parametrize("name,in_shape,options,residual", CASES,
                         ids=[f"{c[0]}{c[2].get('shortcut', '')}-{c[3]}" for c in CASES])
def test_pruned_equals_masked_dense_and_rebuilds(name, in_shape, options, residual):
    model, a = make(name, in_shape, **options)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, *in_shape)
    scores = l1_scores(model)
    pruned, new_arch, info = prune_physically(model, a, scores, 0.5, x, residual=residual)
    # independent reference: the masked dense model with the same selection
    remove = select_structured(model, scores, 0.5, residual=residual, example_input=x)
    assert info["removed"] == {n: idx.tolist() for n, idx in remove.items()}
    ref = masked_dense_model(model, remove, x)
    with torch.no_grad():
        y, y_ref, y_dense = pruned(x), ref(x), model(x)
    assert (y - y_ref).abs().max() <= 1e-4
    assert (y_dense - y_ref).abs().max() > 1e-3  # the removal does change the function
    # the input model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in dense_state.items())
    # units really gone: sizes match the selection, and the classifier keeps its outputs
    modules = dict(prunable_layers(model))
    for n, m in prunable_layers(pruned):
        assert m.weight.shape[0] == modules[n].weight.shape[0] - len(remove.get(n, []))
        assert info["layer_kept"][n] == pytest.approx(m.weight.shape[0] / modules[n].weight.shape[0])
    assert 0.45 <= info["ratio_achieved"] <= 0.55
    # rebuilt from data + strict state dict in a fresh model: same logits
    fresh = build_model(new_arch).eval()
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_mlp_macs_and_params_match_hand_counts():
    model, a = make("mlp", (1, 8, 8), hidden=[128, 64])  # 64 -> 128 -> 64 -> 10
    pruned, new_arch, info = prune_physically(model, a, l1_scores(model), 0.5, torch.randn(2, 1, 8, 8),
                                              prune={"scope": "layerwise"})
    assert new_arch["shapes"]["fc1"] == {"in": 64, "out": 64}
    assert new_arch["shapes"]["fc2"] == {"in": 64, "out": 32}
    assert new_arch["shapes"]["fc3"] == {"in": 32, "out": 10}
    assert count_macs(pruned, [1, 8, 8]) == 64 * 64 + 64 * 32 + 32 * 10
    assert count_params(pruned) == (64 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10)
    assert info["n_prunable"] == 128 + 64 and info["n_removed"] == 64 + 32


def test_cnn_macs_match_hand_count():
    model, a = make("cnn", (3, 8, 8), widths=[16, 32, 64])
    pruned, _, _ = prune_physically(model, a, l1_scores(model), 0.5, torch.randn(2, 3, 8, 8),
                                    prune={"scope": "layerwise"})
    # conv1 3->8 and conv2 8->16 on 8x8, pool, conv3 16->32 on 4x4 (3x3 kernels), fc 32->10
    hand = 8 * 8 * 8 * 3 * 9 + 8 * 8 * 16 * 8 * 9 + 4 * 4 * 32 * 16 * 9 + 32 * 10
    assert count_macs(pruned, [3, 8, 8]) == hand


def test_masked_dense_reference_equals_hand_sliced_mlp():
    """The reference itself: zeroing units == computing with the kept rows/columns only."""
    model, _ = make("mlp", (1, 8, 8), hidden=[12, 6])
    remove = {"fc1": torch.tensor([0, 3, 4]), "fc2": torch.tensor([5])}
    ref = masked_dense_model(model, remove)
    x = torch.randn(5, 1, 8, 8)
    k1 = [i for i in range(12) if i not in (0, 3, 4)]
    k2 = [i for i in range(6) if i != 5]
    h = torch.relu(x.flatten(1) @ model.fc1.weight[k1].T + model.fc1.bias[k1])
    h = torch.relu(h @ model.fc2.weight[k2][:, k1].T + model.fc2.bias[k2])
    want = h @ model.fc3.weight[:, k2].T + model.fc3.bias
    with torch.no_grad():
        assert torch.allclose(ref(x), want, atol=1e-6)


def test_bn_lookup_by_trace_agrees_with_registration_order():
    for name, shape, opts in (("vgg11", (3, 32, 32), {}), ("resnet20", (3, 16, 16), {"shortcut": "B"})):
        model, _ = make(name, shape, **opts)
        traced = following_bn(model, torch.randn(1, *shape))
        assert traced == following_bn(model)
        convs = [n for n, m in prunable_layers(model) if isinstance(m, nn.Conv2d)]
        assert set(traced) == set(convs)


def test_equivalence_failure_is_reported(monkeypatch):
    model, a = make("cnn", (3, 8, 8))
    # a wrong reference (nothing masked) must make prune_structured refuse
    monkeypatch.setattr(structured, "masked_dense_model", lambda m, remove, x: m)
    with pytest.raises(EquivalenceError, match=r"max \|Δlogit\|"):
        prune_physically(model, a, l1_scores(model), 0.5, torch.randn(2, 3, 8, 8))


def test_classifier_ignore_and_min_keep_physically():
    model, a = make("vgg11", (3, 32, 32))
    pruned, new_arch, info = prune_physically(model, a, l1_scores(model), 0.99, torch.randn(1, 3, 32, 32),
                                              prune={"min_keep_units": 2, "ignore_layers": ["features.0"]})
    assert pruned.classifier.out_features == 10
    assert new_arch["shapes"]["features.0"]["out"] == 64
    kept = [m.weight.shape[0] for n, m in prunable_layers(pruned) if n not in ("features.0", "classifier")]
    assert min(kept) == 2


def test_fold_batchnorm_keeps_logits():
    model, _ = make("resnet20", (3, 16, 16), shortcut="B")
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
