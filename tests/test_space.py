"""Network pruning spaces: MACs budgets met, seeded sampling, inherited weights, summary statistics, workflow."""
import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from conftest import TINY, copy_run, job_blocks, snakemake
from prunelab.measure import count_macs
from prunelab.models import build_model, prunable_layers
from prunelab.pruning.space import SpaceModel, build_subnetwork, sample_counts, sample_rng, summarize_space
from prunelab.records import METRICS_KEYS

ARCHS = {
    "cnn": ({"name": "cnn", "options": {"widths": [16, 32, 64]}}, [1, 8, 8]),
    "cnn_tiny": ({"name": "cnn", "options": {"widths": [4, 8, 8]}}, [1, 8, 8]),
    "resnet20": ({"name": "resnet20", "options": {}}, [1, 8, 8]),
    "mlp": ({"name": "mlp", "options": {"hidden": [32, 16]}}, [1, 8, 8]),
    "lenet5": ({"name": "lenet5", "options": {}}, [1, 28, 28]),  # flatten -> linear: units feed many inputs
}


def dense_model(key):
    spec, shape = ARCHS[key]
    arch = {**spec, "in_shape": shape, "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(arch).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong channel shows in the logits
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.uniform_(-0.2, 0.2)
    return model, arch, torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", list(ARCHS))
def test_every_sample_lands_within_2pct_of_its_regime(key):
    model, arch, x = dense_model(key)
    space = SpaceModel(model, x)
    dense_macs = count_macs(model, arch["in_shape"])
    for regime in (0.25, 0.5, 0.75):
        for i in range(2):
            counts, _ = sample_counts(space, regime, sample_rng(0, regime, i))
            sub, new_arch, info = build_subnetwork(model, arch, space, counts, x)
            macs = count_macs(sub, arch["in_shape"])  # the physical network, counted by hooks
            assert abs(macs / (regime * dense_macs) - 1) <= 0.02, (key, regime, i, macs / dense_macs)
            rebuilt = build_model(new_arch)
            rebuilt.load_state_dict(sub.state_dict(), strict=True)
            assert count_macs(rebuilt, arch["in_shape"]) == macs
            layers, dense_layers = dict(prunable_layers(sub)), dict(prunable_layers(model))
            head = list(layers)[-1]
            assert layers[head].weight.shape[0] == 10 and info["layer_kept"][head] == 1.0
            if key == "resnet20":  # residual streams intact: stem and every block's conv2 keep all channels
                for n in ["conv1"] + [n for n in layers if n.endswith("conv2")]:
                    assert layers[n].weight.shape[0] == dense_layers[n].weight.shape[0], n


def test_regime_below_the_one_unit_floor_is_refused():
    model, arch, x = dense_model("cnn_tiny")
    with pytest.raises(ValueError, match="floor"):
        sample_counts(SpaceModel(model, x), 0.01, sample_rng(0, 0.01, 0))


def test_same_seed_same_samples_other_seed_or_index_differs():
    model, arch, x = dense_model("resnet20")
    space = SpaceModel(model, x)
    draw = lambda seed, i: sample_counts(space, 0.5, sample_rng(seed, 0.5, i))[0]  # noqa: E731
    first = [draw(0, i) for i in range(3)]
    assert first == [draw(0, i) for i in range(3)]
    assert all(a != b for a, b in zip(first, [draw(1, i) for i in range(3)]))
    assert len({tuple(c) for c in first}) == 3


def test_inherit_keeps_the_highest_l1_channels_with_the_baseline_weights():
    model, arch, x = dense_model("cnn")
    space = SpaceModel(model, x)
    counts, _ = sample_counts(space, 0.5, sample_rng(3, 0.5, 0))
    sub, _, info = build_subnetwork(model, arch, space, counts, x, init="inherit")
    keep = {}
    for name, k in zip(("conv1", "conv2", "conv3"), counts):
        l1 = getattr(model, name).weight.detach().abs().sum((1, 2, 3))
        keep[name] = torch.sort(torch.topk(l1, k).indices).values
        assert info["kept_units"][name] == k
    assert torch.equal(sub.conv1.weight, model.conv1.weight[keep["conv1"]])
    assert torch.equal(sub.conv2.weight, model.conv2.weight[keep["conv2"]][:, keep["conv1"]])
    assert torch.equal(sub.fc.weight, model.fc.weight[:, keep["conv3"]])
    assert torch.equal(sub.bn2.running_var, model.bn2.running_var[keep["conv2"]])
    scratch, _, _ = build_subnetwork(model, arch, space, counts, x, init="scratch", seed=0)
    assert [m.weight.shape for _, m in prunable_layers(scratch)] == [m.weight.shape for _, m in prunable_layers(sub)]
    assert not torch.equal(scratch.conv2.weight, sub.conv2.weight)
    assert torch.equal(scratch.bn2.running_mean, torch.zeros(counts[1]))  # fresh BN, never trained


def synthetic_records(rng):
    recs = []
    for regime in (0.25, 0.5):
        for i in range(12):
            params = int(rng.integers(500, 5000))
            macs = int(regime * 100_000 * rng.uniform(0.98, 1.02))
            recs.append({"space_regime": regime, "sample": i, "macs_dense": 100_000, "macs_effective": macs,
                         "params_total": params, "macs_params_ratio": macs / params,
                         "top1_val": float(rng.integers(40, 60)), "top1_test": float(rng.uniform(30, 95))})
    structured = [{"method": "magnitude", "ratio_requested": r, "macs_effective": m, "params_total": 1000,
                   "top1_val": 55.0, "top1_test": 70.0} for r, m in ((0.5, 26_000), (0.3, 49_000), (0.2, 60_000))]
    return recs, structured


def test_summary_equals_a_direct_numpy_scipy_computation():
    recs, structured = synthetic_records(np.random.default_rng(0))
    summary = summarize_space(recs, structured)
    assert [s["space_regime"] for s in summary["regimes"]] == [0.25, 0.5]
    for s in summary["regimes"]:
        mine = [r for r in recs if r["space_regime"] == s["space_regime"]]
        err = np.array([100 - r["top1_test"] for r in mine])
        ratio = np.array([r["macs_params_ratio"] for r in mine])
        assert s["edf"]["x"] == pytest.approx(np.sort(err), abs=0)
        assert s["edf"]["fraction"] == pytest.approx(np.arange(1, 13) / 12)
        assert s["correlation"]["pearson_r"] == pytest.approx(np.corrcoef(ratio, err)[0, 1], rel=1e-12)
        rho = np.corrcoef(stats.rankdata(ratio), stats.rankdata(err))[0, 1]
        assert s["correlation"]["spearman_rho"] == pytest.approx(rho, rel=1e-12)
        assert s["correlation"]["spearman_p"] == pytest.approx(stats.spearmanr(ratio, err).pvalue, rel=1e-12)
        top_val = max(r["top1_val"] for r in mine)
        best = min((r for r in mine if r["top1_val"] == top_val), key=lambda r: 100 - r["top1_test"])
        assert s["best"]["sample"] == best["sample"]
        decile = np.argsort(err, kind="stable")[: math.ceil(12 / 10)]
        assert s["best_decile"]["samples"] == [mine[j]["sample"] for j in decile]
        band = (s["best_decile"]["ratio_min"], s["best_decile"]["ratio_max"])
        assert band == (ratio[decile].min(), ratio[decile].max())
        near = [r["ratio_requested"] for r in structured
                if abs(r["macs_effective"] - s["space_regime"] * 100_000) <= 0.05 * s["space_regime"] * 100_000]
        assert [r["ratio_requested"] for r in s["structured"]] == sorted(near) and near  # one match per regime
        assert s["best_minus_structured_top1"] == pytest.approx(best["top1_test"] - 70.0)


@pytest.mark.e2e
def test_workflow_samples_and_summary(tiny_reference, tmp_path):
    """A space on a copy of the session's tiny run, its first regime the MACs of the run's structured magnitude
    model: the comparison with the fine-tuned structured models is real."""
    wd = copy_run(tiny_reference, tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    root = wd / "results" / cfg["experiment"]
    finetuned = {p.parts[-4]: json.loads(p.read_text())
                 for p in root.glob("finetuned/cnn/standard/seed0/*/structured/r0.50/metrics.json")}
    m = finetuned["magnitude"]
    kept = round(m["macs_effective"] / m["macs_dense"], 2)  # a regime the structured model matches
    cfg["space"] = {"enabled": True, "archs": ["cnn"], "regimes": [kept, 0.6], "samples": 3, "epochs": 1}
    (wd / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "space/cnn/seed0/summary.json"
    run = snakemake(wd, "--configfile", "c.yaml", "--cores", "2", str(out.relative_to(wd)))
    assert {r for r, _, _ in job_blocks(run.stdout)} == {"pruning_space", "space_summary"}   # nothing upstream
    summary = json.loads(out.read_text())
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [float(r["space_regime"]) for r in rows] == [kept, 0.6]
    for s, row in zip(summary["regimes"], rows):
        recs = [json.loads((root / f"space/cnn/seed0/regime{s['space_regime']:.2f}/sample{i}/metrics.json").read_text())
                for i in range(3)]
        for r in recs:
            assert r["stage"] == "space" and set(METRICS_KEYS) <= set(r) and r["regime"] == "standard"
            assert abs(r["macs_effective"] / (r["space_regime"] * r["macs_dense"]) - 1) <= 0.02
            assert r["macs_params_ratio"] == r["macs_effective"] / r["params_total"]
        assert len({json.dumps(r["kept_units"]) for r in recs}) == 3
        err = np.array([100 - r["top1_test"] for r in recs])
        assert s["edf"]["x"] == sorted(err.tolist())
        ratio = np.array([r["macs_params_ratio"] for r in recs])
        if np.ptp(err) > 0:
            assert s["correlation"]["pearson_r"] == pytest.approx(np.corrcoef(ratio, err)[0, 1])
        assert int(row["best_sample"]) == s["best"]["sample"]
    near = sorted(meth for meth, r in finetuned.items()
                  if abs(r["macs_effective"] / (kept * r["macs_dense"]) - 1) <= 0.05)   # the summary's ±5 %
    assert [r["method"] for r in summary["regimes"][0]["structured"]] == near and "magnitude" in near
    assert (root / "logs/pruning_space/cnn/seed0/regime0.60/sample2.log").exists()
    assert (root / "space/cnn/seed0/regime0.60/sample2/run.json").exists()
