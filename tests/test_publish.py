"""The README's results section is generated from a report (prunelab.report.publish), never typed."""
import csv

import pytest

from prunelab.report.publish import markers, publish, report_sections

SUMMARY = """# PruneLab report: exp

## Baselines

| arch | top-1 |
|---|---|
| fnn | 89.70 |

## Pruned models

| ratio | method |
|---|---|

## Curve areas

| method | area |
|---|---|
| magnitude | 1.0 |

## Overall ranking

See figures/critical_difference.png.

| method | mean rank |
|---|---|
| magnitude | 1.5 |
"""
FIELDS = ["arch", "regime", "granularity", "ratio", "method", "reference", "n_pairs", "p_adj", "significant",
          "dref_mean", "dref_lo", "dref_hi", "mdd"]


def write_report(root):
    (root / "report/tables").mkdir(parents=True)
    (root / "report/figures").mkdir(parents=True)
    (root / "report/tables/summary.md").write_text(SUMMARY)
    rows = [["fnn", "standard", "unstructured", "0.9", "magnitude", "magnitude", "3", "", "False", "", "", "", ""],
            ["fnn", "standard", "unstructured", "0.9", "random", "magnitude", "3", "0.001", "True", "-6.3", "-7.0",
             "-5.6", "0.8"],
            ["fnn", "standard", "unstructured", "0.9", "taylor", "magnitude", "3", "0.4", "False", "-0.4", "-1.2",
             "0.4", "0.8"]]
    with open(root / "report/tables/summary.csv", "w", newline="") as f:
        csv.writer(f).writerows([FIELDS] + rows)
    (root / "report/figures/top1_vs_compression.png").write_bytes(b"\x89PNG fake")


def test_sections_are_copied_verbatim():
    parts = report_sections(SUMMARY)
    assert set(parts) == {"Baselines", "Curve areas", "Overall ranking"}
    assert parts["Baselines"] == "| arch | top-1 |\n|---|---|\n| fnn | 89.70 |"


def test_publish_rewrites_only_the_marked_section_and_is_idempotent(tmp_path):
    results = tmp_path / "results" / "exp"
    write_report(results)
    begin, end = markers("exp")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Results\n\n{begin}\nold text\n{end}\n\n## After\n")
    out = tmp_path / "docs" / "results" / "exp"
    publish(results, readme, out, "make run CONFIG=x.yaml", "abc123")
    text = readme.read_text()
    assert text.startswith("# Title\n\n## Results\n\n") and text.endswith(f"{end}\n\n## After\n")
    assert "old text" not in text and "`abc123`" in text and "make run CONFIG=x.yaml" in text
    assert "| fnn | 89.70 |" in text and "| magnitude | 1.5 |" in text and "| ratio | method |" not in text
    assert "docs/results/exp/figures/critical_difference.png" in text  # links point at the copies
    assert "worse than magnitude beyond seed noise: random @ 0.90 -6.30 [-7.00, -5.60]" in text
    assert "within seed noise of magnitude (corrected p ≥ 0.05): 1 of 2 (e.g. taylor)" in text
    assert "![test top-1 vs compression](docs/results/exp/figures/top1_vs_compression.png)" in text
    assert (out / "summary.md").read_text() == SUMMARY and (out / "figures/top1_vs_compression.png").exists()
    publish(results, readme, out, "make run CONFIG=x.yaml", "abc123")
    assert readme.read_text() == text


def test_publish_replaces_what_an_earlier_publish_copied(tmp_path):
    results = tmp_path / "results" / "exp"
    write_report(results)
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(markers("exp")) + "\n")
    out = tmp_path / "docs" / "results" / "exp"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "sweep_screening_lambda.png").write_bytes(b"old")  # a figure the new report lacks
    (out / "old_table.csv").write_text("x\n")
    publish(results, readme, out, "cmd", "abc123")
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["summary.csv", "summary.md",
                                                                      "top1_vs_compression.png"]


def test_publish_refuses_a_readme_without_markers(tmp_path):
    write_report(tmp_path / "exp")
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="results:exp:begin"):
        publish(tmp_path / "exp", readme, tmp_path / "out", "cmd", "abc")
