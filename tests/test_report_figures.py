"""Figures a reader can use: one colour per method, its variants shades of that colour, at most 8 series a panel."""
from __future__ import annotations

import colorsys

import pytest
from matplotlib.colors import to_rgb
from test_report_families import new_format_records

from prunelab.report import figures as F, figures_extra as FX
from prunelab.report.collect import annotate, records_frame
from prunelab.report.style import MAX_SERIES, STYLE, chunk_series, method_style, series_styles
from prunelab.report.tables import baseline_frame, keyed, select_rows, summary_frame


@pytest.fixture(scope="module")
def frames():
    recs = new_format_records()
    recs += [dict(r, method=m, method_config={"lambda": v}) for r in recs if r.get("method") == "screening-lambda1"
             for m, v in (("screening-lambda0.25", 0.25), ("screening-lambda0.5", 0.5), ("screening-lambda0.75", 0.75))]
    df = keyed(annotate(records_frame(recs)))
    return dict(df=df, sel=select_rows(df), summary=summary_frame(df, "magnitude", "holm"), base=baseline_frame(df))


def _series(ax) -> list[str]:
    return [lab for lab in ax.get_legend_handles_labels()[1] if not lab.startswith("_")]


def test_at_most_eight_series_a_panel_and_the_reference_in_each(frames):
    figs = {"accuracy": F.accuracy(frames["summary"], frames["base"], "speedup_theoretical", "magnitude", "standard"),
            "compression": F.accuracy(frames["summary"], frames["base"], "compression", "magnitude"),
            "recovery": F.recovery(frames["sel"], "magnitude"),
            "layer_kept": F.layer_kept(frames["df"], 0.5, "magnitude"),
            "gradual": FX.gradual_cost(frames["df"], "magnitude")}
    seen = set()
    for name, fig in figs.items():
        if isinstance(fig, str):
            assert name == "layer_kept", fig  # no layer_kept in the synthetic records
            continue
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        assert panels, name
        for ax in panels:
            labels = _series(ax)
            assert 0 < len(labels) <= MAX_SERIES, (name, ax.get_title(), labels)
            if name in ("accuracy", "recovery") and len(labels) > 1:
                assert "magnitude" in labels, (name, ax.get_title())
            seen |= set(labels)
    methods = set(frames["summary"].loc[frames["summary"]["regime"] == "standard", "method"])
    assert methods <= seen  # every method drawn somewhere, 11 + 2 controls over several panels


def test_one_colour_per_method_variants_as_its_shades():
    pairs = [("magnitude", "magnitude"), ("screening", "screening")] + [
        (f"screening-lambda{v}", "screening") for v in ("0", "0.25", "0.5", "1", "10")]
    styles = series_styles(pairs + [("random", "random"), ("lamp", "lamp"), ("wanda", "wanda")])
    assert styles["magnitude"] == dict(method_style("magnitude"), linestyle="-")
    colors = [styles[p[0]]["color"] for p in pairs]
    assert len(set(colors)) == len(colors)  # every series told apart
    hue = colorsys.rgb_to_hsv(*to_rgb(method_style("screening")["color"]))[0]
    light = []
    for lab, _ in pairs[2:]:
        h, _, v = colorsys.rgb_to_hsv(*to_rgb(styles[lab]["color"]))
        assert h == pytest.approx(hue, abs=0.02) and styles[lab]["marker"] == method_style("screening")["marker"]
        light.append(sum(to_rgb(styles[lab]["color"])))
    assert light == sorted(light, reverse=True)  # λ 0 lightest … λ 10 darkest (natural order, not text order)
    assert len({c for c, _ in STYLE.values()}) == len(STYLE)  # the known methods' colours are distinct


def test_chunks_keep_variants_together_and_the_reference_everywhere():
    pairs = [("magnitude", "magnitude"), ("random", "random"), ("taylor", "taylor")]
    pairs += [(f"screening-lambda{v}", "screening") for v in (0, 0.25, 0.5, 0.75, 1)]
    pairs += [("contribution-kappa0", "contribution"), ("contribution-kappa1", "contribution"), ("lamp", "lamp"),
              ("obd", "obd"), ("wanda", "wanda")]
    chunks = chunk_series(pairs, "magnitude")
    assert all(c[0][0] == "magnitude" and len(c) <= MAX_SERIES - 1 for c in chunks)
    assert sorted(p for c in chunks for p in c[1:]) == sorted(pairs[1:])
    for c in chunks:
        keys = {k for _, k in c}
        assert "screening" not in keys or sum(k == "screening" for _, k in c) == 5  # λ variants in one panel
