"""One colour and marker per method, the same in every figure; saving helpers."""
from __future__ import annotations

import zlib
from pathlib import Path

STYLE = {
    "random": ("#7f7f7f", "x"),
    "magnitude": ("#1f77b4", "o"),
    "taylor": ("#ff7f0e", "s"),
    "screening": ("#2ca02c", "^"),
    "contribution": ("#d62728", "D"),
    "frs": ("#9467bd", "v"),
    "gradual": ("#8c564b", "P"),
    "scratch": ("#e377c2", "X"),
}
_FALLBACK_COLORS = ("#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
_FALLBACK_MARKERS = ("<", ">", "h", "*", "p", "8", "d")
BASELINE_COLOR = "#555555"
DPI = 150


def method_style(key: str, label: str | None = None) -> dict:
    """Matplotlib kwargs (color, marker, linestyle) for a style key; variants change the line only."""
    if key in STYLE:
        color, marker = STYLE[key]
    else:  # unknown methods: stable across runs and processes (crc32, not hash())
        h = zlib.crc32(str(key).encode())
        color, marker = _FALLBACK_COLORS[h % len(_FALLBACK_COLORS)], _FALLBACK_MARKERS[h % len(_FALLBACK_MARKERS)]
    label = str(label if label is not None else key)
    if "(iterative)" in label:
        ls = "--"
    elif label in (key, f"{key}") or label.endswith(("(gradual)", "(scratch)")):
        ls = "-"
    else:
        ls = ":"
    return dict(color=color, marker=marker, linestyle=ls)


def new_figure(nrows: int = 1, ncols: int = 1, w: float = 4.2, h: float = 3.2, **kw):
    """(Figure, 2-d array of axes) without pyplot: no global state, no backend switch (Agg canvas)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, np.asarray(axes)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write name.png (DPI) and name.pdf (no timestamp)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.set_layout_engine("none")  # constrained layout ran once for the PNG: keep its positions (2× faster)
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


def legend_outside(fig, axes) -> None:
    """One legend for all panels, right of the axes (never over data); duplicates merged."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside right center", frameon=False,
                   fontsize="small")


def panel_title(ax, title: str) -> None:
    """Title a panel and give it the light grid every figure uses."""
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)


def finish_figure(fig, axes, title: str) -> None:
    """Figure title plus the shared legend outside the panels."""
    fig.suptitle(title)
    legend_outside(fig, axes.ravel())
