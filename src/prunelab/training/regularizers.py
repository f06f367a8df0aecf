"""Pruning-aware training term R (regime `pat`; docs/methods.md): loss = task loss + β·R.

Forward hooks on every prunable layer keep the layer's input a of the latest forward (graph attached);
`value()` turns them into R with gradient to the weights (and, through a, to earlier layers).

"contribution_entropy": R = mean over layers of [mean over samples and output neurons j (conv: output
  channel × position) of H_j(x) = −Σ_i r_ij(x) log r_ij(x)], r_ij(x) = |w_ij a_i(x)| / (S_j(x) + ε),
  S_j(x) = Σ_i |w_ij a_i(x)| (conv: i runs over the receptive field). Vectorised exactly as
  H = (S log(S + ε) − T) / (S + ε), T = Σ_i |w_ij a_i| log|w_ij a_i| = |a| * (|w| log|w|) + (|a| log|a|) * |w|
  (* = the layer's matmul / conv without bias). Concentrated contributions → low entropy → more prunable weights.
"contribution_l1": R = Σ over layers of Σ_ij |w_ij| E|a_i| = Σ_j E_{x,p}[S_j(x, p)] (conv: E over samples and
  output positions, each weight meeting the inputs of its receptive-field position).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.models import prunable_layers
from prunelab.stats import CONTRIBUTION_EPS, conv_geometry

KINDS = ("contribution_entropy", "contribution_l1")


def xlogx(v: torch.Tensor) -> torch.Tensor:
    """v·log v for v ≥ 0, with 0·log 0 = 0 and a zero (not NaN) gradient at 0."""
    pos = v > 0
    return torch.where(pos, v * torch.log(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))


class ContributionRegularizer:
    """R of the latest forward pass of `model`; see the module docstring. Use `.remove()` when done."""

    def __init__(self, model: nn.Module, kind: str = "contribution_entropy", eps: float = CONTRIBUTION_EPS):
        if kind not in KINDS:
            raise ValueError(f"unknown regularizer kind {kind!r}; valid kinds: {list(KINDS)}")
        self.kind, self.eps = kind, float(eps)
        self.layers = prunable_layers(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to regularise")
        self.geometry = {n: conv_geometry(m, n) for n, m in self.layers if isinstance(m, nn.Conv2d)}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(lambda mod, inp, out, name=name: self.inputs.__setitem__(name, inp[0]))
                        for name, m in self.layers]

    def _apply(self, name: str, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The layer's linear map (no bias) of a (B×I or B×C×H×W) with weight w → B×O or B×O×Ho×Wo."""
        if name in self.geometry:
            return F.conv2d(a, w, None, **self.geometry[name])
        if a.dim() != 2:
            raise ValueError(f"{self.kind}: layer '{name}' got a {a.dim()}-D input; Linear inputs must be B×I")
        return a @ w.T

    def value(self) -> torch.Tensor:
        """R (0-dim tensor) from the inputs captured in the latest forward; the captured inputs are released."""
        missing = [n for n, _ in self.layers if n not in self.inputs]
        if missing:
            raise RuntimeError(f"{self.kind}: no input captured for layers {missing}; run a forward pass of the "
                               "model before value() (and call value() once per forward)")
        terms = []
        for name, m in self.layers:
            a = self.inputs[name]
            abs_a, abs_w = a.abs(), m.weight.abs()
            s = self._apply(name, abs_a, abs_w)                   # S: B×O(×Ho×Wo)
            if self.kind == "contribution_l1":
                terms.append(s.sum() * (s.shape[1] / s.numel()))  # Σ_j mean over samples × positions
                continue
            t = self._apply(name, abs_a, xlogx(abs_w)) + self._apply(name, xlogx(abs_a), abs_w)
            entropy = (s * torch.log(s + self.eps) - t) / (s + self.eps)
            terms.append(entropy.mean())
        self.inputs.clear()
        total = torch.stack(terms)
        return total.sum() if self.kind == "contribution_l1" else total.mean()

    def remove(self) -> None:
        """Detach the hooks and drop captured inputs."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.inputs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


@contextlib.contextmanager
def regularizer_loss(model: nn.Module, regularizer_cfg: dict | None):
    """`extra_loss` for prunelab.training.train_model: β·R of `regularizer_cfg` {kind, beta} (the pat regime), or
    None without a regulariser or with β = 0 (standard training bit for bit); the hooks go on exit."""
    if not regularizer_cfg or float(regularizer_cfg["beta"]) <= 0:
        yield None
        return
    beta = float(regularizer_cfg["beta"])
    with ContributionRegularizer(model, regularizer_cfg["kind"]) as reg:
        yield lambda: beta * reg.value()
