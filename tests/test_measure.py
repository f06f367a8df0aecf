"""Cost metrics against independent references: torch's FLOP counter, hand counts, brute-force top-k."""
import torch
from torch import nn

from prunelab import measure as M


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_macs_hand_count_and_flop_counter():
    model = small_cnn()
    hand = 8 * 16 * 16 * 3 * 9 + 16 * 8 * 8 * (8 // 2) * 9 + 16 * 10
    assert M.count_macs(model, (3, 16, 16)) == hand
    assert M.flop_counter_macs(model, (3, 16, 16)) == hand


def test_effective_macs_scale_with_density():
    model = small_cnn()
    with torch.no_grad():
        model[0].weight[: 4] = 0  # half of the first conv's weights
    per_layer = M.layer_macs(model, (3, 16, 16))
    expected = per_layer["0"] * 0.5 + per_layer["2"] + per_layer["6"]
    assert M.effective_macs(model, (3, 16, 16)) == round(expected)
    assert M.count_nonzero_params(model) == M.count_params(model) - 4 * 27
    assert abs(M.prunable_weight_sparsity(model) - 108 / (216 + 16 * 4 * 9 + 160)) < 1e-12


def test_evaluate_topk_matches_brute_force():
    torch.manual_seed(0)
    model = nn.Linear(5, 7)
    x, y = torch.randn(50, 5), torch.randint(0, 7, (50,))
    res = M.evaluate(model, x, y, batch_size=16)
    logits = model(x).detach()
    top1 = sum(int(logits[i].argmax() == y[i]) for i in range(50)) / 50 * 100
    top5 = sum(int(y[i] in logits[i].topk(5).indices) for i in range(50)) / 50 * 100
    assert res["top1"] == top1 and res["top5"] == top5
    assert abs(res["loss"] - float(nn.functional.cross_entropy(logits, y))) < 1e-5


def test_latency_is_positive_median():
    ms = M.measure_latency(small_cnn(), (3, 16, 16), batch=4, device="cpu", warmup=1, repeats=3)
    assert 0 < ms < 5000
