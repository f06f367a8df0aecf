"""A fine-tuned model read at several budgets: one results row per budget (prunelab.report.collect)."""
import json

from prunelab.report.collect import budget_rows, load_metrics


def test_one_row_per_budget_sharing_the_models_costs(tmp_path):
    rec = {"experiment": "x", "arch": "fnn", "stage": "finetuned", "method": "magnitude", "seed": 0,
           "granularity": "structured", "ratio_requested": 0.5, "macs_effective": 100, "top1_test": 90.0,
           "budget_steps": 400, "steps_total": 1400,
           "budgets": [{"budget_steps": 100, "steps_total": 1100, "top1_test": 85.0, "best_epoch": 1},
                       {"budget_steps": 400, "steps_total": 1400, "top1_test": 90.0, "best_epoch": 4}]}
    rows = budget_rows(rec)
    assert [(r["budget_steps"], r["top1_test"], r["steps_total"], r["macs_effective"]) for r in rows] == \
        [(100, 85.0, 1100, 100), (400, 90.0, 1400, 100)]
    assert all("budgets" not in r for r in rows)
    assert budget_rows({"arch": "fnn", "stage": "baseline"}) == [{"arch": "fnn", "stage": "baseline"}]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(rec))
    df = load_metrics([path])
    assert list(df["budget_steps"]) == [100, 400] and list(df["top1_test"]) == [85.0, 90.0]
