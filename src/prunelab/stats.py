"""Activation statistics for scoring: one calibration pass, per-class float64 sums, bounded memory.

Statistic names (methods declare them; `collect_statistics` computes exactly their union):
  "activations"        per-class moments of each layer's OUTPUT units (screening, structured)
  "input_activations"  per-class moments of each layer's INPUT units (screening, unstructured)
  "contribution_mean"  Σ r_ij over samples × output positions (contribution)
  "contribution_sq"    Σ r_ij² (contribution with kappa != 0)
  "taylor"             Σ_x ∂L_x/∂w and Σ_x (Σ_p a·∂L_x/∂a)² (taylor; needs a backward pass)
  "relevance"          per-class Σ of LRP-αβ unit relevance + per-class accuracy (frs)

Layout of the returned dict / stats.pt (tensors float64 on CPU; K classes, N samples, U output units,
I input units: Linear in_features, Conv2d in_channels):
  "version": 1, "needs": sorted list[str], "num_classes": K, "num_samples": N,
  "class_count": K (samples per class), "lrp": {"alpha", "beta"} (relevance only),
  "class_acc": K (relevance only; fraction of class-k samples the model classifies right, 0 if none),
  "layers": {layer_name: {
      "type": "Linear" | "Conv2d", "weight_shape": list[int], "count": K (= class_count),
      "act_source": name of the module whose output is the unit activation: the layer's output after
                    the BatchNorm and nonlinearity that directly follow it, else the layer itself,
      "act_sum", "act_sqsum": K×U      activations: Σ z, Σ z² per class (conv: z = mean over H×W)
      "in_sum", "in_sqsum": K×I        input_activations: same for the layer's input units
      "contrib_positions": float       N × output positions (the denominator of E[r])
      "contrib_r_sum": weight shape    contribution_mean: Σ r_ij
      "contrib_r2_sum": weight shape   contribution_sq: Σ r_ij²
      "grad_sum": weight shape         taylor: Σ_x ∂L_x/∂w (L_x = cross-entropy of the true label)
      "taylor_unit_sq_sum": U          taylor: Σ_x (Σ_p a_u(x, p) ∂L_x/∂a_u(x, p))², a = unit activation
      "relevance_sum": K×U             relevance: Σ over class-k samples of the unit's signed relevance
  }}
r_ij(x) = |w_ij a_i(x)| / (Σ_i' |w_i'j a_i'(x)| + CONTRIBUTION_EPS); for Conv2d per weight element and output
position, the sum running over the whole receptive field (input channels × kernel positions).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STAT_NAMES = ("activations", "input_activations", "contribution_mean", "contribution_sq", "taylor", "relevance")
CONTRIBUTION_EPS = 1e-12
STATS_VERSION = 1
_REGEN = "regenerate with snakemake --forcerun collect_stats"

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_THROUGH = (nn.Dropout, nn.Identity)
_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
              nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear of `model` as (name, module) (prunelab.models.prunable_layers)."""
    from prunelab.models import prunable_layers as layers

    return layers(model)


def required_statistics(method_names: Iterable[str], configs: dict[str, dict] | None = None) -> set[str]:
    """Union of the statistics the named methods declare.

    With `configs` ({method: config}), a method may declare less for its config (contribution with
    kappa = 0 skips "contribution_sq"); without, the full declaration is used.
    """
    from prunelab.methods import get_method

    needs: set[str] = set()
    for name in method_names:
        spec = get_method(name)
        cfg = None if configs is None else configs.get(name)
        needs |= spec.needs_for_config(cfg)
    return needs


# ------------------------------------------------------------------------------------------ pass helpers
def unit_values(t: torch.Tensor, what: str) -> torch.Tensor:
    """Per-unit value of a layer tensor: B×U stays, B×U×H×W → spatial mean B×U."""
    if t.dim() == 2:
        return t
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    raise ValueError(f"{what}: expected a B×U or B×C×H×W tensor, got shape {tuple(t.shape)}")


def conv_geometry(layer: nn.Conv2d, name: str) -> dict:
    """stride / padding / dilation of a Conv2d for functional calls; refuses what the formulas don't cover."""
    if layer.groups != 1:
        raise ValueError(f"layer '{name}': grouped Conv2d (groups={layer.groups}) is not supported by "
                         "the contribution statistics")
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str) and layer.padding != "valid":
        raise ValueError(f"layer '{name}': Conv2d padding={layer.padding!r}, padding_mode={layer.padding_mode!r} "
                         "is not supported (need integer zero padding)")
    padding = 0 if isinstance(layer.padding, str) else layer.padding
    return {"stride": layer.stride, "padding": padding, "dilation": layer.dilation}


def _inverse(den: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / (D + eps) where D > 0, else 0 (all contributions are 0 there), in place on `den`."""
    den.add_(eps)
    F.threshold_(den, eps, torch.inf)                                # D + eps <= eps  ⇔  D == 0  →  1/inf = 0
    return den.reciprocal_()


def contribution_sums(layer: nn.Module, a: torch.Tensor, name: str, squares: bool,
                      eps: float = CONTRIBUTION_EPS) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Σ r and Σ r² (weight shape, dtype of `a`) over a batch of layer inputs `a` (B×I or B×C×H×W),
    and the number of (sample, output position) terms. Matrix products only, no loops."""
    w = layer.weight.detach().to(a.dtype)
    abs_w = w.abs()
    if isinstance(layer, nn.Linear):
        if a.dim() != 2:
            raise ValueError(f"layer '{name}': contribution needs a B×I input to a Linear, got {tuple(a.shape)}")
        abs_a = a.abs()
        inv = _inverse(abs_a @ abs_w.T, eps)                         # 1/D: B×O
        r_sum = abs_w * (inv.T @ abs_a)
        r2_sum = (w * w) * ((inv * inv).T @ (abs_a * abs_a)) if squares else None
        return r_sum, r2_sum, a.shape[0]
    geo = conv_geometry(layer, name)
    abs_a = torch.abs(a, out=torch.empty_like(a, memory_format=torch.channels_last))  # oneDNN: faster, thin layers
    inv = _inverse(F.conv2d(abs_a, abs_w, None, **geo), eps)         # 1/D: B×O×Ho×Wo
    corr = torch.nn.grad.conv2d_weight
    r_sum = abs_w * corr(abs_a, w.shape, inv, **geo)
    r2_sum = (w * w) * corr(abs_a * abs_a, w.shape, inv * inv, **geo) if squares else None
    return r_sum, r2_sum, inv.shape[0] * inv.shape[2] * inv.shape[3]


def _leaf_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple, torch.Tensor]]:
    """(name, module, tensor inputs, output) of every leaf-module call of one forward, in call order."""
    calls, handles = [], []
    for name, m in model.named_modules():
        if next(m.children(), None) is None:
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: calls.append(
                    (name, mod, tuple(t for t in inp if torch.is_tensor(t)), out))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def activation_sources(model: nn.Module, x_probe: torch.Tensor, layers: list[tuple[str, nn.Module]]
                       ) -> dict[str, tuple[str, int]]:
    """For each layer: (module name, call index) whose output is the layer's unit activation.

    Follows the layer's output through the modules that alone consume it: at most one BatchNorm, then
    Dropout/Identity, then one nonlinearity (stop). Where none follows, the layer's own output.
    """
    calls = _leaf_calls(model, x_probe)
    per_name: dict[str, int] = {}
    index: list[int] = []
    for name, *_ in calls:
        index.append(per_name.get(name, 0))
        per_name[name] = index[-1] + 1
    sources = {}
    for name, _ in layers:
        where = [i for i, c in enumerate(calls) if c[0] == name]
        if len(where) != 1:
            raise ValueError(f"layer '{name}' is called {len(where)} times in one forward; statistics need "
                             "exactly one call per prunable layer")
        cur, seen_bn = where[0], False
        while True:
            out = calls[cur][3]
            users = [j for j in range(cur + 1, len(calls)) if any(t is out for t in calls[j][2])]
            if not users or (len(users) > 1 and calls[users[0]][3] is not out):
                break                                  # several readers (unless the first is in place)
            nxt = calls[users[0]][1]
            if isinstance(nxt, _BATCHNORM) and not seen_bn:
                seen_bn = True
            elif not isinstance(nxt, _PASS_THROUGH + _NONLINEAR):
                break
            cur = users[0]
            if isinstance(nxt, _NONLINEAR):
                break
        sources[name] = (calls[cur][0], index[cur])
    return sources


def _check_inputs(model, x, y, needs, num_classes, batch_size) -> set[str]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    needs = set(needs)
    bad = sorted(needs - set(STAT_NAMES))
    if bad:
        raise ValueError(f"unknown statistics {bad}; valid statistic names: {list(STAT_NAMES)}")
    if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() >= 2 and x.shape[0] > 0):
        raise ValueError("x_float must be a non-empty float tensor N×C×H×W (normalised calibration images), got "
                         + (f"{x.dtype} of shape {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__))
    if not torch.isfinite(x).all():
        raise ValueError("x_float contains NaN or inf")
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not (torch.is_tensor(y) and y.dim() == 1 and not y.is_floating_point() and len(y) == len(x)):
        raise ValueError(f"y must be a 1-D integer tensor of {len(x)} labels (one per sample), got "
                         + (f"{y.dtype} of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__))
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels y must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return needs


# ------------------------------------------------------------------------------------------ the pass
class _Collector:
    """Forward hooks that add one batch's statistics to float64 accumulators."""

    def __init__(self, model, layers, sources, needs, num_classes, acc_device):
        self.layers, self.sources, self.needs = dict(layers), sources, needs
        self.k, self.dev = num_classes, acc_device
        self.y: torch.Tensor | None = None
        self.active = False
        self.acts: dict[str, torch.Tensor] = {}       # unit activations of this batch, for taylor
        self.acc: dict[str, dict] = {n: {} for n in self.layers}
        self.handles = []
        self.calls: dict[str, int] = {}
        by_module: dict[str, list] = {}
        for name in self.layers:
            by_module.setdefault(name, []).append(("input", name, 0))
            src, idx = sources[name]
            by_module.setdefault(src, []).append(("output", name, idx))
        modules = dict(model.named_modules())
        self.handles.append(model.register_forward_pre_hook(lambda *_: self.calls.clear()))
        for mod_name, jobs in by_module.items():
            self.handles.append(modules[mod_name].register_forward_hook(
                lambda m, inp, out, mod_name=mod_name, jobs=jobs: self._hook(mod_name, jobs, inp, out)))

    def remove(self):
        for h in self.handles:
            h.remove()

    def _add(self, name: str, key: str, value: torch.Tensor):
        value = value.to(self.dev, torch.float64)
        store = self.acc[name]
        store[key] = value if key not in store else store[key] + value

    def _per_class(self, name: str, key: str, values: torch.Tensor):
        """values B×U → per-class Σ (key_sum) and Σ² (key_sqsum), K×U float64."""
        v = values.detach().to(self.dev, torch.float64)
        y = self.y.to(self.dev)
        for suffix, t in (("_sum", v), ("_sqsum", v * v)):
            store = self.acc[name]
            if key + suffix not in store:
                store[key + suffix] = torch.zeros(self.k, v.shape[1], dtype=torch.float64, device=self.dev)
            store[key + suffix].index_add_(0, y, t)

    def _hook(self, mod_name, jobs, inp, out):
        if not self.active:
            return
        call = self.calls.get(mod_name, 0)
        self.calls[mod_name] = call + 1
        for kind, name, idx in jobs:
            if idx != call:
                continue
            if kind == "output":
                if "taylor" in self.needs:
                    self.acts[name] = out
                if "activations" in self.needs:
                    self._per_class(name, "act", unit_values(out.detach(), f"activation of layer '{name}'"))
            else:
                self._layer_input(name, inp[0].detach())

    @torch.no_grad()
    def _layer_input(self, name: str, a: torch.Tensor):
        layer = self.layers[name]
        if "input_activations" in self.needs:
            self._per_class(name, "in", unit_values(a, f"input of layer '{name}'"))
        if "contribution_mean" in self.needs or "contribution_sq" in self.needs:
            r_sum, r2_sum, positions = contribution_sums(layer, a, name, "contribution_sq" in self.needs)
            store = self.acc[name]
            store["contrib_positions"] = store.get("contrib_positions", 0.0) + float(positions)
            if "contribution_mean" in self.needs:
                self._add(name, "contrib_r_sum", r_sum)
            if r2_sum is not None:
                self._add(name, "contrib_r2_sum", r2_sum)

    def taylor_backward(self, logits: torch.Tensor, y: torch.Tensor):
        """Cross-entropy (sum over the batch) → Σ ∂L/∂w and per-sample (Σ_p a ∂L/∂a)² per unit."""
        names = list(self.layers)
        missing = [n for n in names if n not in self.acts]
        if missing:
            raise RuntimeError(f"taylor: no activation captured for layers {missing}")
        loss = F.cross_entropy(logits, y, reduction="sum")
        weights = [self.layers[n].weight for n in names]
        acts = [self.acts[n] for n in names]
        grads = torch.autograd.grad(loss, weights + acts, allow_unused=True)
        for i, n in enumerate(names):
            gw, ga = grads[i], grads[len(names) + i]
            self._add(n, "grad_sum", torch.zeros_like(weights[i]) if gw is None else gw)
            if ga is None:
                ga = torch.zeros_like(acts[i])
            t = (acts[i].detach() * ga).flatten(2).sum(2) if ga.dim() == 4 else acts[i].detach() * ga
            self._add(n, "taylor_unit_sq_sum", t.double().square().sum(0))
        self.acts.clear()


def _add_relevance(sums: dict, rel: dict, layers, y: torch.Tensor, num_classes: int, device) -> None:
    """Add a batch of unit relevance ({layer: B×U}) to per-class sums ({layer: K×U float64})."""
    for name, m in layers:
        r, units = rel.get(name), m.weight.shape[0]
        if r is None or tuple(r.shape) != (len(y), units):
            raise ValueError(f"lrp.unit_relevance gave {None if r is None else tuple(r.shape)} for layer "
                             f"'{name}', expected ({len(y)}, {units})")
        if name not in sums:
            sums[name] = torch.zeros(num_classes, units, dtype=torch.float64, device=device)
        sums[name].index_add_(0, y.to(device), r.detach().to(device, torch.float64))


def collect_statistics(model: nn.Module, x_float: torch.Tensor, y: torch.Tensor, needs: set[str],
                       num_classes: int, batch_size: int, device: str | torch.device = "cpu", *,
                       lrp_alpha: float = 2.0, lrp_beta: float = 1.0) -> dict:
    """One pass over the calibration samples; returns the statistics dict described in the module docstring.

    x_float: N×C×H×W normalised inputs (CPU or device); y: N labels in [0, num_classes). The model is
    moved to `device` and put in eval mode for the pass (its training flag is restored). Memory is
    bounded by layer sizes × classes, not by N. Sums are float64, so any batching gives the same numbers
    up to the rounding of per-batch products in the model's dtype (exactly, for a float64 model).
    """
    needs = _check_inputs(model, x_float, y, needs, num_classes, batch_size)
    device = torch.device(device)
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to collect statistics for")
    class_count = torch.bincount(y.cpu().long(), minlength=num_classes).double()
    stats = {"version": STATS_VERSION, "needs": sorted(needs), "num_classes": num_classes,
             "num_samples": len(x_float), "class_count": class_count,
             "layers": {n: {"type": type(m).__name__, "weight_shape": list(m.weight.shape),
                            "count": class_count.clone()} for n, m in layers}}
    if not needs:
        return stats                                   # random / magnitude: no pass at all

    acc_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")   # float64 sums
    was_training = model.training
    from prunelab.models import place

    place(model, device).eval()
    dtype = next(model.parameters()).dtype
    hooked = needs - {"relevance"}
    frozen = [m.weight for _, m in layers if not m.weight.requires_grad] if "taylor" in needs else []
    for w in frozen:                                   # taylor differentiates w.r.t. every prunable weight
        w.requires_grad_(True)
    sources = activation_sources(model, x_float[:2].to(device, dtype), layers) if hooked else {}
    collector = _Collector(model, layers, sources, hooked, num_classes, acc_device) if hooked else None
    correct = torch.zeros(num_classes, dtype=torch.float64)
    relevance, lrp_logits, handles = {}, [], []
    if "relevance" in needs:
        from prunelab.lrp import unit_relevance  # lazy: LRP only when frs is configured

        # the LRP pass is a forward too: its logits give the per-class accuracy (no extra forward)
        handles.append(model.register_forward_hook(lambda m, inp, out: lrp_logits.append(out.detach())))
    try:
        for start in range(0, len(x_float), batch_size):
            xb = x_float[start:start + batch_size].to(device, dtype)
            yb = y[start:start + batch_size].to(device).long()
            if collector is not None:
                collector.y, collector.active = yb, True
                with torch.set_grad_enabled("taylor" in needs):
                    logits = model(xb)
                    collector.active = False
                    if "taylor" in needs:
                        collector.taylor_backward(logits, yb)
            if "relevance" in needs:
                lrp_logits.clear()
                rel = unit_relevance(model, xb, yb, alpha=lrp_alpha, beta=lrp_beta)
                if len(lrp_logits) != 1:
                    raise RuntimeError(f"expected one model forward inside lrp.unit_relevance, saw {len(lrp_logits)}")
                hit = (lrp_logits[0].argmax(1) == yb).double().cpu()
                correct.index_add_(0, yb.cpu(), hit)
                _add_relevance(relevance, rel, layers, yb, num_classes, acc_device)
    finally:
        for h in handles:
            h.remove()
        if collector is not None:
            collector.remove()
        model.train(was_training)
        for w in frozen:
            w.requires_grad_(False)
    for name, _ in layers:
        entry = stats["layers"][name]
        if collector is not None:
            entry["act_source"] = sources[name][0]
            entry.update({k: v.cpu() if torch.is_tensor(v) else v for k, v in collector.acc[name].items()})
        if name in relevance:
            entry["relevance_sum"] = relevance[name].cpu()
    if "relevance" in needs:
        stats["class_acc"] = torch.where(class_count > 0, correct / class_count.clamp(min=1), 0.0)
        stats["lrp"] = {"alpha": float(lrp_alpha), "beta": float(lrp_beta)}
    return stats


# ------------------------------------------------------------------------------------------ files
def save_statistics(stats: dict, path: str | Path) -> None:
    """Write `stats` atomically (temporary file in the same folder, then os.replace)."""
    from prunelab.io import save_torch

    if not isinstance(stats, dict) or "layers" not in stats:
        raise ValueError("save_statistics: expected the dict returned by collect_statistics (with 'layers')")
    save_torch(stats, path)


def load_statistics(path: str | Path) -> dict:
    """Read a stats.pt written by save_statistics (weights_only); a missing, truncated or corrupt file raises
    naming the path and how to regenerate it."""
    path = Path(path)
    try:
        stats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"statistics file {path} is missing, truncated or corrupt ({type(exc).__name__}: "
                           f"{exc}); {_REGEN}") from exc
    if not isinstance(stats, dict) or not isinstance(stats.get("layers"), dict) or "needs" not in stats:
        raise RuntimeError(f"statistics file {path} is not a statistics dict (no 'layers'/'needs'); {_REGEN}")
    if stats.get("version") != STATS_VERSION:
        raise RuntimeError(f"statistics file {path} has version {stats.get('version')!r}, this code reads "
                           f"version {STATS_VERSION}; {_REGEN}")
    return stats
