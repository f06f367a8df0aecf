"""The pruning stage (prunelab.pruning.stage.prune_model): one-shot and iterative schedules, the shared fine-tuning
budget, bad requests refused early."""
import copy
import subprocess
import sys

import pytest
import torch

from prunelab.io import load_model, save_model
from prunelab.measure import evaluation
from prunelab.methods import score_model
from prunelab.pruning.masks import masks_hold
from prunelab.pruning.schedules import finetune_budgets, finetune_model, finetune_split
from prunelab.pruning.stage import prune_model, rescorer
from prunelab.settings import FinetuneSettings
from prunelab.training import train_baseline, train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(data):
    model, arch, _ = train_baseline(data, {"name": "cnn", "options": {"widths": [4, 8, 8]}},
                                    {"epochs": 2, "batch_size": 32, "lr": 0.05}, seed=0, device=CPU)
    return data, model, arch


def test_finetune_budget_is_shared_by_iterative_rounds():
    ft = {"epochs": 10}
    assert finetune_split(ft, {"schedule": "oneshot"}) == (0, 10)
    per_round, last = finetune_split(ft, {"schedule": "iterative", "iterative_steps": 3})
    assert (per_round, last) == (3, 4) and 2 * per_round + last == 10


def test_iterative_reaches_target_with_nested_masks(trained):
    data, model, arch = trained
    scores = score_model(model, None, "magnitude")
    seen = []
    cfg = {"schedule": "iterative", "iterative_steps": 3, "scope": "global"}
    pruned, _, masks, info = prune_model(model, arch, scores, "unstructured", 0.8, data, cfg, CPU, seed=0,
                                         rescore=lambda m: seen.append(1) or score_model(m, None, "magnitude"),
                                         finetune={"epochs": 3, "batch_size": 32, "lr": 0.01})
    assert info["rounds"] == 3 and len(seen) == 2  # re-scored before rounds 2 and 3
    assert info["sparsity_achieved"] == pytest.approx(0.8, abs=0.01)
    assert masks_hold(pruned, masks)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), trained[1].state_dict().values()))


def test_iterative_structured_removes_channels_in_rounds_to_the_oneshot_count(trained, tmp_path):
    data, model, arch = trained
    scores = score_model(model, None, "magnitude")
    _, _, _, once = prune_model(model, arch, scores, "structured", 0.5, data, {"scope": "global"}, CPU, seed=0)
    widths = []

    def rescore(m):  # the current, physically thinner model is re-scored before rounds 2 and 3
        widths.append(sum(layer.out_channels for n, layer in m.named_modules() if n.startswith("conv")))
        return score_model(m, None, "magnitude")

    cfg = {"schedule": "iterative", "iterative_steps": 3, "scope": "global"}
    pruned, new_arch, masks, info = prune_model(model, arch, scores, "structured", 0.5, data, cfg, CPU, seed=0,
                                                rescore=rescore,
                                                finetune={"epochs": 3, "batch_size": 32, "lr": 0.01})
    assert masks is None and info["rounds"] == 3 and len(info["removed_rounds"]) == 3
    assert widths[0] > widths[1] > sum(p.out_channels for n, p in pruned.named_modules() if n.startswith("conv"))
    assert info["n_prunable"] == once["n_prunable"] and info["n_removed"] == once["n_removed"]
    assert info["ratio_achieved"] == pytest.approx(once["ratio_achieved"])
    convs = {n: m.out_channels for n, m in pruned.named_modules() if n.startswith("conv")}
    dense = {n: m.out_channels for n, m in model.named_modules() if n.startswith("conv")}
    assert info["layer_kept"] == pytest.approx({**{n: convs[n] / dense[n] for n in dense}, "fc": 1.0})
    save_model(tmp_path / "m.pt", pruned, new_arch)  # the final architecture rebuilds from data
    reloaded, _, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), pruned.eval()(x))


def test_iterative_rescore_recollects_statistics(trained):
    data, model, arch = trained
    rescore = rescorer("screening", {"lambda": 0.5}, data, {"samples": 64, "batch_size": 32}, 0, CPU)
    scores = rescore(model)
    assert scores["method"] == "screening" and set(scores["layers"]) == {"conv1", "conv2", "conv3", "fc"}


def test_oneshot_unstructured_then_finetune_keeps_masks(trained, tmp_path):
    data, model, arch = trained
    scores = score_model(model, None, "magnitude")
    pruned, _, masks, info = prune_model(model, arch, scores, "unstructured", 0.5, data, {}, CPU, seed=0)
    finetune_model(pruned, masks, data, {"batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
                   epochs=2, device=CPU, seed=0)
    assert masks_hold(pruned, masks)


def test_structured_checkpoint_reloads_in_a_fresh_process(trained, tmp_path):
    data, model, arch = trained
    scores = score_model(model, None, "magnitude")
    pruned, new_arch, _, info = prune_model(model, arch, scores, "structured", 0.5, data, {}, CPU, seed=0)
    assert sum(m.out_channels for n, m in pruned.named_modules() if n.startswith("conv")) < 4 + 8 + 8
    path = tmp_path / "model.pt"
    save_model(path, pruned, new_arch)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; from prunelab.io import load_model; m, _, _ = load_model(sys.argv[1]); m.eval(); "
            "torch.save(m(torch.load(sys.argv[2])).detach(), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True)
    pruned.eval()
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), pruned(x).detach(), rtol=0, atol=0)
    reloaded, _, _ = load_model(path)
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in pruned.parameters())


@pytest.mark.parametrize("ratio,granularity,cfg,needle", [
    (0.0, "unstructured", {}, "ratio"),
    (1.0, "structured", {}, "ratio"),
    (0.5, "diagonal", {}, "granularity"),
    (0.5, "structured", {"schedule": "iterative", "iterative_steps": 0}, "steps"),
])
def test_bad_requests_fail_before_work(trained, ratio, granularity, cfg, needle):
    data, model, arch = trained
    with pytest.raises(ValueError, match=needle):
        prune_model(model, arch, score_model(model, None, "magnitude"), granularity, ratio, data, cfg, CPU, 0)


def test_scores_of_another_architecture_are_refused(trained):
    data, model, arch = trained
    from prunelab.models import build_model

    other = build_model({"name": "mlp", "options": {"hidden": [16]}, "in_shape": [1, 8, 8], "num_classes": 10})
    with pytest.raises(ValueError, match="layer"):
        prune_model(model, arch, score_model(other, None, "magnitude"), "unstructured", 0.5, data, {}, CPU, 0)


def test_every_structured_method_prunes_a_conv_model(trained):
    """Scores of every structured method, as the workflow makes them, prune the model physically. bn_scale gives
    the classifier no score (no BatchNorm follows it); its outputs are never pruned, so none is needed."""
    from prunelab.methods import METHODS, inapplicable_reason, required_statistics
    from prunelab.stats import collect_baseline_statistics

    data, model, arch = trained
    methods = [m for m, spec in METHODS.items() if "structured" in spec.granularities
               and inapplicable_reason(m, model) is None]
    assert {"bn_scale", "frs", "hrank", "fpgm", "magnitude"} <= set(methods)
    stats = collect_baseline_statistics(model, data, required_statistics(methods), {"samples": 64, "batch_size": 32},
                                        0, CPU, {"alpha": 2.0, "beta": 1.0})
    for method in methods:
        scores = score_model(model, stats, method)
        pruned, new_arch, masks, info = prune_model(model, arch, scores, "structured", 0.5, data,
                                                    {"scope": "global"}, CPU, seed=0)
        assert masks is None and info["n_removed"] > 0, method
        assert pruned(torch.zeros(2, *data["in_shape"])).shape == (2, data["num_classes"]), method


def test_budgets_read_from_one_run_equal_a_run_stopped_at_the_budget(trained):
    """The model of a smaller budget is the best on validation among its epochs of the one long run: the same
    weights as the same run stopped after that budget's steps (the lr schedule spans the long run in both)."""
    data, model, arch = trained
    ft = {"epochs": 4, "steps_per_epoch": 3, "batch_size": 32, "lr": 0.05, "budgets": [6, 12]}
    budgets = finetune_budgets(ft, {}, len(data["train"]["y"]))
    assert budgets == {6: 2, 12: 4}
    long = copy.deepcopy(model)
    result = finetune_model(long, None, data, ft, 4, CPU, seed=0, budgets=budgets)
    assert result.steps == 12 and set(result.snapshots) == {2, 4}
    stopped = copy.deepcopy(model)
    short = train_model(stopped, data, FinetuneSettings.of(ft), CPU, 0, max_steps=6)
    assert short.steps == 6 and result.snapshots[2].best_epoch == short.best_epoch
    assert all(torch.equal(stopped.state_dict()[k], v) for k, v in result.snapshots[2].state.items())
    assert all(torch.equal(long.state_dict()[k], v) for k, v in result.snapshots[4].state.items())
    fields = {"top1_val": 1.0, "top1_test": 2.0, "top5_test": 3.0, "loss_test": 4.0}
    rows = evaluation.budget_fields(long, result, budgets, fields, data, CPU)
    assert [r["budget_steps"] for r in rows] == [6, 12] and rows[1]["top1_test"] == 2.0
    assert rows[0]["top1_test"] == evaluation.test_fields(stopped, data, CPU)["top1_test"]


def test_budgets_that_are_not_whole_epochs_are_refused():
    with pytest.raises(ValueError, match="multiples of the 3 steps of an epoch"):
        finetune_budgets({"epochs": 2, "steps_per_epoch": 3, "budgets": [4, 6]}, {}, 1000)
    with pytest.raises(ValueError, match="the largest must be the run"):
        finetune_budgets({"epochs": 2, "steps_per_epoch": 3, "budgets": [3]}, {}, 1000)
    with pytest.raises(ValueError, match="iterative"):
        finetune_budgets({"epochs": 4, "steps_per_epoch": 3, "budgets": [3, 6]},
                         {"schedule": "iterative", "iterative_steps": 2}, 1000)
