"""The report library against independent numpy/scipy recomputations on synthetic results."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from stat_references import holm_by_definition as _holm
from prunelab.report import build_report
from prunelab.report.__main__ import main as cli
from prunelab.report.collect import COLUMNS

EXP, DS = "synth", "cifar10"
ARCHS = {"vgg11": 91.0, "resnet20": 88.0}
SEEDS = (0, 1, 2)
RATIOS = (0.5, 0.9)
METHODS = ("magnitude", "taylor", "screening")
LAYERS = {"conv1": (8, 3, 3, 3), "conv2": (16, 8, 3, 3), "fc": (10, 64)}
# accuracy drop at ratio 0.5/0.9 relative to the baseline; taylor is clearly worse than magnitude
DROP = {"magnitude": (0.5, 2.0), "taylor": (3.5, 6.0), "screening": (0.6, 2.1), "screening-lambda0.25": (0.9, 2.5)}
STATIC_FIGS = ("top1_vs_compression", "top1_vs_macs", "finetune_recovery", "speedup_measured_vs_theoretical",
               "layer_kept", "agreement_heatmap", "critical_difference", "space_edf", "space_error_vs_ratio",
               "gradual_vs_oneshot")
# one sweep figure per swept method option; no critical-difference diagram over 4 blocks (Demšar's N > 10)
FIGS = tuple(f for f in STATIC_FIGS if f != "critical_difference") + ("sweep_screening_lambda",)


def _rec(**kw) -> dict:
    rec = {k: None for k in COLUMNS}
    rec.update(experiment=EXP, dataset=DS, regime="standard", device="cpu", git_commit="abc", config_hash="h")
    rec.update(kw)
    return rec


def _write(root: Path, rel: str, rec: dict) -> Path:
    p = root / rel / "metrics.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))
    return p


def make_results(root: Path) -> tuple[list[Path], list[dict]]:
    rng = np.random.default_rng(0)
    files, recs = [], []

    def add(rel, rec):
        files.append(_write(root, rel, rec))
        recs.append(rec)

    for arch, acc in ARCHS.items():
        for seed in SEEDS:
            base = round(acc + 0.4 * seed + rng.normal(0, 0.2), 3)
            add(f"baseline/{arch}/standard/seed{seed}",
                _rec(arch=arch, seed=seed, stage="baseline", top1_test=base, top1_val=base + 0.1,
                     params_total=1_000_000, params_nonzero=1_000_000, compression=1.0, macs_dense=5e7,
                     macs_effective=5e7, speedup_theoretical=1.0, latency_ms_b1=2.0 + 0.1 * seed,
                     latency_ms_b64=40.0, epochs=10, wall_s=100.0 + seed))
            for method in METHODS + ("screening-lambda0.25",):
                for gran in ("unstructured", "structured"):
                    if method == "screening-lambda0.25" and (arch, gran) != ("vgg11", "unstructured"):
                        continue
                    for k, r in enumerate(RATIOS):
                        before = round(base - 10 * (k + 1) - rng.uniform(0, 3), 3)
                        top1 = round(base - DROP[method][k] + rng.normal(0, 0.15), 3)
                        comp = 1 / (1 - r) if gran == "unstructured" else 1 / (1 - r) ** 1.8
                        common = dict(arch=arch, seed=seed, method=method, granularity=gran, ratio_requested=r,
                                      sparsity_achieved=r, params_total=1_000_000,
                                      params_nonzero=int(1_000_000 / comp), compression=comp,
                                      speedup_theoretical=comp * (1 + 0.01 * seed),
                                      latency_speedup=(0.7 * comp if gran == "structured" else None),
                                      schedule="oneshot",
                                      layer_kept={n: round(1 - r * (0.5 + 0.4 * j), 4) for j, n in enumerate(LAYERS)})
                        if method.startswith("screening"):
                            common["method_config"] = {"lambda": 0.5 if method == "screening" else 0.25}
                        rel = f"{arch}/standard/seed{seed}/{method}/{gran}/r{r:.2f}"
                        add(f"pruned/{rel}", _rec(stage="pruned", top1_test=before, **common))
                        add(f"finetuned/{rel}", _rec(stage="finetuned", top1_test=top1, top1_test_before_finetune=before,
                                                     epochs=3, wall_s=20.0 + seed, **common))
        for seed in SEEDS:  # gradual FRS (granularity null: structured by default)
            add(f"gradual/{arch}/seed{seed}/frs/r0.50",
                _rec(arch=arch, seed=seed, method="frs", stage="gradual", ratio_requested=0.5,
                     top1_test=round(acc - 0.3 + rng.normal(0, 0.2), 3), compression=3.4, speedup_theoretical=3.5,
                     wall_s=150.0 + seed))
    for i in range(8):  # pruning-space samples
        sr = (0.5, 0.75)[i % 2]
        add(f"space/vgg11/s{i}", _rec(arch="vgg11", seed=0, stage="space", space_regime=sr,
                                      top1_test=round(80 + 10 * sr + rng.normal(0, 1), 3), macs_dense=5e7,
                                      macs_effective=5e7 * sr * rng.uniform(0.9, 1.0), params_total=1_000_000,
                                      params_nonzero=int(1e6 * sr * rng.uniform(0.8, 1.0))))
    return files, recs


def make_scores(root: Path) -> list[Path]:
    gen = torch.Generator().manual_seed(0)
    paths = []
    for seed in (0, 1):
        w = {n: torch.randn(s, generator=gen) for n, s in LAYERS.items()}
        for method in METHODS:
            layers = {}
            for n, s in LAYERS.items():
                u = w[n].abs() if method == "magnitude" else w[n].abs() + torch.rand(s, generator=gen) * (
                    0.3 if method == "taylor" else 1.5)
                if method == "screening":  # coarse scores: ties exercise average ranks and tie-breaking
                    u = (u * 4).round() / 4
                layers[n] = {"unstructured": u.double(), "structured": u.flatten(1).sum(1).double()}
            layers["fc"]["structured"] = None  # the classifier's outputs are never pruned
            p = root / "scores" / "vgg11" / "standard" / f"seed{seed}" / f"{method}.pt"
            p.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"method": method, "config": {}, "layers": layers}, p)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / EXP
    files, recs = make_results(root)
    scores = make_scores(root)
    ref = [{"arch": "vgg11", "method": "magnitude", "granularity": "unstructured", "ratio": 0.9,
            "top1_dense": 92.0, "top1_pruned": 91.5, "compression": 10.0, "source": "Han et al. 2015"}]
    out = root.parent / "report"
    written = build_report(files, out, scores, {"experiment": EXP, "reference": ref})
    return dict(root=root, files=files, recs=recs, scores=scores, out=out, written=written)


def _md_rows(md: str, heading: str) -> list[list[str]]:
    """Cells of the first Markdown table after `heading`."""
    block = md.split(heading, 1)[1]
    lines = [ln for ln in block.split("\n## ")[0].split("\n### ")[0].splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _expected(recs):
    """Per (arch, gran, ratio, method): per-seed finetuned top-1 and paired Δ to the own baseline."""
    base = {(r["arch"], r["seed"]): r["top1_test"] for r in recs if r["stage"] == "baseline"}
    out = {}
    for r in recs:
        if r["stage"] == "finetuned":
            out.setdefault((r["arch"], r["granularity"], r["ratio_requested"], r["method"]), {})[r["seed"]] = r
    return base, out


def test_results_csv_is_every_file(built):
    res = pd.read_csv(built["out"] / "tables" / "results.csv")
    assert len(res) == len(built["files"])
    assert list(res.columns[: len(COLUMNS)]) == COLUMNS
    assert {"layer_kept", "method_config", "schedule", "space_regime"} <= set(res.columns)
    got = sorted(zip(res["stage"], res["arch"], res["seed"], res["top1_test"].round(6)))
    want = sorted((r["stage"], r["arch"], r["seed"], round(r["top1_test"], 6)) for r in built["recs"])
    assert got == want
    row = res[(res["stage"] == "pruned") & (res["method"] == "taylor")].iloc[0]
    assert json.loads(row["layer_kept"])["conv1"] == pytest.approx(1 - row["ratio_requested"] * 0.5)


def _ci(x):
    return f"{x.mean():+.2f} [{x.mean() - stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)):+.2f}, " \
           f"{x.mean() + stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)):+.2f}]"


def test_summary_numbers_bold_and_marker(built):
    summ = pd.read_csv(built["out"] / "tables" / "summary.csv")
    md = (built["out"] / "tables" / "summary.md").read_text()
    base, exp = _expected(built["recs"])
    n_marked = n_tested = 0
    for arch in ARCHS:
        for gran in ("unstructured", "structured"):
            title = f"### {arch} · {DS} · standard · {gran}" + (" (units)" if gran == "structured" else "")
            rows = _md_rows(md, title + "\n")
            family = {}  # (ratio, method) -> raw paired t-test p vs magnitude: the table is one Holm family
            for r in RATIOS:
                for m in DROP:
                    if m != "magnitude" and (arch, gran, r, m) in exp:
                        top1 = np.array([exp[(arch, gran, r, m)][s]["top1_test"] for s in SEEDS])
                        mag = np.array([exp[(arch, gran, r, "magnitude")][s]["top1_test"] for s in SEEDS])
                        family[(r, m)] = stats.ttest_rel(top1, mag).pvalue
            holm = dict(zip(family, _holm(list(family.values()))))
            for r in RATIOS:
                means = {m: np.mean([x["top1_test"] for x in exp[(arch, gran, r, m)].values()])
                         for m in DROP if (arch, gran, r, m) in exp}
                for m, seeds in ((m, exp[(arch, gran, r, m)]) for m in means):
                    top1 = np.array([seeds[s]["top1_test"] for s in SEEDS])
                    delta = top1 - np.array([base[(arch, s)] for s in SEEDS])
                    row = summ[(summ["arch"] == arch) & (summ["granularity"] == gran)
                               & np.isclose(summ["ratio"], r) & (summ["method"] == m)]
                    assert len(row) == 1 and row["stage"].iloc[0] == "finetuned" and row["n_seeds"].iloc[0] == 3
                    row = row.iloc[0]
                    assert row["top1_mean"] == pytest.approx(top1.mean())
                    assert row["top1_std"] == pytest.approx(top1.std(ddof=1))
                    assert row["delta_mean"] == pytest.approx(delta.mean())
                    assert row["delta_std"] == pytest.approx(delta.std(ddof=1))
                    ci = stats.ttest_rel(top1, np.array([base[(arch, s)] for s in SEEDS])).confidence_interval()
                    assert (row["delta_lo"], row["delta_hi"]) == pytest.approx((ci.low, ci.high))
                    assert row["compression_mean"] == pytest.approx(np.mean([seeds[s]["compression"] for s in SEEDS]))
                    md_row = next(c for c in rows if c[0] == f"{r:.2f}" and c[1].strip("*") == m)
                    best = means[m] == max(means.values())
                    assert md_row[1].startswith("**") == best and md_row[3].startswith("**") == best
                    cell = md_row[3].strip("*")
                    assert cell.rstrip("†∘") == f"{top1.mean():.2f} ± {top1.std(ddof=1):.2f}"
                    assert md_row[4] == _ci(delta)
                    if m != "magnitude":
                        mag = np.array([exp[(arch, gran, r, "magnitude")][s]["top1_test"] for s in SEEDS])
                        assert row["p_vs_ref"] == pytest.approx(family[(r, m)])
                        assert row["p_adj"] == pytest.approx(holm[(r, m)])
                        assert row["test"] == "paired t-test" and row["family"] == "one-shot"
                        assert cell.endswith("†") == md_row[5].endswith("†") == (holm[(r, m)] < 0.05)
                        assert md_row[5].rstrip("†∘") == _ci(top1 - mag)
                        assert md_row[7] == row["verdict"]
                        n_marked += holm[(r, m)] < 0.05
                        n_tested += 1
                    else:
                        assert not cell.endswith("†") and md_row[6] == "ref" and md_row[7] == "reference"
    assert 0 < n_marked < n_tested  # both outcomes occur in the synthetic data
    assert sum(p < 0.05 for p in summ["p_vs_ref"].dropna()) > n_marked  # the correction removed some raw marks
    assert "paired t-test (scipy.stats.ttest_rel)" in md and "Holm step-down" in md
    assert "paired seeds per comparison: 3" in md
    tex = (built["out"] / "tables" / "summary.tex").read_text()
    assert r"\textbf{magnitude}" in tex or r"\textbf{screening}" in tex
    assert r"$^\dagger$" in tex and "\\toprule" in tex


def test_baseline_gradual_and_reference_tables(built):
    md = (built["out"] / "tables" / "summary.md").read_text()
    base, exp = _expected(built["recs"])
    rows = _md_rows(md, "## Baselines")
    for arch in ARCHS:
        v = np.array([base[(arch, s)] for s in SEEDS])
        row = next(r for r in rows if r[1] == arch)
        assert row[3] == "3" and row[4] == f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"
    summ = pd.read_csv(built["out"] / "tables" / "summary.csv")
    g = summ[summ["method"] == "frs (gradual)"]
    assert set(g["arch"]) == set(ARCHS) and set(g["granularity"]) == {"structured"}
    assert (g["family"] == "controls").all() and (g["family_size"] == 1).all()  # a family of its own
    for arch in ARCHS:  # against magnitude fine-tuned at the same ratio (0.5), paired by seed
        frs = [r["top1_test"] for r in sorted(built["recs"], key=lambda r: r["seed"])
               if r["stage"] == "gradual" and r["arch"] == arch]
        mag = [exp[(arch, "structured", 0.5, "magnitude")][s]["top1_test"] for s in SEEDS]
        assert g.loc[g["arch"] == arch, "p_adj"].iloc[0] == pytest.approx(stats.ttest_rel(frs, mag).pvalue)
    top1 = [r["top1_test"] for r in built["recs"] if r["stage"] == "gradual" and r["arch"] == "vgg11"]
    assert g[g["arch"] == "vgg11"]["top1_mean"].iloc[0] == pytest.approx(np.mean(top1))
    ref = _md_rows(md, "## Published reference numbers")
    assert len(ref) == 1 and ref[0][7] == "-0.50" and ref[0][-1] == "Han et al. 2015"
    d = exp[("vgg11", "unstructured", 0.9, "magnitude")]
    ours = np.mean([d[s]["top1_test"] - base[("vgg11", s)] for s in SEEDS])
    assert ref[0][11] == f"{ours:+.2f}"


def _set(x: np.ndarray, ratio: float) -> set:
    k = int(round(ratio * len(x)))
    return set(sorted(range(len(x)), key=lambda i: (x[i], i))[:k])


def test_agreement_against_direct_computation(built):
    agr = pd.read_csv(built["out"] / "tables" / "methods_agreement.csv")
    loaded = {(p.parent.name, p.stem): torch.load(p, weights_only=True)["layers"] for p in built["scores"]}
    assert set(agr["method_a"] + "-" + agr["method_b"]) == {"magnitude-taylor", "magnitude-screening",
                                                            "taylor-screening"}
    assert set(agr["ratio"]) == set(RATIOS)
    checked = 0
    for gran in ("unstructured", "structured"):
        for seed in ("seed0", "seed1"):
            a, b = loaded[(seed, "magnitude")], loaded[(seed, "screening")]
            names = [n for n in LAYERS if a[n][gran] is not None]
            for layer in names + ["__all__"]:
                use = names if layer == "__all__" else [layer]
                x = np.concatenate([a[n][gran].flatten().numpy() for n in use])
                y = np.concatenate([b[n][gran].flatten().numpy() for n in use])
                if layer == "__all__":
                    assert len(np.unique(y)) < len(y)  # ties present: average ranks and tie-breaking matter
                for r in RATIOS:
                    row = agr[(agr["granularity"] == gran) & (agr["seed"] == int(seed[4:])) & (agr["layer"] == layer)
                              & (agr["method_a"] == "magnitude") & (agr["method_b"] == "screening")
                              & np.isclose(agr["ratio"], r)]
                    assert len(row) == 1
                    assert row["spearman"].iloc[0] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
                    sa, sb = _set(x, r), _set(y, r)
                    assert row["jaccard"].iloc[0] == pytest.approx(len(sa & sb) / len(sa | sb))
                    checked += 1
    assert checked == 2 * (3 + 1) * 2 + 2 * (2 + 1) * 2  # fc has no structured scores
    mean = pd.read_csv(built["out"] / "tables" / "methods_agreement_mean.csv")
    m = mean[(mean["layer"] == "__all__") & (mean["granularity"] == "unstructured") & (mean["method_a"] == "magnitude")
             & (mean["method_b"] == "taylor") & np.isclose(mean["ratio"], 0.5)]
    per = agr[(agr["layer"] == "__all__") & (agr["granularity"] == "unstructured") & (agr["method_a"] == "magnitude")
              & (agr["method_b"] == "taylor") & np.isclose(agr["ratio"], 0.5)]
    assert m["n_seeds"].iloc[0] == 2 and m["spearman_mean"].iloc[0] == pytest.approx(per["spearman"].mean())


def test_every_figure_exists_and_opens(built):
    import matplotlib.image as mpimg

    fdir = built["out"] / "figures"
    for name in FIGS:
        img = mpimg.imread(fdir / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 300, name
        assert (fdir / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    assert set(built["written"]) >= {fdir / f"{n}.png" for n in FIGS}
    made = (built["out"] / "tables" / "summary.md").read_text().split("## Figures")[1]
    assert made.count("not made") == 1 and "not made: critical_difference" in made and "Demšar 2006" in made


def test_baselines_only(tmp_path, built):
    files = [f for f in built["files"] if "/baseline/" in str(f)]
    out = tmp_path / "report"
    written = build_report(files, out)
    res = pd.read_csv(out / "tables" / "results.csv")
    assert len(res) == 6 and set(res["stage"]) == {"baseline"}
    md = (out / "tables" / "summary.md").read_text()
    assert "No pruned, fine-tuned, gradual or scratch models yet" in md
    assert md.count("- not made:") == len(STATIC_FIGS)
    assert not any(p.suffix == ".png" for p in written) and not list((out / "figures").glob("*.png"))


def test_pruned_only_early_pipeline(tmp_path, built):
    files = [f for f in built["files"] if "/baseline/" in str(f) or "/pruned/" in str(f)]
    out = tmp_path / "report"
    build_report(files, out)
    summ = pd.read_csv(out / "tables" / "summary.csv")
    assert set(summ["stage"]) == {"pruned"} and len(summ) == 2 * 2 * 2 * 3 + 2
    want = [r["top1_test"] for r in built["recs"] if r["stage"] == "pruned" and r["arch"] == "resnet20"
            and r["method"] == "taylor" and r["granularity"] == "structured" and r["ratio_requested"] == 0.9]
    got = summ[(summ["arch"] == "resnet20") & (summ["method"] == "taylor") & (summ["granularity"] == "structured")
               & np.isclose(summ["ratio"], 0.9)]
    assert got["top1_mean"].iloc[0] == pytest.approx(np.mean(want))
    md = (out / "tables" / "summary.md").read_text()
    assert "- not made: finetune_recovery" in md and "- not made: gradual_vs_oneshot" in md
    assert (out / "figures" / "top1_vs_compression.png").is_file()


def test_one_style_per_method():
    from prunelab.report.style import STYLE, method_style

    methods = ("random", "magnitude", "taylor", "screening", "contribution", "frs", "gradual", "scratch")
    assert set(methods) <= set(STYLE)
    assert len({method_style(m)["color"] for m in methods}) == len(methods)
    assert len({method_style(m)["marker"] for m in methods}) == len(methods)
    assert method_style("magnitude", "magnitude (iterative)")["color"] == method_style("magnitude")["color"]
    assert method_style("newmethod") == method_style("newmethod")  # unknown names: stable fallback


def test_variant_labels_and_styles():
    """Labels from method names; the swept option and its value from the records' own method_config (what varies
    between a base method's one-shot models), not from parsing the names."""
    from prunelab.report.collect import annotate, records_frame

    rows = [_rec(arch="a", seed=0, stage="finetuned", method="screening", granularity="unstructured",
                 ratio_requested=0.5, method_config={"lambda": lam}) for lam in (0.25, 1.0)]
    rows += [_rec(arch="a", seed=0, stage="finetuned", method="magnitude", granularity="unstructured",
                  ratio_requested=0.5, schedule="iterative"),
             _rec(arch="a", seed=0, stage="scratch", method="magnitude", ratio_requested=0.5),
             _rec(arch="a", seed=0, stage="finetuned", method="screening-lambda0.75", granularity="structured",
                  ratio_requested=0.5, regime=None, method_config={"lambda": 0.75})]
    rows += [_rec(arch="a", seed=0, stage="finetuned", method=m, granularity="structured", ratio_requested=0.5,
                  method_config=c)
             for m, c in (("contribution-kappa1", {"kappa": 1}), ("frs-alpha1-beta0", {"alpha": 1, "beta": 0}),
                          ("frs-alpha2-beta1", {"alpha": 2, "beta": 1}), ("random-seed2", {"seed": 2}),
                          ("contribution-kappam1", {"kappa": -1}))]
    df = annotate(records_frame(rows)).set_index("label")
    assert set(df.index) == {"screening (lambda=0.25)", "screening (lambda=1.0)", "magnitude (iterative)",
                             "magnitude (scratch)", "screening-lambda0.75", "contribution-kappa1", "frs-alpha1-beta0",
                             "frs-alpha2-beta1", "random-seed2", "contribution-kappam1"}
    assert df.loc["magnitude (scratch)", "style"] == "scratch" and df.loc["magnitude (scratch)", "gran"] == "structured"
    assert df.loc["screening-lambda0.75", "vval"] == 0.75 and df.loc["screening-lambda0.75", "style"] == "screening"
    assert df.loc["screening (lambda=0.25)", "vval"] == 0.25
    assert df.loc["screening-lambda0.75", "pair_regime"] == "standard"
    assert tuple(df.loc["contribution-kappa1", ["base", "vkey", "vval", "style"]]) == \
        ("contribution", "kappa", 1.0, "contribution")
    assert tuple(df.loc["contribution-kappam1", ["vkey", "vval"]]) == ("kappa", -1.0)  # negative value written 'm'
    assert df.loc["frs-alpha1-beta0", "base"] == "frs" and pd.isna(df.loc["frs-alpha1-beta0", "vkey"])  # two keys
    assert df.loc["random-seed2", "base"] == "random" and pd.isna(df.loc["random-seed2", "vkey"])  # one value: no sweep
    assert pd.isna(df.loc["magnitude (iterative)", "vkey"])
    assert df["budget"].isna().all() and df.loc["magnitude (iterative)", "target"] == "weights"
    assert df.loc["screening-lambda0.75", "target"] == "units"  # structured without prune_target: today's meaning


def test_bad_input_fails_early(tmp_path):
    bad = _write(tmp_path, "a", _rec(arch="vgg11", seed=0, stage="trained", top1_test=90.0))
    with pytest.raises(ValueError, match="stage 'trained'"):
        build_report([bad], tmp_path / "out")
    bad = _write(tmp_path, "b", _rec(arch="vgg11", seed=0, stage="baseline", top1_test=190.0))
    with pytest.raises(ValueError, match="percentage"):
        build_report([bad], tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        build_report([tmp_path / "missing.json"], tmp_path / "out")
    with pytest.raises(ValueError, match="reference"):
        good = _write(tmp_path, "c", _rec(arch="vgg11", seed=0, stage="baseline", top1_test=90.0))
        build_report([good], tmp_path / "out", config={"reference": [{"arch": "vgg11"}]})


TABLES = ("results.csv", "summary.csv", "baselines.csv", "methods_agreement.csv", "methods_agreement_mean.csv")


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(a / "tables" / name), pd.read_csv(b / "tables" / name),
                                      check_exact=True)


def test_glob_cli_equals_file_build(built, tmp_path):
    assert cli(["--metrics-glob", str(built["root"]) + "/**/metrics.json", "--out", str(tmp_path), "--no-figures"]) == 0
    _same_tables(tmp_path, built["out"])
    # the same text, except the published-reference section (only the first build had references)
    # and the figure list (this build was tables only)
    drop = lambda t: re.sub(r"## Published reference numbers\n.*?\n\n(?=## )", "", t.split("## Figures")[0],  # noqa: E731
                            flags=re.S)
    want = drop((built["out"] / "tables" / "summary.md").read_text())
    assert "## Published" in (built["out"] / "tables" / "summary.md").read_text() and "## Published" not in want
    assert drop((tmp_path / "tables" / "summary.md").read_text()) == want


def test_mlflow_build_equals_file_build(built, tmp_path):
    from mlflow.tracking import MlflowClient

    # a subset keeps the test fast: vgg11 at ratio 0.5 with baselines, gradual and space rows
    files = [f for f in built["files"] if "vgg11" in f.parts and "r0.90" not in f.parts]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(EXP, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name="parent").info.run_id  # no metrics.json: not a row
    client.log_artifact(parent, str(built["scores"][0]))  # a .pt outside scores/: not a score file
    for f in files:
        run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_artifact(run, str(f))
        client.log_artifact(run, str(f), artifact_path="extra")  # not at the root: ignored
    for p in built["scores"]:
        run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_artifact(run, str(p), artifact_path=str(p.relative_to(built["root"]).parent))
    assert cli(["--from-mlflow", uri, "--experiment", EXP, "--out", str(tmp_path / "ml"), "--no-figures"]) == 0
    build_report(files, tmp_path / "files", built["scores"], figures=False)
    _same_tables(tmp_path / "ml", tmp_path / "files")
    assert len(pd.read_csv(tmp_path / "ml" / "tables" / "results.csv")) == len(files)
    assert (tmp_path / "ml" / "tables" / "summary.md").read_text() == \
        (tmp_path / "files" / "tables" / "summary.md").read_text()
    assert not (tmp_path / "ml" / "figures").exists()
    with pytest.raises(ValueError, match="not found"):
        cli(["--from-mlflow", uri, "--experiment", "nope", "--out", str(tmp_path / "x")])
