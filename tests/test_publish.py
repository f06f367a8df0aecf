"""The README's results section is generated from a report (prunelab.report.publish), never typed: findings first,
at most 120 lines, words that follow from the tests; from a report in the new format (budgets, steps, PaT β) and
from the published Fashion-MNIST results.csv (the old format)."""
import gzip
import re
import shutil
from pathlib import Path

import pytest
from test_report_families import new_format_report  # noqa: F401 - the session's synthetic report (a fixture)

from prunelab.report import build_from_frame
from prunelab.report import publish as P
from prunelab.report.collect import load_results_csv
from prunelab.report.publish import markers, publish

REPO = Path(__file__).resolve().parents[1]
# The first published Fashion-MNIST run's results.csv (3 seeds, unit ratios, one fine-tuning length; commit f944950),
# kept as a fixture of the old format after the republish replaced docs/results/fashion_mnist/.
PUBLISHED_V1 = REPO / "tests" / "fixtures" / "fashion_mnist_v1_results.csv.gz"


def _results(tmp_path: Path, report: Path, name: str = "exp") -> Path:
    """results/<name>/report as a finished run leaves it (tables, and the figure the section shows)."""
    results = tmp_path / "results" / name
    shutil.copytree(report, results / "report")
    (results / "report" / "figures").mkdir(exist_ok=True)
    (results / "report" / "figures" / "top1_vs_macs.png").write_bytes(b"\x89PNG fake")
    return results


def _section(text: str, name: str = "exp") -> list[str]:
    begin, end = markers(name)
    return text[text.index(begin):text.index(end) + len(end)].splitlines()


def _findings(lines: list[str]) -> list[str]:
    start = lines.index("**Findings.**")
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("- "):
            break
        out.append(line)
    return out


def test_section_opens_with_findings_from_the_tables(tmp_path, new_format_report):  # noqa: F811
    results = _results(tmp_path, new_format_report["out"])
    begin, end = markers("exp")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Results\n\n{begin}\nold text\n{end}\n\n## After\n")
    out = tmp_path / "docs" / "results" / "exp"
    timing = {"wall_s": 600.0, "jobs": 10, "cores": 2, "load_average_start": [0.5, 0.4, 0.3],
              "jobs_detail": [{"span_s": 30.0, "overhead_s": 2.5}] * 10, "overhead_s": {"median": 2.5}}
    publish(results, readme, out, "make run CONFIG=x.yaml", "abc123", timing)
    text = readme.read_text()
    assert ("10.0 min for 10 jobs on 2 CPU cores (load average 0.5 at the start). Of the jobs' summed time, 5.0 min "
            "was their own work and 0.4 min per-job overhead") in text
    assert text.startswith("# Title\n\n## Results\n\n") and text.endswith(f"{end}\n\n## After\n")
    lines = _section(text)
    assert len(lines) <= 120 and "old text" not in text and "`abc123`" in text and "make run CONFIG=x.yaml" in text
    assert next(ln for ln in lines[2:] if ln and not re.match(r"\*[^*]", ln)) == "**Findings.**"  # after provenance
    found = _findings(lines)
    assert 1 <= len(found) <= 10
    for line in found:  # each with its number, interval and n
        assert re.search(r"[+-]\d+\.\d\d pp \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]|\d\.\d\d \[\d+–\d+\]", line), line
        assert re.search(r"\(\d+ seeds|\d+ seeds,|over \d+ blocks|n = \d+", line), line
    s = new_format_report["summary"]
    one = s[(s["family"] == "one-shot") & (s["regime"] == "standard") & (s["budget"] == 1600)]
    sig = one[one["verdict"] == "significant"]
    top = sig.loc[sig["dref_mean"].abs().idxmax()]
    first = next(ln for ln in found if "unstructured · 1600 steps" in ln)
    assert (f"{len(sig[sig['granularity'] == 'unstructured'])} differences to magnitude significant after Holm"
            in first)
    if top["granularity"] == "unstructured":
        assert f"{top['dref_mean']:+.2f} pp [{top['dref_lo']:+.2f}, {top['dref_hi']:+.2f}]" in first
    assert "noise" not in "\n".join(lines).lower()
    # one compact table per arch, every cell at both budgets; the figure, the PaT table, the controls with steps
    assert any(ln.startswith("**fnn** (fashion_mnist): Δ top-1 to magnitude (pp)") and "200 steps / 1600 steps" in ln
               for ln in lines)
    row = next(ln for ln in lines if ln.startswith("| unstructured | random |"))
    assert row.count(" / ") == 3 and "†" in row  # three ratios, two budgets each
    assert not any(ln.startswith("| unstructured | screening-lambda0 |") for ln in lines)  # identical: not a row
    assert "![test top-1 vs MACs reduction, per fine-tuning budget](docs/results/exp/figures/top1_vs_macs.png)" in lines
    assert any(ln.startswith("| fnn · structured (MACs) | contribution-kappa1 | pat-beta0.01 | = contribution-kappa0")
               for ln in lines)
    assert "| fnn | magnitude (scratch) | 0.6 | 5 |" in text and "| 8,600 |" in text and "| 7,000 |" in text
    assert "[`docs/results/exp/summary.md`](docs/results/exp/summary.md)" in text
    assert (out / "summary.md").is_file() and (out / "pat.csv").is_file()
    assert (out / "figures/top1_vs_macs.png").exists()
    publish(results, readme, out, "make run CONFIG=x.yaml", "abc123", timing)
    assert readme.read_text() == text  # idempotent


def test_section_from_the_published_fashion_mnist_results(tmp_path):
    """The old format (no budgets, steps or targets) still gives a section within the limit, with the issue's
    numbers in words that follow from them."""
    report, old = tmp_path / "report", tmp_path / "results_v1.csv"
    old.write_bytes(gzip.decompress(PUBLISHED_V1.read_bytes()))
    build_from_frame(load_results_csv(old), [], report, {"experiment": "fashion_mnist"}, figures=False)
    results = _results(tmp_path, report, "fashion_mnist")
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(markers("fashion_mnist")) + "\n")
    publish(results, readme, tmp_path / "docs" / "results" / "fashion_mnist", "make run", "f944950")
    lines = _section(readme.read_text(), "fashion_mnist")
    assert len(lines) <= 120 and len(_findings(lines)) <= 10
    text = "\n".join(lines)
    assert "noise" not in text.lower()
    # random at 0.90 (issue 25): its interval excludes 0, Holm does not pass it: marked ∘, never called noise
    row = next(ln for ln in lines if ln.startswith("| unstructured | random |"))
    assert "-28.2 [-37.3, -19.2]∘" in row
    assert "Identical in fact to another row, not tested: contribution-kappa1 = contribution-kappa0; " \
           "screening-lambda0 = magnitude." in text
    assert "no Friedman test: 4 blocks" in text


def test_publish_replaces_what_an_earlier_publish_copied(tmp_path, new_format_report):  # noqa: F811
    results = _results(tmp_path, new_format_report["out"])
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(markers("exp")) + "\n")
    out = tmp_path / "docs" / "results" / "exp"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "sweep_screening_lambda.png").write_bytes(b"old")  # a figure the new report lacks
    (out / "old_table.csv").write_text("x\n")
    publish(results, readme, out, "cmd", "abc123")
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert "sweep_screening_lambda.png" not in files and "old_table.csv" not in files
    assert {"summary.md", "summary.csv", "pat.csv", "budget_ranks.csv", "top1_vs_macs.png"} <= set(files)


def test_publish_refuses_a_readme_without_markers_or_a_long_section(tmp_path, monkeypatch,
                                                                     new_format_report):  # noqa: F811
    results = _results(tmp_path, new_format_report["out"])
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="results:exp:begin"):
        publish(results, readme, tmp_path / "out", "cmd", "abc")
    readme.write_text("\n".join(markers("exp")) + "\n")
    monkeypatch.setattr(P, "MAX_LINES", 20)
    with pytest.raises(ValueError, match="over 20"):
        publish(results, readme, tmp_path / "out", "cmd", "abc")


def test_no_noise_wording_in_the_report_code_or_captions():
    """A difference whose interval excludes 0 is never called noise: the words are not in the report's code, the
    workflow report's captions, the README (its generated results section included) or the hand-written docs."""
    files = (sorted((REPO / "src" / "prunelab" / "report").glob("*.py")) + sorted((REPO / "workflow" / "report")
                                                                                 .glob("*.rst"))
             + [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md")))
    for f in files:
        assert not re.search(r"seed noise|within noise|beyond noise", f.read_text(), re.I), f
