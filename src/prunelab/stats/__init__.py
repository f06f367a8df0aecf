"""Activation statistics for scoring: one calibration pass, per-class float64 sums, bounded memory.

Statistic names (methods declare them; `collect_statistics` computes exactly their union):
  "activations"        per-class moments of each layer's OUTPUT units (screening, structured)
  "input_activations"  per-class moments of each layer's INPUT units (screening, unstructured)
  "contribution_mean"  Σ r_ij over samples × output positions (contribution)
  "contribution_sq"    Σ r_ij² (contribution with kappa != 0)
  "taylor"             Σ_x ∂L_x/∂w and Σ_x (Σ_p a·∂L_x/∂a)² (taylor; needs a backward pass)
  "relevance"          per-class Σ of LRP-αβ unit relevance + per-class accuracy (frs)
  "input_sqnorm"       Σ_x Σ_p a_i² per input unit (wanda; conv: over positions, not of the spatial mean)
  "feature_rank"       Σ_x rank of each unit's activation map (hrank)
  "fisher"             Σ_x (∂L_x/∂w)², exact per-sample squared gradients (obd; needs a backward pass)

Layout of the returned dict / stats.pt (tensors float64 on CPU; K classes, N samples, U output units,
I input units: Linear in_features, Conv2d in_channels):
  "version": 1, "needs": sorted list[str], "num_classes": K, "num_samples": N,
  "class_count": K (samples per class), "lrp": {"alpha", "beta"} (relevance only),
  "class_acc": K (relevance only; fraction of class-k samples the model classifies right, 0 if none),
  "layers": {layer_name: {
      "type": "Linear" | "Conv2d", "weight_shape": list[int], "count": K (= class_count),
      "act_source": name of the module whose output is the unit activation: the layer's output after
                    the BatchNorm and nonlinearity that directly follow it, else the layer itself (with
                    any statistic but input_sqnorm and fisher, which do not need it),
      "act_sum", "act_sqsum": K×U      activations: Σ z, Σ z² per class (conv: z = mean over H×W)
      "in_sum", "in_sqsum": K×I        input_activations: same for the layer's input units
      "contrib_positions": float       N × output positions (the denominator of E[r])
      "contrib_r_sum": weight shape    contribution_mean: Σ r_ij
      "contrib_r2_sum": weight shape   contribution_sq: Σ r_ij²
      "grad_sum": weight shape         taylor: Σ_x ∂L_x/∂w (L_x = cross-entropy of the true label)
      "taylor_unit_sq_sum": U          taylor: Σ_x (Σ_p a_u(x, p) ∂L_x/∂a_u(x, p))², a = unit activation
      "relevance_sum": K×U             relevance: Σ over class-k samples of the unit's signed relevance
      "input_sqnorm": I                input_sqnorm: Σ_x Σ_p a_i(x, p)² of the layer's input (p: positions)
      "rank_sum": U                    feature_rank: Σ_x rank of the unit activation's H×W map (Linear: 1×1,
                                       rank 1 where nonzero); numpy's tolerance max(H, W)·eps·σ_max, model dtype
      "fisher_sum": weight shape       fisher: Σ_x (∂L_x/∂w)² (L_x as for taylor; prunelab.stats.extra)
  }}
r_ij(x) = |w_ij a_i(x)| / (Σ_i' |w_i'j a_i'(x)| + CONTRIBUTION_EPS); for Conv2d per weight element and output
position, the sum running over the whole receptive field (input channels × kernel positions).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from prunelab.data import calibration_subset
from prunelab.io import CorruptFileError, load_torch, regenerate_hint, save_torch
from prunelab.models import place, prunable_layers
from prunelab.settings import StatsSettings
from prunelab.stats.accumulate import Collector, Contribution, Scratch, unit_values  # noqa: F401 (unit_values: API)
from prunelab.stats.extra import conv_geometry

STAT_NAMES = ("activations", "input_activations", "contribution_mean", "contribution_sq", "taylor", "relevance",
              "input_sqnorm", "feature_rank", "fisher")
CONTRIBUTION_EPS = 1e-12
log = logging.getLogger("prunelab.stats")
STATS_VERSION = 1

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_THROUGH = (nn.Dropout, nn.Identity)
_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
              nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus)


# ------------------------------------------------------------------------------------------ pass helpers
def _leaf_calls(model: nn.Module, x: torch.Tensor) -> list[tuple]:
    """(name, module, tensor inputs, output, (version of the first input, of the output)) of every leaf-module
    call of one forward, in call order; versions (`Tensor._version`) as the call returns."""
    leaves = {id(m): name for name, m in model.named_modules() if next(m.children(), None) is None}
    calls = []

    def hook(mod, inp, out):                           # one global hook (cheaper than one per leaf), ours only
        name = leaves.get(id(mod))
        if name is not None:
            inp = tuple(t for t in inp if torch.is_tensor(t))
            calls.append((name, mod, inp, out, (inp[0]._version if inp else None,
                                                out._version if torch.is_tensor(out) else None)))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return calls


def activation_sources(model: nn.Module, x_probe: torch.Tensor, layers: list[tuple[str, nn.Module]]
                       ) -> dict[str, tuple[str, int]]:
    """For each layer: (module name, call index) whose output is the layer's unit activation.

    Follows the layer's output through the modules that alone consume it: at most one BatchNorm, then
    Dropout/Identity, then one nonlinearity (stop). Where none follows, the layer's own output.
    """
    return _probe(model, x_probe, layers)[0]


def _probe(model: nn.Module, x_probe: torch.Tensor, layers: list[tuple[str, nn.Module]]
           ) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """activation_sources, and the layers whose input IS another layer's activation: {layer: that layer}
    where the input tensor is the source's output object, not modified in place in between (so its unit
    values, and their per-class moments, are the same)."""
    calls = _leaf_calls(model, x_probe)
    by_name: dict[str, list[int]] = {}                 # module name -> its call indices
    readers: dict[int, list[int]] = {}                 # id(tensor) -> indices of the calls reading it
    index: list[int] = []                              # call -> how many earlier calls of the same module
    for i, (name, _, inputs, *_) in enumerate(calls):
        index.append(len(by_name.setdefault(name, [])))
        by_name[name].append(i)
        for t in inputs:
            if readers.setdefault(id(t), [])[-1:] != [i]:
                readers[id(t)].append(i)
    sources, source_call, layer_call = {}, {}, {}
    for name, _ in layers:
        where = by_name.get(name, [])
        if len(where) != 1:
            raise ValueError(f"layer '{name}' is called {len(where)} times in one forward; statistics need "
                             "exactly one call per prunable layer")
        cur, seen_bn = where[0], False
        while True:
            out = calls[cur][3]
            users = [j for j in readers.get(id(out), ()) if j > cur]
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
        source_call[name], layer_call[name] = cur, where[0]
    aliases = {}
    for name, i in layer_call.items():
        for other, j in source_call.items():
            if calls[i][2] and calls[i][2][0] is calls[j][3] and calls[i][4][0] == calls[j][4][1]:
                aliases[name] = other
                break
    return sources, aliases


def _check_inputs(model, x, y, needs, num_classes, batch_size) -> tuple[set[str], torch.Tensor]:
    """Validated needs and the per-class sample counts (K float64, CPU)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    needs = set(needs)
    bad = sorted(needs - set(STAT_NAMES))
    if bad:
        raise ValueError(f"unknown statistics {bad}; valid statistic names: {list(STAT_NAMES)}")
    if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() >= 2 and x.shape[0] > 0):
        raise ValueError("x_float must be a non-empty float tensor N×C×H×W (normalised calibration images), got "
                         + (f"{x.dtype} of shape {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__))
    if not math.isfinite(x.sum()) and not all(map(math.isfinite, x.aminmax())):   # (a finite sum: no NaN/inf)
        raise ValueError("x_float contains NaN or inf")
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not (torch.is_tensor(y) and y.dim() == 1 and not y.is_floating_point() and len(y) == len(x)):
        raise ValueError(f"y must be a 1-D integer tensor of {len(x)} labels (one per sample), got "
                         + (f"{y.dtype} of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__))
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    labels = y.cpu().long()
    try:
        count = torch.bincount(labels, minlength=num_classes)     # K entries unless a label is >= K
    except RuntimeError:                                          # a negative label
        count = None
    if count is None or len(count) > num_classes:
        raise ValueError(f"labels y must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return needs, count.double()


# ------------------------------------------------------------------------------------------ the pass
def _contributions(layers, needs: set[str]) -> dict[str, Contribution]:
    """{layer: Contribution accumulator} where contribution statistics are needed, else {}."""
    mean, squares = "contribution_mean" in needs, "contribution_sq" in needs
    if not (mean or squares):
        return {}
    scratch = Scratch()                                # one buffer for every layer's |a|
    return {n: Contribution(m, n, mean, squares, CONTRIBUTION_EPS,
                            None if isinstance(m, nn.Linear) else conv_geometry(m, n), scratch) for n, m in layers}


def _add_relevance(sums: dict, rel: dict, layers, y: torch.Tensor, num_classes: int, device) -> None:
    """Add a batch of unit relevance ({layer: B×U}) to per-class sums ({layer: K×U float64})."""
    y, n = y.to(device), len(y)
    for name, m in layers:
        r, units = rel.get(name), m.weight.shape[0]
        if r is None or r.shape != (n, units):
            raise ValueError(f"lrp.unit_relevance gave {None if r is None else tuple(r.shape)} for layer "
                             f"'{name}', expected ({n}, {units})")
        if name not in sums:
            sums[name] = torch.zeros(num_classes, units, dtype=torch.float64, device=device)
        sums[name].index_add_(0, y, r.to(device, torch.float64))


def collect_statistics(model: nn.Module, x_float: torch.Tensor, y: torch.Tensor, needs: set[str],
                       num_classes: int, batch_size: int, device: str | torch.device = "cpu", *,
                       lrp_alpha: float | None = None, lrp_beta: float | None = None) -> dict:
    """One pass over the calibration samples; returns the statistics dict described in the module docstring.

    x_float: N×C×H×W normalised inputs (CPU or device); y: N labels in [0, num_classes). The model is
    moved to `device` and put in eval mode for the pass (its training flag is restored). Memory is
    bounded by layer sizes × classes, not by N. Sums are float64, so any batching gives the same numbers
    up to the rounding of per-batch products in the model's dtype (exactly, for a float64 model).
    lrp_alpha, lrp_beta: the LRP-αβ rule of "relevance" (None: the frs method's options in the schema).
    """
    needs, class_count = _check_inputs(model, x_float, y, needs, num_classes, batch_size)
    device = torch.device(device)
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to collect statistics for")
    stats = {"version": STATS_VERSION, "needs": sorted(needs), "num_classes": num_classes,
             "num_samples": len(x_float), "class_count": class_count,
             "layers": {n: {"type": type(m).__name__, "weight_shape": list(m.weight.shape),
                            "count": class_count.clone()} for n, m in layers}}
    if not needs:
        return stats                                   # random / magnitude: no pass at all

    acc_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")   # float64 sums
    was_training = model.training
    place(model, device)
    training = any(m.training for m in model.modules())
    if training:                                       # (eval/train walk every module: only when needed)
        model.eval()
    dtype = next(model.parameters()).dtype
    hooked = needs - {"relevance"}
    frozen = [m.weight for _, m in layers if not m.weight.requires_grad] if needs & {"taylor", "fisher"} else []
    for w in frozen:                                   # taylor / fisher differentiate through every prunable weight
        w.requires_grad_(True)
    probe = hooked - {"input_sqnorm", "fisher"}       # (these two read only the layers' own inputs and outputs)
    sources, aliases = _probe(model, x_float[:2].to(device, dtype), layers) if probe else ({}, {})
    collector = Collector(model, layers, sources, aliases, hooked, num_classes, acc_device,
                          _contributions(layers, hooked)) if hooked else None
    correct = torch.zeros(num_classes, dtype=torch.float64)
    relevance, handles = {}, []
    if "relevance" in needs:
        from prunelab.stats.lrp import RelevanceSession, ab_parameters  # lazy: LRP only when frs is configured

        lrp_alpha, lrp_beta = ab_parameters(lrp_alpha, lrp_beta)
        lrp = RelevanceSession(model, alpha=lrp_alpha, beta=lrp_beta)  # set up once for all batches
        handles.append(lrp)                                              # closed (forwards restored) in `finally`
    try:
        for start in range(0, len(x_float), batch_size):
            xb = x_float[start:start + batch_size].to(device, dtype)
            yb = y[start:start + batch_size].to(device).long()
            if collector is not None:
                collector.batch(model, xb, yb)
            if "relevance" in needs:
                # the LRP pass is a forward too: its logits give the per-class accuracy (no extra forward)
                rel, _, lrp_logits = lrp(xb, yb)
                hit = (lrp_logits.argmax(1) == yb).double().cpu()
                correct.index_add_(0, yb.cpu(), hit)
                _add_relevance(relevance, rel, layers, yb, num_classes, acc_device)
    finally:
        for h in handles:
            h.remove()
        if collector is not None:
            collector.remove()
        if training:
            model.train(was_training)
        for w in frozen:
            w.requires_grad_(False)
    results = collector.results() if collector is not None else {}
    for name, _ in layers:
        entry = stats["layers"][name]
        if name in sources:
            entry["act_source"] = sources[name][0]
        if collector is not None:
            entry.update({k: v.cpu() if torch.is_tensor(v) else v for k, v in results[name].items()})
        if name in relevance:
            entry["relevance_sum"] = relevance[name].cpu()
    if "relevance" in needs:
        stats["class_acc"] = torch.where(class_count > 0, correct / class_count.clamp(min=1), 0.0)
        stats["lrp"] = {"alpha": float(lrp_alpha), "beta": float(lrp_beta)}
    return stats


# ------------------------------------------------------------------------------------------ files
def save_statistics(stats: dict, path: str | Path) -> None:
    """Write `stats` atomically (prunelab.io.save_torch)."""
    if not isinstance(stats, dict) or "layers" not in stats:
        raise ValueError("save_statistics: expected the dict returned by collect_statistics (with 'layers')")
    save_torch(stats, path)


def load_statistics(path: str | Path) -> dict:
    """Read a stats.pt written by save_statistics (weights_only); a missing, truncated or corrupt file raises
    naming the path and how to regenerate it."""
    stats = load_torch(path, what="statistics file", producer="collect_stats")
    hint = regenerate_hint(path, "collect_stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("layers"), dict) or "needs" not in stats:
        raise CorruptFileError(f"statistics file {path} is not a statistics dict (no 'layers'/'needs'); {hint}")
    if stats.get("version") != STATS_VERSION:
        raise CorruptFileError(f"statistics file {path} has version {stats.get('version')!r}, this code reads "
                               f"version {STATS_VERSION}; {hint}")
    return stats


def collect_baseline_statistics(model: nn.Module, data: dict, needs: list[str] | set[str],
                                stats_cfg: StatsSettings | dict, seed: int, device, lrp: dict | None = None) -> dict:
    """Statistics `needs` (see prunelab.methods.required_statistics) of a trained model on its calibration subset.

    lrp: {"alpha", "beta"} of the LRP-αβ rule, for the "relevance" statistic (the frs method's options).
    """
    needs = set(needs)
    if "relevance" in needs and lrp is None:
        raise ValueError("statistic 'relevance' needs the LRP rule's alpha and beta (the frs options)")
    stats_cfg = StatsSettings.of(stats_cfg)
    x, y = calibration_subset(data, stats_cfg.samples, seed)
    log.info("collecting %s on %d calibration samples (of %d requested)", sorted(needs), len(x),
             stats_cfg.samples)
    t0 = time.perf_counter()
    rule = {"lrp_alpha": lrp["alpha"], "lrp_beta": lrp["beta"]} if lrp else {}
    stats = collect_statistics(model, x, y, needs, int(data["num_classes"]), stats_cfg.batch_size, device, **rule)
    log.info("computed %s for %d layers on %d samples in %.2f s", sorted(needs), len(stats["layers"]), len(x),
             time.perf_counter() - t0)
    return stats
