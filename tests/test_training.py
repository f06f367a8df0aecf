"""Training loop: optimiser semantics, schedules, determinism, validation-based selection."""
import copy

import pytest
import torch
from torch import nn

from prunelab.training import SGD, lr_at, train_baseline


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.0, 0.0, False), (0.9, 5e-4, False), (0.9, 1e-3, True)])
def test_sgd_matches_torch_optim(momentum, wd, nesterov):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    b = copy.deepcopy(a)
    ours = SGD(a.parameters(), lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for step in range(5):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7)


def test_lr_schedules():
    cfg = {"lr": 0.1, "epochs": 10, "schedule": "multistep", "milestones": [0.5, 0.8], "gamma": 0.1}
    assert [round(lr_at(e, cfg), 6) for e in (0, 4, 5, 7, 8, 9)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    cfg = {"lr": 0.1, "epochs": 200, "schedule": "multistep", "milestones": [100, 150], "gamma": 0.1}
    assert lr_at(99, cfg) == pytest.approx(0.1) and lr_at(100, cfg) == pytest.approx(0.01)
    assert lr_at(150, cfg) == pytest.approx(0.001)
    cos = {"lr": 0.2, "epochs": 4, "schedule": "cosine"}
    assert lr_at(0, cos) == pytest.approx(0.2) and lr_at(2, cos) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, {"lr": 0.1, "epochs": 1, "schedule": "step"})


def test_training_is_deterministic_and_learns(data):
    spec = {"name": "mlp", "options": {"hidden": [32]}}
    cfg = {"epochs": 4, "batch_size": 32, "lr": 0.05}
    m1, _, r1 = train_baseline(data, spec, cfg, seed=3, device=torch.device("cpu"))
    m2, _, r2 = train_baseline(data, spec, cfg, seed=3, device=torch.device("cpu"))
    assert r1.history == r2.history
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert r1.best_top1_val > 60.0  # digits is easy: far above the 10 % of chance after 4 epochs
    _, _, r3 = train_baseline(data, spec, cfg, seed=4, device=torch.device("cpu"))
    assert r3.history != r1.history


def test_best_validation_epoch_is_selected(data):
    spec = {"name": "mlp", "options": {"hidden": [16]}}
    cfg = {"epochs": 3, "batch_size": 32, "lr": 0.05, "select": "best_val"}
    _, _, res = train_baseline(data, spec, cfg, seed=0, device=torch.device("cpu"))
    best = max(res.history, key=lambda h: h["top1_val"])
    assert res.best_epoch == best["epoch"] and res.best_top1_val == best["top1_val"]


def test_steps_per_epoch_caps_the_optimiser_steps_of_each_epoch(data):
    from prunelab.models import architecture_for, build_model
    from prunelab.training import train_model

    spec = {"name": "mlp", "options": {"hidden": [16]}}
    steps = []
    for cap in (None, 3):
        model = build_model(architecture_for(spec, data))
        count = [0]
        cfg = {"epochs": 2, "batch_size": 16, "lr": 0.05, "steps_per_epoch": cap}
        res = train_model(model, data, cfg, torch.device("cpu"), seed=0, after_step=lambda: count.__setitem__(0, count[0] + 1))
        steps.append(count[0])
        assert len(res.history) == 2
    n = len(data["train"]["y"])
    assert steps == [2 * -(-n // 16), 2 * 3]
