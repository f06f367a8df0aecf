"""Report comparisons on tiny result sets: no mark for identical methods, a missing reference, the configured
reference and correction, detectable differences, curve areas and the ranking against hand/scipy computations."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import _md_rows, _rec, _write

from prunelab.report import build_report
from prunelab.report.significance import paired_power

SEEDS, RATIOS = (0, 1, 2), (0.5, 0.9)
SAME = [0.0, 0.3, -0.2]


def _tiny(root: Path, methods: dict, speedup=None, iqr=None, ratios=RATIOS) -> list[Path]:
    """arch mlp, unstructured, seeds 0..2; methods: name -> per-seed top-1 offset (the same at every ratio)."""
    files = []
    for seed in SEEDS:
        files.append(_write(root, f"b/{seed}", _rec(arch="mlp", seed=seed, stage="baseline", top1_test=90.0 + seed)))
        for m, off in methods.items():
            for r in (ratios[m] if isinstance(ratios, dict) else ratios):
                files.append(_write(root, f"f/{m}/{seed}/{r}", _rec(
                    arch="mlp", seed=seed, stage="finetuned", method=m, granularity="unstructured",
                    ratio_requested=r, compression=1 / (1 - r) * (1 + 0.01 * seed),
                    top1_test=80.0 + seed - 5 * r + off[seed] + (0.1 * r if m == "random" else 0),
                    latency_speedup=None if speedup is None else speedup[seed],
                    latency_speedup_iqr=None if iqr is None else iqr)))
    return files


def _tables(out: Path):
    return pd.read_csv(out / "tables" / "summary.csv"), (out / "tables" / "summary.md").read_text()


def test_identical_methods_get_no_mark_and_missing_reference_is_skipped(tmp_path):
    files = _tiny(tmp_path / "a", {"magnitude": SAME, "taylor": SAME, "random": [-3.0, -3.1, -2.9]},
                  speedup=[1.02, 0.97, 1.05], iqr=0.4)
    build_report(files, tmp_path / "out", figures=False)
    summ, md = _tables(tmp_path / "out")
    t = summ[summ["method"] == "taylor"]
    assert (t["p_adj"] == 1.0).all() and not t["significant"].any() and (t["dref_mean"] == 0).all()
    rows = _md_rows(md, "### mlp · cifar10 · standard · unstructured")
    assert not any(c[4].endswith("†") or c[7].endswith("†") for c in rows if c[1] == "taylor")
    assert all(c[10] == "1.02 (IQR 0.40)≈" for c in rows)  # spread 0.4 > effect |1.02 - 1|
    files = _tiny(tmp_path / "b", {"taylor": SAME, "random": [-3.0, -3.1, -2.9]})
    build_report(files, tmp_path / "out2", figures=False)
    _, md = _tables(tmp_path / "out2")
    assert "The reference method `magnitude` (config `report.reference`) is not in this experiment" in md
    assert "†" not in md.split("## Curve areas")[0]


def test_reference_and_correction_from_config(tmp_path):
    files = _tiny(tmp_path, {"magnitude": SAME, "taylor": [-1.0, -0.6, -1.3], "random": [-3, -3.2, -2.7]})
    build_report(files, tmp_path / "out", config={"report": {"reference": "taylor", "correction": "bh"}},
                 figures=False)
    summ, md = _tables(tmp_path / "out")
    assert "Benjamini–Hochberg" in md and "Δ vs taylor" in md
    raw = summ["p_vs_ref"].to_numpy()
    ok = np.isfinite(raw)
    assert ok.sum() == 4 and summ.loc[summ["method"] == "taylor", "p_vs_ref"].isna().all()
    order = np.argsort(raw[ok])
    m = ok.sum()
    bh = np.minimum.accumulate(np.minimum(1, raw[ok][order] * m / np.arange(1, m + 1))[::-1])[::-1]
    assert summ["p_adj"].to_numpy()[ok][order] == pytest.approx(bh)


def test_detectable_difference_stated_per_table(tmp_path):
    files = _tiny(tmp_path, {"magnitude": SAME, "taylor": [-1.0, -0.6, -1.3], "random": [-3, -3.2, -2.4]})
    build_report(files, tmp_path / "out", figures=False)
    summ, md = _tables(tmp_path / "out")
    sd = summ["dref_sd"].dropna()
    assert len(sd) == 4 and summ["mdd_sd"].iloc[0] == pytest.approx(np.median(sd))  # median, never pooled
    level = 0.05 / 4  # Holm's strictest step in a family of 4
    assert summ["family_level"].iloc[0] == pytest.approx(level)
    assert paired_power(summ["mdd"].iloc[0] / summ["mdd_sd"].iloc[0], 3, level) == pytest.approx(0.8, abs=1e-6)
    assert (f"This table detects ≥ {summ['mdd'].iloc[0]:.2f} pp: the difference the paired t-test finds with 80 % "
            f"power at Holm's strictest step α/m = 0.05/4 (= 0.013), with 3 paired seeds") in md


def test_curve_area_and_ranking_against_hand_computation(tmp_path):
    methods = {"magnitude": SAME, "taylor": [-1.0, -0.6, -1.3], "random": [-3, -3.2, -2.4], "frs": SAME}
    ratios = {"magnitude": (0.5, 0.7, 0.9), "taylor": (0.5, 0.7, 0.9), "random": (0.5, 0.7, 0.9), "frs": (0.5,)}
    files = _tiny(tmp_path, methods, ratios=ratios)
    build_report(files, tmp_path / "out", figures=False)
    summ, md = _tables(tmp_path / "out")
    auc = pd.read_csv(tmp_path / "out" / "tables" / "curve_area.csv")
    assert set(auc["method"]) == {"magnitude", "taylor", "random"}  # frs has one ratio: no curve
    assert set(auc["ratios"]) == {"0.5 0.7 0.9"}
    files = _tiny(tmp_path / "b", {k: v for k, v in methods.items() if k != "frs"},
                  ratios={**ratios, "random": (0.5, 0.9)})
    build_report(files, tmp_path / "out2", figures=False)
    auc = pd.read_csv(tmp_path / "out2" / "tables" / "curve_area.csv")
    row = auc[auc["method"] == "taylor"].iloc[0]
    assert row["ratios"] == "0.5 0.9"  # the ratios every method has
    per_seed = []
    for s in SEEDS:
        (c1, y1), (c2, y2) = [(1 / (1 - r) * (1 + 0.01 * s), 80.0 + s - 5 * r + methods["taylor"][s])
                              for r in (0.5, 0.9)]
        per_seed.append((math.log(c2) - math.log(c1)) * (y1 + y2) / 2)
    ci = stats.ttest_1samp(per_seed, 0).confidence_interval()
    assert (row["auc"], row["auc_lo"], row["auc_hi"]) == pytest.approx((np.mean(per_seed), ci.low, ci.high))
    # the ranking: one block (this one curve), valued by the mean top-1 over the ratios its methods share (frs, at
    # one of the three ratios, is left out of the block); no Friedman test on one block
    ranks = pd.read_csv(tmp_path / "out" / "tables" / "ranking.csv")
    one = summ[summ["method"] != "frs"].groupby("method")["top1_mean"].mean()
    want = dict(zip(one.index, stats.rankdata(-one.to_numpy())))
    assert dict(zip(ranks["method"], ranks["mean_rank"])) == pytest.approx(want) and set(want) == {
        "magnitude", "taylor", "random"}
    assert (ranks["n_blocks"] == 1).all() and "over 1 block, one per curve" in md and "No Friedman test" in md
