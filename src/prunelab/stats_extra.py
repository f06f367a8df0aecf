"""Per-batch kernels of the statistics "input_sqnorm" (wanda), "feature_rank" (hrank) and "fisher" (obd), called by
`prunelab.stats_accumulate.Collector`; each writes one batch's sum into a staging view (model dtype), which the
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
  formed (bmm of g with the unfolded input, samples in chunks of bounded memory), squared and summed: the same
  multiply-adds as the weight gradient, kept per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ELEMENTS = 1 << 24          # per-sample gradient / unfolded input elements per chunk (64 MiB in float32)


def input_sqnorm(a: torch.Tensor, out: torch.Tensor, name: str) -> None:
    """out (I) ← Σ over samples and positions of a², a: B×I or B×C×H×W."""
    if a.dim() not in (2, 4) or a.shape[1] != out.shape[0]:
        raise ValueError(f"input_sqnorm: layer '{name}' input has shape {tuple(a.shape)}, expected B×{out.shape[0]} "
                         f"or B×{out.shape[0]}×H×W")
    torch.linalg.vector_norm(a, 2, dim=(0,) if a.dim() == 2 else (0, 2, 3), out=out)
    out.square_()


def rank_sum(t: torch.Tensor, out: torch.Tensor, name: str) -> None:
    """out (U) ← Σ_x rank of each unit's feature map, t: B×U×H×W (or B×U: 1×1 maps)."""
    if t.dim() not in (2, 4) or t.shape[1] != out.shape[0]:
        raise ValueError(f"feature_rank: activation of layer '{name}' has shape {tuple(t.shape)}, expected "
                         f"B×{out.shape[0]}(×H×W)")
    if t.dim() == 2:
        out.copy_((t != 0).sum(0))
    else:
        out.copy_(torch.linalg.matrix_rank(t).sum(0))


def fisher_sq_sum(layer: nn.Module, a: torch.Tensor, g: torch.Tensor, geo: dict | None, out: torch.Tensor,
                  name: str) -> None:
    """out (weight shape) ← Σ_x (∂L_x/∂w)²; a: the layer input (B×I or B×C×H×W), g: ∂L/∂(layer output)."""
    if isinstance(layer, nn.Linear):
        if a.dim() != 2 or g.dim() != 2:
            raise ValueError(f"fisher: layer '{name}' needs B×I inputs and B×O outputs, got {tuple(a.shape)} and "
                             f"{tuple(g.shape)}")
        torch.mm(g.square().T, a.square(), out=out)
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
