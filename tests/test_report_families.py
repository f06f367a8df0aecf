"""The report's families, verdicts, budgets, PaT table and ranking on a synthetic experiment in the new results format
(fine-tuning budgets, steps, cost targets, swept PaT β), against scipy and definitions written out here."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stat_references import holm_by_definition as _holm
from prunelab.records import empty_record
from prunelab.report import build_from_frame
from prunelab.report.collect import records_frame
from prunelab.report.families import IDENTICAL, SIGNIFICANT, words
from prunelab.report.ranking import cd_diagram, rank_frame
from prunelab.report.significance import critical_difference, detectable_difference

SEEDS = (0, 1, 2, 3, 4)
BUDGETS = (200, 1600)
BASE_STEPS = 7000
RATIOS = {"unstructured": (0.5, 0.8, 0.9), "structured": (0.3, 0.6)}
# method -> (offset to magnitude in pp, sd of its own per-seed noise); screening-lambda0 is magnitude by construction
METHODS = {"random": (-5.0, 0.3), "magnitude": (0.0, 0.2), "taylor": (-0.8, 0.5), "screening-lambda0": None,
           "screening-lambda1": (-2.0, 0.3), "contribution-kappa0": (0.1, 0.4), "contribution-kappa1": (-0.3, 0.4),
           "obd": "top1 of magnitude, another loss"}
PAT = {"pat-beta0.001": 0.0, "pat-beta0.01": 0.4}  # PaT gain in pp at the largest ratio, for contribution
CONFIGS = {"screening-lambda0": {"lambda": 0}, "screening-lambda1": {"lambda": 1}, "contribution-kappa0": {"kappa": 0},
           "contribution-kappa1": {"kappa": 1}, "random": {"seed": 0}}


def new_format_records(rng_seed: int = 0) -> list[dict]:
    """fnn on fashion_mnist, 5 seeds: baselines (standard and two PaT β) with their steps; every method fine-tuned at
    two budgets (one row per model and budget), unstructured and structured (MACs target); controls with their
    steps; screening-lambda0 a copy of magnitude; structured contribution-kappa1 a copy of kappa0."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = {s: rng.normal(0, 0.3) for s in SEEDS}
    recs = []

    def rec(**kw):
        r = empty_record(experiment="fm", dataset="fashion_mnist", arch="fnn", device="cpu", git_commit="abc",
                         source_hash="s", config_hash="h", **kw)
        recs.append(r)
        return r

    for regime in ("standard", *PAT):
        for s in SEEDS:
            top1 = round(89.7 + seed_effect[s] + (0.05 if regime != "standard" else 0.0), 2)
            rec(regime=regime, seed=s, stage="baseline", top1_test=top1, top1_val=top1, loss_test=0.3,
                params_total=266610, macs_dense=266200, steps_total=BASE_STEPS, train_steps=BASE_STEPS, wall_s=30.0)
    values = {}  # (regime, gran, ratio, budget, seed, method) -> (top1, loss)
    for regime in ("standard", *PAT):
        methods = list(METHODS) if regime == "standard" else ["magnitude", "contribution-kappa0", "contribution-kappa1"]
        for gran, ratios in RATIOS.items():
            for r in ratios:
                for b in BUDGETS:
                    for s in SEEDS:
                        mag = 89.7 + seed_effect[s] - 6 * r ** 3 + (1.0 if b == 1600 else 0.0) + rng.normal(0, 0.2)
                        for m in methods:
                            spec = METHODS[m]
                            if m == "screening-lambda0" or (m == "contribution-kappa1" and gran == "structured"):
                                twin = "magnitude" if m == "screening-lambda0" else "contribution-kappa0"
                                top1, loss = values[(regime, gran, r, b, s, twin)]
                            elif m == "obd":
                                top1, loss = values[(regime, gran, r, b, s, "magnitude")][0], 0.5 + 0.01 * s
                            elif m == "magnitude":
                                top1, loss = mag, None
                            else:
                                off, sd = spec
                                scale = 0.5 if (m == "random" and b == 1600) else 1.0
                                gain = PAT.get(regime, 0.0) * r if m.startswith("contribution") else 0.0
                                top1, loss = mag + scale * off * (1 + r) + gain + rng.normal(0, sd), None
                            top1 = round(top1, 2)
                            loss = round((100 - top1) / 40, 6) if loss is None else loss
                            values[(regime, gran, r, b, s, m)] = (top1, loss)
                            rec(regime=regime, seed=s, stage="finetuned", method=m, granularity=gran,
                                ratio_requested=r, top1_test=top1, top1_val=top1, loss_test=loss,
                                top1_test_before_finetune=round(top1 - 10 * r, 2), compression=1 / (1 - r),
                                speedup_theoretical=1 / (1 - r), budget_steps=b, train_steps=b,
                                steps_total=BASE_STEPS + b, prune_target="macs" if gran == "structured" else None,
                                cost_removed=round(r + 0.001 * s, 4) if gran == "structured" else None,
                                method_config=CONFIGS.get(m, {}), schedule="oneshot", wall_s=3.0)
    for s in SEEDS:  # controls at structured 0.6: equal steps to the largest budget
        for stage, m, off in (("scratch", "magnitude", 0.9), ("gradual", "frs", 0.2)):
            top1 = round(values[("standard", "structured", 0.6, 1600, s, "magnitude")][0] + off + rng.normal(0, 0.3), 2)
            rec(regime="standard", seed=s, stage=stage, method=m, granularity="structured", ratio_requested=0.6,
                top1_test=top1, loss_test=0.3, compression=2.5, speedup_theoretical=2.5, prune_target="macs",
                steps_total=BASE_STEPS + 1600, train_steps=BASE_STEPS + 1600, schedule=stage, wall_s=35.0)
    return recs


_BUILT: dict = {}  # one build per session, shared with test_publish (which imports the fixture)


@pytest.fixture(scope="session")
def new_format_report(tmp_path_factory):
    """The synthetic experiment's report (tables only), built once per test session."""
    if not _BUILT:
        recs = new_format_records()
        out = tmp_path_factory.mktemp("report")
        build_from_frame(records_frame(recs), [], out, {"experiment": "fm"}, figures=False)
        tables = out / "tables"
        _BUILT.update(recs=recs, out=out, summary=pd.read_csv(tables / "summary.csv"),
                      pat=pd.read_csv(tables / "pat.csv"), md=(tables / "summary.md").read_text(),
                      budgets=pd.read_csv(tables / "budget_ranks.csv"))
    return _BUILT


@pytest.fixture
def built(new_format_report):
    return new_format_report


def _per_seed(recs, regime, gran, r, b, m) -> np.ndarray:
    return np.array([x["top1_test"] for x in recs if x["stage"] == "finetuned" and x["regime"] == regime
                     and x["granularity"] == gran and x["ratio_requested"] == r and x["budget_steps"] == b
                     and x["method"] == m])


def test_identical_rows_are_marked_not_tested(built):
    s = built["summary"]
    one = s[(s["family"] == "one-shot") & (s["regime"] == "standard")]
    lam0 = one[one["method"] == "screening-lambda0"]
    assert len(lam0) == 10 and (lam0["verdict"] == IDENTICAL).all() and (lam0["identical_to"] == "magnitude").all()
    assert lam0["p_adj"].isna().all()
    k1 = one[one["method"] == "contribution-kappa1"]
    assert (k1.loc[k1["granularity"] == "structured", "identical_to"] == "contribution-kappa0").all()
    assert k1.loc[k1["granularity"] == "unstructured", "p_adj"].notna().all()
    obd = one[one["method"] == "obd"]  # the same top-1 as magnitude but another loss: a model of its own, tested
    assert obd["identical_to"].isna().all() and (obd["p_vs_ref"] == 1.0).all()
    assert "Identical in fact, not tested: screening-lambda0 = magnitude." in built["md"]


def test_families_hold_the_table_and_the_controls_apart(built):
    s, recs = built["summary"], built["recs"]
    one = s[(s["family"] == "one-shot") & (s["regime"] == "standard")]
    for (gran, b), t in one.groupby(["granularity", "budget"]):
        tested = t[t["p_adj"].notna()]
        m = 6 if gran == "unstructured" else 5  # random, taylor, λ1, κ0, (κ1), obd per ratio
        assert len(tested) == m * len(RATIOS[gran]) and (tested["family_size"] == len(tested)).all()
        raw = []
        for _, r in tested.iterrows():
            a = _per_seed(recs, "standard", gran, r["ratio"], b, r["method"])
            ref = _per_seed(recs, "standard", gran, r["ratio"], b, "magnitude")
            raw.append(stats.ttest_rel(a, ref).pvalue if not np.all(a == ref) else 1.0)
            assert r["dref_sd"] == pytest.approx(np.std(a - ref, ddof=1))
        assert tested["p_vs_ref"].to_numpy() == pytest.approx(raw)
        assert tested["p_adj"].to_numpy() == pytest.approx(_holm(raw))
        level = 0.05 / len(tested)
        sd = float(np.median(tested["dref_sd"]))  # the median paired sd of the table's tested comparisons
        assert t["mdd_sd"].to_numpy() == pytest.approx(np.full(len(t), sd))
        assert t["family_level"].to_numpy() == pytest.approx(np.full(len(t), level))
        assert t["mdd"].iloc[0] == pytest.approx(detectable_difference(sd, 5, alpha=level))
    ctl = s[s["family"] == "controls"]
    assert set(ctl["method"]) == {"magnitude (scratch)", "frs (gradual)"} and (ctl["family_size"] == 2).all()
    ref = _per_seed(recs, "standard", "structured", 0.6, 1600, "magnitude")  # the largest budget: equal steps
    raw = []
    for stage in ("gradual", "scratch"):
        a = np.array([x["top1_test"] for x in recs if x["stage"] == stage])
        raw.append(stats.ttest_rel(a, ref).pvalue)
    got = ctl.set_index("stage").loc[["gradual", "scratch"]]
    assert got["p_vs_ref"].to_numpy() == pytest.approx(raw) and got["p_adj"].to_numpy() == pytest.approx(_holm(raw))
    assert (got["ref_budget"] == 1600).all() and (got["ref_steps"] == BASE_STEPS + 1600).all()
    assert (got["steps_total_mean"] == BASE_STEPS + 1600).all()
    assert "the controls of this curve, m = 2 comparisons" in built["md"]


def test_words_follow_the_numbers(built):
    s = built["summary"]
    tested = s[s["p_adj"].notna()]
    sig, near = tested[tested["verdict"] == SIGNIFICANT], tested[tested["verdict"] == "interval excludes 0"]
    rest = tested[tested["verdict"] == "not significant"]
    assert len(sig) and len(near) and len(rest)  # every outcome occurs
    assert (sig["p_adj"] < 0.05).all() and (near["p_adj"] >= 0.05).all() and (rest["p_adj"] >= 0.05).all()
    assert ((near["dref_lo"] > 0) | (near["dref_hi"] < 0)).all()
    assert ((rest["dref_lo"] <= 0) & (rest["dref_hi"] >= 0)).all()
    r = sig.iloc[0]
    assert words(r, "holm") == "significant after Holm (5 seeds)"
    r = near.iloc[0]
    assert words(r, "holm") == (f"not significant after Holm; 95 % interval [{r['dref_lo']:+.2f}, "
                                f"{r['dref_hi']:+.2f}]; this table detects ≥ {r['mdd']:.2f} pp")
    md = built["md"]
    assert "noise" not in md.lower()
    listed = md.split("## Intervals that exclude 0")[1].split("\n## ")[0]
    n_pat = int((built["pat"]["verdict"] == "interval excludes 0").sum())
    assert f"in their family: {len(near) + n_pat}." in listed
    assert listed.count("\n| fnn ·") == len(near) + n_pat


def test_tables_per_budget_with_steps(built):
    md, s = built["md"], built["summary"]
    for b in BUDGETS:
        assert f"### fnn · fashion_mnist · standard · structured (MACs) · {b} steps" in md
        assert f"### fnn · fashion_mnist · standard · unstructured · {b} steps" in md
    one = s[(s["family"] == "one-shot") & (s["regime"] == "standard")]
    assert set(one["budget"]) == set(BUDGETS)
    assert (one["steps_total_mean"] == BASE_STEPS + one["budget"]).all()
    assert (one["train_steps_mean"] == one["budget"]).all()
    st = one[one["granularity"] == "structured"]
    assert (st["target"] == "macs").all() and st["cost_removed_mean"].notna().all()
    assert (one.loc[one["granularity"] == "unstructured", "target"] == "weights").all()
    table = md.split("### fnn · fashion_mnist · standard · unstructured · 1600 steps")[1].split("\n### ")[0]
    assert "| steps |" in table and "| 8,600 |" in table
    base = md.split("## Baselines")[1].split("\n## ")[0]
    assert "| steps |" in base and "| 7,000 |" in base


def test_rank_correlation_between_budgets_against_scipy(built):
    s, b = built["summary"], built["budgets"]
    assert set(b["granularity"]) == {"unstructured", "structured"} and set(b["regime"]) == {"standard", *PAT}
    for _, row in b[b["regime"] == "standard"].iterrows():
        one = s[(s["family"] == "one-shot") & (s["regime"] == "standard") & (s["granularity"] == row["granularity"])
                & (s["verdict"] != IDENTICAL)]
        means = one.groupby(["budget", "method"])["top1_mean"].mean().unstack(0)  # every method has every ratio
        assert row["n_methods"] == len(means) and (row["budget_a"], row["budget_b"]) == BUDGETS
        rho, tau = stats.spearmanr(means[200], means[1600]), stats.kendalltau(means[200], means[1600])
        assert (row["spearman"], row["spearman_p"]) == pytest.approx((rho.statistic, rho.pvalue))
        assert (row["kendall"], row["kendall_p"]) == pytest.approx((tau.statistic, tau.pvalue))
    assert "## Order of methods between budgets" in built["md"]


def test_pat_minus_standard_paired_in_its_own_family(built):
    pat, recs = built["pat"], built["recs"]
    assert set(pat["regime"]) == set(PAT) and set(pat["beta"].astype(str)) == {"0.001", "0.01"}
    assert set(pat["method"]) == {"magnitude", "contribution-kappa0", "contribution-kappa1"}
    twins = pat[(pat["method"] == "contribution-kappa1") & (pat["granularity"] == "structured")]
    assert (twins["verdict"] == IDENTICAL).all() and twins["p_adj"].isna().all()
    for (gran, b), t in pat.groupby(["granularity", "budget"]):
        tested = t[t["p_adj"].notna()]
        raw = []
        for _, r in tested.iterrows():
            a = _per_seed(recs, r["regime"], gran, r["ratio"], b, r["method"])
            ref = _per_seed(recs, "standard", gran, r["ratio"], b, r["method"])
            ci = stats.ttest_rel(a, ref).confidence_interval()
            assert (r["dref_mean"], r["dref_lo"], r["dref_hi"]) == pytest.approx(((a - ref).mean(), ci.low, ci.high))
            raw.append(stats.ttest_rel(a, ref).pvalue)
        assert tested["p_adj"].to_numpy() == pytest.approx(_holm(raw))
        assert (tested["family_size"] == len(tested)).all()
    assert "Does training with the regulariser make the network more prunable" in built["md"]
    assert "fnn pat-beta0.01 − standard baselines +0.05" in built["md"]


def test_ranking_blocks_are_curves_at_matched_cost(built):
    s = built["summary"]
    ranks, info = rank_frame(s)
    blocks = info["blocks"]
    # one block per curve × budget (PaT curves hold 2 of the 7 methods: left out), never one per ratio
    assert info["n"] == 4 and info["blocks_dropped"] == 2 * 2 * 2
    one = s[(s["family"] == "one-shot") & (s["regime"] == "standard") & (s["verdict"] != IDENTICAL)]
    wide = {}
    for (gran, b), t in one.groupby(["granularity", "budget"]):
        wide[(gran, b)] = t.groupby("method")["top1_mean"].mean()  # every method has every ratio of its curve
        got = blocks[(blocks["granularity"] == gran) & (blocks["budget"] == b)].set_index("method")["value"]
        assert got.to_dict() == pytest.approx(wide[(gran, b)].to_dict())
    mat = pd.DataFrame(wide).T.dropna(axis=1)  # a method missing in a block (κ1: a copy of κ0 there) is left out
    assert set(info["dropped"]) == {"contribution-kappa1"}
    r = np.vstack([stats.rankdata(-row) for row in mat.to_numpy()])
    want = dict(zip(mat.columns, r.mean(axis=0)))
    assert dict(zip(ranks["method"], ranks["mean_rank"])) == pytest.approx(want)
    assert dict(zip(ranks["method"], ranks["rank_max"])) == dict(zip(mat.columns, r.max(axis=0)))
    assert not info["applies"] and math.isnan(info["cd"]) and isinstance(cd_diagram(ranks, info), str)
    assert "No Friedman test or critical difference" in built["md"] and "N = 4, k = 6" in built["md"]


def test_friedman_and_nemenyi_with_enough_blocks():
    """Demšar (2006): N > 10 blocks and k > 5 methods; there the report runs Friedman and gives the CD."""
    rng = np.random.default_rng(5)
    methods = [f"m{i}" for i in range(6)]
    rows = [dict(stage="finetuned", verdict="not significant", dataset="d", arch=f"a{c}", regime="standard",
                 granularity="unstructured", target="weights", budget=np.nan, ratio=r, method=m,
                 top1_mean=80 + i * 0.3 + rng.normal(0, 1))
            for c in range(12) for r in (0.5, 0.9) for i, m in enumerate(methods)]
    s = pd.DataFrame(rows)
    ranks, info = rank_frame(s)
    assert info["applies"] and info["n"] == 12 and info["k"] == 6
    mat = s.groupby(["arch", "method"])["top1_mean"].mean().unstack()[methods].to_numpy()
    ref = stats.friedmanchisquare(*mat.T)
    assert (info["chi2"], info["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    assert info["cd"] == pytest.approx(critical_difference(6, 12))
    ranks, info = rank_frame(s[s["arch"] != "a0"])  # 11 blocks: still enough; 10: not
    assert info["applies"]
    assert not rank_frame(s[~s["arch"].isin(["a0", "a1"])])[1]["applies"]


def test_the_report_does_not_import_torch(tmp_path):
    """`import prunelab.report` and a report from results without score files stay torch-free (variant names are
    read from the records' method_config, not by the methods package, which imports torch)."""
    import subprocess
    import sys

    code = ("import sys, json; from prunelab.report import build_from_frame; "
            "from prunelab.report.collect import records_frame; "
            "from test_report_families import new_format_records; "
            "recs = [r for r in new_format_records() if r['seed'] < 2 and r.get('ratio_requested') in (None, 0.5)]; "
            f"build_from_frame(records_frame(recs), [], {str(tmp_path)!r}, figures=False); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).parent))
    assert out.stdout.strip().splitlines()[-1] == "[]"
