"""One colour and marker per method, the same in every figure; saving helpers."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .collect import method_rank

STYLE = {
    "random": ("#7f7f7f", "x"),
    "magnitude": ("#1f77b4", "o"),
    "taylor": ("#ff7f0e", "s"),
    "screening": ("#2ca02c", "^"),
    "contribution": ("#d62728", "D"),
    "frs": ("#9467bd", "v"),
    "gradual": ("#8c564b", "P"),
    "scratch": ("#e377c2", "X"),
    "wanda": ("#17becf", "<"),
    "lamp": ("#bcbd22", ">"),
    "obd": ("#393b79", "h"),
    "fpgm": ("#637939", "p"),
    "bn_scale": ("#8c6d31", "*"),
    "hrank": ("#7b4173", "d"),
}
_FALLBACK_COLORS = ("#843c39", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194", "#6b6ecf")
_FALLBACK_MARKERS = ("8", "H", "1", "2", "3", "4", "+")
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


MAX_SERIES = 8  # series a panel holds, the baseline included
LINESTYLES = ("-", "--", "-.", ":")


def _mix(color: str, other: str, f: float) -> str:
    """`color` moved a fraction f towards `other` (hex colours)."""
    a, b = (tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (color, other))
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


def series_styles(pairs) -> dict[str, dict]:
    """{label: color/marker/linestyle} for the series of one figure, from (label, style key) pairs: one colour per
    method (its key); the plain method in that colour with a solid line, its variants (other labels of the key) as
    shades of it from light to dark in natural label order (λ 0 … 1), with line styles cycling - -- -. :."""
    by_key: dict[str, list[str]] = {}
    for label, key in pairs:
        by_key.setdefault(key, [])
        if label not in by_key[key]:
            by_key[key].append(label)
    out = {}
    for key, labels in by_key.items():
        base = method_style(key)
        variants = sorted((lab for lab in labels if lab != key), key=method_rank)
        if key in labels:
            out[key] = dict(base, linestyle="-")
        n = len(variants)
        # -0.5: half-way to white … +0.5: 40 % towards black; the plain method keeps the unshaded colour (0)
        shades = list(np.linspace(-0.5, 0.5, n + 1)) if key in labels else list(np.linspace(-0.5, 0.5, n) if n > 1
                                                                                  else [0.0])
        if key in labels:
            shades.pop(int(np.argmin(np.abs(shades))))
        for i, (lab, f) in enumerate(zip(variants, shades)):
            color = _mix(base["color"], "#ffffff", -f) if f < 0 else _mix(base["color"], "#000000", 0.8 * f)
            out[lab] = dict(color=color, marker=base["marker"], linestyle=LINESTYLES[(i + 1) % len(LINESTYLES)])
    return out


def chunk_series(pairs, reference: str | None, size: int = MAX_SERIES - 1) -> list[list[tuple[str, str]]]:
    """Split (label, style key) pairs into panels of at most `size` series, a method's variants kept together
    where they fit, the reference in every panel (for comparison)."""
    ref = [p for p in pairs if p[0] == reference]
    rest = [p for p in pairs if p[0] != reference]
    groups: dict[str, list] = {}
    for p in rest:
        groups.setdefault(p[1], []).append(p)
    room = max(1, size - len(ref))
    chunks: list[list] = []
    for group in groups.values():
        for i in range(0, len(group), room):
            part = group[i:i + room]
            if chunks and len(chunks[-1]) + len(part) <= room:
                chunks[-1] += part
            else:
                chunks.append(list(part))
    return [ref + c for c in chunks] or ([ref] if ref else [])


def new_figure(nrows: int = 1, ncols: int = 1, w: float = 4.2, h: float = 3.2, **kw):
    """(Figure, 2-d array of axes) without pyplot: no global state, no backend switch (Agg canvas)."""
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
