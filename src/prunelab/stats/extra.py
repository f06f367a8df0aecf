"""Per-batch kernels of the statistics "input_sqnorm" (wanda), "feature_rank" (hrank) and "fisher" (obd), called by
`prunelab.stats.accumulate.Collector`; each writes one batch's sum into a staging view (model dtype), which the
collector adds to its float64 sums.

- input_sqnorm: Σ_x Σ_p a_i(x, p)² per input unit i (Linear: feature; Conv2d: channel, p = spatial positions):
  one reduction over the layer input (the input is read once);
- feature_rank: Σ_x rank(A_u(x)) per output unit u, A_u(x) the H×W feature map of the unit's activation
  (torch.linalg.matrix_rank, batched over samples × channels; tolerance max(H, W)·eps·σ_max as numpy's);
  a B×U activation (Linear) is a 1×1 map: rank 1 where the value is nonzero;
- fisher: Σ_x (∂L_x/∂w)² (weight shape), the exact per-sample squared gradients, from the layer input a and the
  gradient g = ∂L/∂z at the layer output (L = Σ_x L_x; in eval mode sample x's rows of g are ∂L_x/∂z_x).
  Linear: ∂L_x/∂w_ji = g_xj a_xi, so Σ_x (∂L_x/∂w)² = (g²)ᵀ(a²), one product of the weight-gradient's size.
  Conv2d: ∂L_x/∂w = Σ_p g_x(p) a_x(p)ᵀ does not separate over positions p, so the per-sample gradients are
  formed, squared and summed: the multiply-adds of the weight gradient, kept per sample. Convs with
  ≥ SHIFTED_MIN_CHANNELS inputs: one bmm per kernel offset on a shifted view of the padded input (split into
  its stride phases; no im2col, 1.3–2× the weight gradient's CPU time); others (and dilated convs): bmm of g
  with the unfolded input, in chunks of bounded memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ELEMENTS = 1 << 24          # per-sample gradient / unfolded input elements per chunk (64 MiB in float32)
SHIFTED_MIN_CHANNELS = 8          # convs with this many input channels or more: shifted views, no im2col


def conv_geometry(layer: nn.Conv2d, name: str) -> dict:
    """stride / padding / dilation of a Conv2d for functional calls; refuses what the formulas don't cover."""
    if layer.groups != 1:
        raise ValueError(f"layer '{name}': grouped Conv2d (groups={layer.groups}) is not supported by "
                         "the contribution and fisher statistics")
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str) and layer.padding != "valid":
        raise ValueError(f"layer '{name}': Conv2d padding={layer.padding!r}, padding_mode={layer.padding_mode!r} "
                         "is not supported (need integer zero padding)")
    padding = 0 if isinstance(layer.padding, str) else layer.padding
    return {"stride": layer.stride, "padding": padding, "dilation": layer.dilation}


def extra_specs(layers: list, needs: set[str]) -> dict:
    """Staging specs {(layer, key): (shape, dtype)} of the needed statistics among these three."""
    specs = {}
    for n, m in layers:
        w = m.weight
        for stat, key, shape in (("input_sqnorm", "sqnorm", (w.shape[1],)), ("feature_rank", "rank", (w.shape[0],)),
                                 ("fisher", "fisher", w.shape)):
            if stat in needs:
                specs[(n, key)] = (shape, w.dtype)
    return specs


def fisher_geometry(layers: list) -> dict:
    """{layer: None (Linear) or its conv geometry (prunelab.stats.conv_geometry)}."""

    return {n: None if isinstance(m, nn.Linear) else conv_geometry(m, n) for n, m in layers}


def input_sqnorm(a: torch.Tensor, out: torch.Tensor, name: str, scratch=None) -> None:
    """out (I) ← Σ over samples and positions of a², a: B×I or B×C×H×W; scratch: a prunelab.stats.accumulate
    Scratch for a² (a² then a plain sum is 3–5× faster on CPU than linalg.vector_norm's strided reduction)."""
    if a.dim() not in (2, 4) or a.shape[1] != out.shape[0]:
        raise ValueError(f"input_sqnorm: layer '{name}' input has shape {tuple(a.shape)}, expected B×{out.shape[0]} "
                         f"or B×{out.shape[0]}×H×W")
    sq = torch.square(a) if scratch is None else torch.square(a, out=scratch.like(a))
    torch.sum(sq, (0,) if a.dim() == 2 else (0, 2, 3), out=out)


def rank_sum(t: torch.Tensor, out: torch.Tensor, name: str) -> None:
    """out (U) ← Σ_x rank of each unit's feature map, t: B×U×H×W (or B×U: 1×1 maps)."""
    if t.dim() not in (2, 4) or t.shape[1] != out.shape[0]:
        raise ValueError(f"feature_rank: activation of layer '{name}' has shape {tuple(t.shape)}, expected "
                         f"B×{out.shape[0]}(×H×W)")
    if t.dim() == 2:
        out.copy_((t != 0).sum(0))
    else:
        out.copy_(torch.linalg.matrix_rank(t).sum(0))


def _fisher_conv_shifted(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, geo: dict, out: torch.Tensor) -> None:
    """Conv2d (dilation 1) per-sample squared gradients without im2col. The zero-padded input (channels last) is
    split into its stride phases (one image for stride 1), each Hq×Wq (Wq = Wo + (kw − 1) // sw) and flattened
    over rows of width Wq, and g is zero-padded to width Wq (B×O×Ho·Wq): the input window of kernel offset
    (i, j) is then the contiguous slice of phase (i mod sh, j mod sw) starting at (i // sh)·Wq + j // sw, so each
    offset's per-sample gradient is one bmm (B×O×C) of g and a view of the input."""
    kh, kw = layer.kernel_size
    sh, sw = geo["stride"]
    ph, pw = (geo["padding"], geo["padding"]) if isinstance(geo["padding"], int) else geo["padding"]
    b, c, h, w = a.shape
    o, ho, wo = g.shape[1:]
    hq, wq = ho + (kh - 1) // sh + 1, wo + (kw - 1) // sw          # (one spare row: the last slice runs over)
    x = F.pad(a.permute(0, 2, 3, 1), (0, 0, pw, sw * wq - w - pw, ph, sh * hq - h - ph))   # (negative: crop)
    gt = F.pad(g.permute(0, 2, 3, 1), (0, 0, 0, wq - wo)).reshape(b, -1, o).transpose(1, 2)
    length = ho * wq
    per = None
    for pi in range(min(sh, kh)):
        for pj in range(min(sw, kw)):
            flat = (x if (sh, sw) == (1, 1) else x[:, pi::sh, pj::sw]).reshape(b, -1, c)    # B×Hq·Wq×C
            for i in range(pi, kh, sh):
                for j in range(pj, kw, sw):
                    start = (i // sh) * wq + j // sw
                    per = torch.bmm(gt, flat[:, start:start + length], out=per)          # B×O×C
                    out[:, :, i, j].copy_(per.square_().sum(0))


def fisher_sq_sum(layer: nn.Module, a: torch.Tensor, g: torch.Tensor, geo: dict | None, out: torch.Tensor,
                  name: str) -> None:
    """out (weight shape) ← Σ_x (∂L_x/∂w)²; a: the layer input (B×I or B×C×H×W), g: ∂L/∂(layer output)."""
    if isinstance(layer, nn.Linear):
        if a.dim() != 2 or g.dim() != 2:
            raise ValueError(f"fisher: layer '{name}' needs B×I inputs and B×O outputs, got {tuple(a.shape)} and "
                             f"{tuple(g.shape)}")
        torch.mm(g.square().T, a.square(), out=out)
        return
    c = a.shape[1]
    if c >= SHIFTED_MIN_CHANNELS and tuple(geo["dilation"]) == (1, 1):
        _fisher_conv_shifted(layer, a, g, geo, out)
        return
    b, o = g.shape[:2]
    k = out[0].numel()
    g = g.reshape(b, o, -1)
    positions = g.shape[2]
    step = max(1, CHUNK_ELEMENTS // (k * max(o, positions)))
    acc = out.view(o, k)
    for start in range(0, b, step):
        cols = F.unfold(a[start:start + step], layer.kernel_size, geo["dilation"], geo["padding"], geo["stride"])
        per = torch.bmm(g[start:start + step], cols.transpose(1, 2))         # chunk × O × K per-sample grads
        if start == 0:
            torch.sum(per.square_(), 0, out=acc)
        else:
            acc.add_(per.square_().sum(0))
