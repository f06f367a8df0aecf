"""Per-batch accumulation behind `prunelab.stats.collect_statistics`: forward hooks that add one batch's
statistics to float64 sums with few, large tensor ops, so a batch costs its layer products, not Python.

- per-class moments (`ClassMoments`): every B×U value block of a batch (all layers, activations and inputs; an
  input that is another layer's activation tensor is kept once) is copied into one B×T float64 buffer (T = Σ U)
  and added to the K×T sums by label with index_add_, then squared in place and added to the K×T square sums;
- weight-shaped sums (`WeightSums`): the contribution correlations C = Σ_x |a|ᵀ (1/D), C2 = Σ_x (|a|²)ᵀ (1/D²),
  the taylor gradients and unit terms of all layers are written into one flat staging buffer in the model's
  dtype and added to the float64 sums once per batch; |w| ⊙ ΣC and w² ⊙ ΣC2 at the end (the weights do not
  change during the pass);
- taylor: one autograd.grad from dL/dlogits = softmax − onehot (the gradient of the summed cross-entropy); the
  per-sample unit terms t of all layers go into one B×T buffer, Σ_x t² is one matrix-vector product.
- input_sqnorm, feature_rank, fisher (wanda, hrank, obd): per-batch kernels in `prunelab.stats.extra`, staged
  like the weight-shaped sums; fisher shares taylor's autograd.grad (adding each layer's output to its inputs).
Buffers are kept between batches (no per-batch allocation of their size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.stats.extra import extra_specs, fisher_geometry, fisher_sq_sum, input_sqnorm, rank_sum


def unit_values(t: torch.Tensor, what: str) -> torch.Tensor:
    """Per-unit value of a layer tensor: B×U stays, B×U×H×W → spatial mean B×U."""
    if t.dim() == 2:
        return t
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    raise ValueError(f"{what}: expected a B×U or B×C×H×W tensor, got shape {tuple(t.shape)}")


def _inverse(den: torch.Tensor, eps: float, eps_t: torch.Tensor | None = None) -> torch.Tensor:
    """1 / (D + eps) where D > 0, else 0 (all contributions are 0 there), in place on `den` (eps_t: eps as a
    0-d tensor of den's dtype, saves wrapping the number on every call)."""
    den.add_(eps if eps_t is None else eps_t)
    F.threshold_(den, eps, torch.inf)                                # D + eps <= eps  ⇔  D == 0  →  1/inf = 0
    return den.reciprocal_()


def ce_grad(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂/∂z Σ_b CE(z_b, y_b) = softmax(z) − onehot(y) for B×K logits z (detached) and B labels y."""
    if z.device.type == "cpu" and z.shape[1] < 16:
        # CPU softmax over a short last dim is slow (B=256, K=10: 45 µs; over dim 0 of the transpose: 7 µs)
        g = torch.softmax(z.t(), 0)
        g.scatter_add_(0, y[None], g.new_full((1, len(y)), -1.0))
        return g.t()
    g = torch.softmax(z, 1)
    return g.scatter_add_(1, y[:, None], g.new_full((len(y), 1), -1.0))


class Scratch:
    """One flat buffer, kept between batches, for the big per-layer temporaries (used one layer at a time):
    allocating them afresh costs page faults on every batch once glibc has returned the memory."""

    def __init__(self):
        self.buf: torch.Tensor | None = None

    def like(self, t: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Uninitialised tensor of t's shape and dtype: t's strides (or channels-last ones for a 4-D t)."""
        if channels_last:
            b, c, h, w = t.shape
            stride = (h * w * c, 1, w * c, c)
        elif t.is_contiguous() or t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
            stride = t.stride()
        else:
            return torch.empty_like(t)
        if self.buf is None or self.buf.numel() < t.numel() or self.buf.dtype != t.dtype \
                or self.buf.device != t.device:
            self.buf = t.new_empty(t.numel())
        return self.buf.as_strided(t.shape, stride)


class ClassMoments:
    """Per-class Σ v and Σ v² (K×U float64) of named B×U blocks, for all blocks at once per batch.

    A B×T float64 buffer (T = Σ U, kept between batches): `put` copies each block into its columns; `end` adds the
    rows to the K×T sums by label (index_add_), squares the buffer in place and adds it to the K×T square sums."""

    def __init__(self, widths: dict, num_classes: int, device: torch.device):
        self.cols, start = {}, 0
        for key, width in widths.items():
            self.cols[key] = (start, start + width)
            start += width
        self.dev = device
        self.sums = torch.zeros(2, num_classes, start, dtype=torch.float64, device=device)
        self.sum, self.sqsum = self.sums.unbind(0)
        self.rows = self.buf = None
        self.views: dict = {}                          # key -> the block's B×U column view of `rows`
        self.seen: set = set()

    def begin(self, batch: int) -> None:
        if self.rows is None or self.rows.shape[0] != batch:
            if self.buf is None or self.buf.shape[0] < batch:
                self.buf = torch.empty(batch, self.sums.shape[2], dtype=torch.float64, device=self.dev)
            self.rows = self.buf[:batch]
            self.views = {key: self.rows[:, a:b] for key, (a, b) in self.cols.items()}
        self.seen.clear()

    def put(self, key: tuple[str, str], t: torch.Tensor) -> None:
        """t: B×U or B×U×H×W (→ spatial mean) layer tensor for key = ("act" | "in", layer), any float dtype."""
        view = self.views[key]
        if t.dim() == 4:
            t = t.mean(dim=(2, 3))
        if t.shape != view.shape:
            what = f"{'activation' if key[0] == 'act' else 'input'} of layer '{key[1]}'"
            unit_values(t, what)                                           # raises for other ranks
            raise ValueError(f"{what}: expected {view.shape[0]}×{view.shape[1]} unit values, got {tuple(t.shape)}")
        view.copy_(t)
        self.seen.add(key)

    def end(self, y: torch.Tensor) -> None:
        """y: B labels on the accumulator device."""
        if len(self.seen) != len(self.cols):
            raise RuntimeError(f"statistics: no values captured this batch for "
                               f"{[key for key in self.cols if key not in self.seen]}")
        self.sum.index_add_(0, y, self.rows)
        self.sqsum.index_add_(0, y, self.rows.square_())

    def results(self) -> dict:
        """{key: (Σ v, Σ v²)}, each K×U float64 (own memory)."""
        widths = [b - a for a, b in self.cols.values()]
        sums, squares = ([t.clone() for t in s.split(widths, 1)] for s in self.sums)
        return {key: (sums[i], squares[i]) for i, key in enumerate(self.cols)}


class WeightSums:
    """Float64 sums of named per-batch tensors (weight shapes): producers write a batch's tensor into `view(key)`
    (one flat staging buffer per dtype, on the compute device); `end` adds each buffer to its sums in one op."""

    def __init__(self, specs: dict, device: torch.device, acc_device: torch.device):
        """specs: {key: (shape, dtype)}."""
        self.where, sizes = {}, {}
        for key, (shape, dtype) in specs.items():
            start = sizes.get(dtype, 0)
            sizes[dtype] = start + torch.Size(shape).numel()
            self.where[key] = (dtype, start, sizes[dtype], torch.Size(shape))
        self.stage = {d: torch.empty(n, dtype=d, device=device) for d, n in sizes.items()}
        self.sums = {d: torch.zeros(n, dtype=torch.float64, device=acc_device) for d, n in sizes.items()}
        self.scratch = {d: None if d == torch.float64 and device == acc_device else torch.empty_like(s)
                        for d, s in self.sums.items()}         # float64 copies of the stages, kept
        self.views = {k: self.stage[d][a:b].view(s) for k, (d, a, b, s) in self.where.items()}
        self.written: set = set()

    def view(self, key) -> torch.Tensor:
        """The staging view for `key` (to be filled completely this batch)."""
        self.written.add(key)
        return self.views[key]

    def end(self) -> None:
        if len(self.written) != len(self.views):
            raise RuntimeError(f"statistics: no values written this batch for "
                               f"{[k for k in self.views if k not in self.written]}")
        for d, stage in self.stage.items():
            scratch = self.scratch[d]                  # convert into kept float64 memory, then add like to like
            self.sums[d].add_(stage if scratch is None else scratch.copy_(stage))
        self.written.clear()

    def results(self) -> dict:
        """{key: float64 sum} (views of the finished flat sums: copy or replace before keeping them)."""
        return {key: self.sums[d][a:b].view(s) for key, (d, a, b, s) in self.where.items()}


class Contribution:
    """Σ r and Σ r² of one Linear / Conv2d over batches of its input (see prunelab.stats for r): per batch the
    correlations C, C2 (weight shape, into staging views); r sums = |w| ⊙ ΣC and w² ⊙ ΣC2 (`finish`)."""

    def __init__(self, layer: nn.Module, name: str, mean: bool, squares: bool, eps: float, geo=None,
                 scratch: Scratch | None = None):
        w = layer.weight.detach()
        self.scratch = scratch or Scratch()
        self.name, self.mean, self.squares, self.eps, self.geo = name, mean, squares, eps, geo
        self.linear = isinstance(layer, nn.Linear)
        self.shape, self.dtype, self.weight = w.shape, w.dtype, w
        self.abs_w = w.abs().T if self.linear else w.abs()           # Linear: I×O for |a| @ |w|ᵀ
        self.positions, self.tmp = 0, None
        self.eps_t = torch.tensor(eps, dtype=w.dtype, device=w.device)

    def add(self, a: torch.Tensor, c_out: torch.Tensor | None, c2_out: torch.Tensor | None) -> None:
        """a: the layer's input for one batch, B×I (Linear) or B×C×H×W (Conv2d), detached; writes C into c_out
        and C2 into c2_out (weight shape, the weight's dtype; None: not needed)."""
        a = a.to(self.dtype)
        if self.linear:
            if a.dim() != 2:
                raise ValueError(f"layer '{self.name}': contribution needs a B×I input to a Linear, "
                                 f"got {tuple(a.shape)}")
            if self.tmp is None or self.tmp[0].shape != a.shape:             # |a| and 1/D, kept between batches
                self.tmp = a.new_empty(a.shape), a.new_empty(a.shape[0], self.shape[0])
            abs_a = torch.abs(a, out=self.tmp[0])
            inv = _inverse(torch.mm(abs_a, self.abs_w, out=self.tmp[1]), self.eps, self.eps_t)   # 1/D: B×O
            self.positions += a.shape[0]
            if c_out is not None:
                torch.mm(inv.T, abs_a, out=c_out)
            if c2_out is not None:                                         # the batch's temporaries: in place
                torch.mm(inv.square_().T, abs_a.square_(), out=c2_out)
            return
        abs_a = torch.abs(a, out=self.scratch.like(a, channels_last=True))  # oneDNN: faster on thin layers
        inv = _inverse(F.conv2d(abs_a, self.abs_w, None, **self.geo), self.eps, self.eps_t)  # 1/D: B×O×Ho×Wo
        self.positions += inv.shape[0] * inv.shape[2] * inv.shape[3]
        corr = torch.nn.grad.conv2d_weight
        if c_out is not None:
            c_out.copy_(corr(abs_a, self.shape, inv, **self.geo))
        if c2_out is not None:
            c2_out.copy_(corr(abs_a.square_(), self.shape, inv.square_(), **self.geo))

    def finish(self, c_sum: torch.Tensor | None, c2_sum: torch.Tensor | None) -> dict:
        """The layer's contribution keys from ΣC and ΣC2 (float64; new tensors)."""
        w = self.weight.to((c_sum if c_sum is not None else c2_sum).device)
        out = {"contrib_positions": float(self.positions)}
        if c_sum is not None:
            out["contrib_r_sum"] = c_sum * w.abs()                         # float64 (|w| is exact in it)
        if c2_sum is not None:
            out["contrib_r2_sum"] = (c2_sum * w).mul_(w)                   # (w² would round in float32)
        return out


class Collector:
    """Forward hooks on the prunable layers (inputs) and their activation sources (outputs) that add each
    batch's statistics to float64 sums on `acc_device`; `batch` runs one batch, `results` gives them all.

    sources: {layer: (module name, call index)} (prunelab.stats.activation_sources); aliases: {layer L: layer M}
    where L's input is M's activation tensor (its input moments are M's activation moments, kept once);
    needs ⊆ the hooked statistic names; contribution: {layer: Contribution} (empty without contribution).
    """

    def __init__(self, model, layers, sources, aliases, needs, num_classes, acc_device, contribution):
        self.layers, self.needs, self.dev = dict(layers), needs, acc_device
        self.contrib, self.taylor = contribution, "taylor" in needs
        self.fisher, self.want_sqnorm, self.want_rank = "fisher" in needs, "input_sqnorm" in needs, \
            "feature_rank" in needs
        self.want_act, self.want_in = "activations" in needs, "input_activations" in needs
        self.scratch = next((c.scratch for c in contribution.values()), None) or Scratch()
        self.in_key = {n: ("act", aliases[n]) if "activations" in needs and n in aliases else ("in", n)
                       for n in self.layers}
        widths = {}
        for name, m in layers:
            if "activations" in needs:
                widths[("act", name)] = m.weight.shape[0]
            if "input_activations" in needs and self.in_key[name][0] == "in":
                widths[("in", name)] = m.weight.shape[1]
        self.moments = ClassMoments(widths, num_classes, acc_device) if widths else None
        specs = {}
        for name, c in contribution.items():
            for key, on in (("c", c.mean), ("c2", c.squares)):
                if on:
                    specs[(name, key)] = (c.shape, c.dtype)
        if self.taylor:
            specs.update({(n, "grad"): (m.weight.shape, m.weight.dtype) for n, m in layers})
            self.unit_cols, start = {}, 0
            for n, m in layers:
                self.unit_cols[n] = (start, start + m.weight.shape[0])
                start += m.weight.shape[0]
            specs["units"] = ((start,), layers[0][1].weight.dtype)      # Σ_x t² of all layers' units
            self.terms = None                          # B×T per-sample unit terms t (model dtype) and ones(B)
            self.params = [m.weight for _, m in layers]
            self.weight_keys = [(n, "grad") for n, _ in layers] + ["units"]
        specs.update(extra_specs(layers, needs))       # wanda, hrank, obd (prunelab.stats.extra)
        self.geo = fisher_geometry(layers) if self.fisher else {}
        self.io: dict[str, tuple] = {}                 # fisher: layer -> (input, output, output version)
        weight = layers[0][1].weight
        self.weights = WeightSums(specs, weight.device, acc_device) if specs else None
        self.acts: dict[str, torch.Tensor] = {}        # unit activations of this batch, for taylor
        by_module: dict[str, list] = {}
        for name in self.layers:
            if "input_activations" in needs and self.in_key[name][0] == "in" or name in self.contrib \
                    or self.want_sqnorm or self.fisher:
                by_module.setdefault(name, []).append((False, name, 0))
            if self.taylor or "activations" in needs or self.want_rank:
                src, idx = sources[name]
                by_module.setdefault(src, []).append((True, name, idx))
        self.calls: dict[str, int] = {}
        self.active = False
        self.handles = [model.get_submodule(mod_name).register_forward_hook(
            lambda m, inp, out, mod_name=mod_name, jobs=jobs: self._hook(mod_name, jobs, inp, out))
            for mod_name, jobs in by_module.items()]

    def remove(self):
        for h in self.handles:
            h.remove()

    def _hook(self, mod_name, jobs, inp, out):
        if not self.active:
            return
        call = self.calls.get(mod_name, 0)
        self.calls[mod_name] = call + 1
        for is_output, name, idx in jobs:
            if idx != call:
                continue
            if is_output:
                if self.taylor:
                    self.acts[name] = out
                if self.want_act:
                    self.moments.put(("act", name), out.detach())
                if self.want_rank:
                    rank_sum(out.detach(), self.weights.view((name, "rank")), name)
            else:
                a = inp[0].detach()
                if self.want_sqnorm:
                    input_sqnorm(a, self.weights.view((name, "sqnorm")), name, self.scratch)
                if self.fisher:
                    self.io[name] = (a, out, out._version)
                if self.want_in and self.in_key[name][0] == "in":
                    self.moments.put(("in", name), a)
                c = self.contrib.get(name)
                if c is not None:
                    c.add(a, self.weights.view((name, "c")) if c.mean else None,
                          self.weights.view((name, "c2")) if c.squares else None)

    def batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """One forward of x (B×…) with the hooks on (and the taylor backward); y: B labels on x's device."""
        self.calls.clear()
        if self.moments is not None:
            self.moments.begin(len(x))
        self.active = True
        try:
            with torch.set_grad_enabled(self.taylor or self.fisher):
                logits = model(x)
        finally:
            self.active = False
        if self.moments is not None:
            self.moments.end(y if y.device == self.dev else y.to(self.dev))
        if self.taylor or self.fisher:
            self._backward(logits, y)
        if self.weights is not None:
            self.weights.end()

    def _backward(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """One autograd.grad of L = summed cross-entropy for taylor (w.r.t. weights and unit activations) and
        fisher (w.r.t. each layer's output), then each statistic's per-batch sums."""
        names, what = list(self.layers), "taylor" if self.taylor else "fisher"
        if logits.dim() != 2 or logits.shape[0] != len(y):
            raise ValueError(f"{what}: expected B×K logits for {len(y)} samples, got {tuple(logits.shape)}")
        inputs, acts, io = [], [], []
        if self.taylor:
            missing = [n for n in names if n not in self.acts]
            if missing:
                raise RuntimeError(f"taylor: no activation captured for layers {missing}")
            acts = [self.acts.pop(n) for n in names]
            inputs += self.params + acts
        if self.fisher:
            missing = [n for n in names if n not in self.io]
            if missing:
                raise RuntimeError(f"fisher: no layer output captured for layers {missing}")
            io = [self.io.pop(n) for n in names]
            changed = [n for n, (_, z, version) in zip(names, io) if z._version != version]
            if changed:
                raise ValueError(f"fisher: the outputs of layers {changed} are modified in place after the layer "
                                 "(an inplace=True op right after it?); the per-sample gradients need the output")
            inputs += [z for _, z, _ in io]
        grads = torch.autograd.grad(logits, inputs, ce_grad(logits.detach(), y), allow_unused=True)
        if self.taylor:
            self._taylor(grads[:2 * len(names)], acts, y)
        if self.fisher:
            for n, (a, _, _), g in zip(names, io, grads[len(grads) - len(names):]):
                view = self.weights.view((n, "fisher"))
                view.zero_() if g is None else fisher_sq_sum(self.layers[n], a, g, self.geo[n], view, n)

    def _taylor(self, grads: tuple, acts: list, y: torch.Tensor) -> None:
        """∂L/∂w into the staging views and Σ_x (Σ_p a ∂L/∂a)² per unit; grads: w.r.t. weights, then acts."""
        names = list(self.layers)
        if self.terms is None or self.terms[0].shape[0] != len(y):           # kept: no allocation per batch
            units = self.weights.views["units"]
            self.terms = units.new_empty(len(y), len(units)), units.new_ones(len(y))
            self.slots = [(n, self.weights.views[(n, "grad")], self.terms[0][:, a:b]) for n, (a, b)
                          in self.unit_cols.items()]
        self.weights.written.update(self.weight_keys)
        for (n, view, terms), gw, ga, a in zip(self.slots, grads, grads[len(names):], acts):
            view.zero_() if gw is None else view.copy_(gw)
            if ga is None:
                terms.zero_()
            elif a.dim() == 2 and a.shape == terms.shape:
                torch.mul(a.detach(), ga, out=terms)
            elif a.dim() == 4 and a.shape[:2] == terms.shape:
                terms.copy_(torch.mul(a.detach(), ga, out=self.scratch.like(a)).sum((2, 3)))  # Σ_p a ∂L/∂a
            else:
                raise ValueError(f"taylor: activation of layer '{n}' has shape {tuple(a.shape)}, expected "
                                 f"{terms.shape[0]}×{terms.shape[1]} (×H×W)")
        torch.mv(self.terms[0].square_().T, self.terms[1], out=self.weights.views["units"])  # Σ_x t² (per batch)

    def results(self) -> dict[str, dict]:
        """{layer: its statistics (keys as in prunelab.stats)}, float64 on the accumulator device."""
        moments = self.moments.results() if self.moments is not None else {}
        sums = self.weights.results() if self.weights is not None else {}
        out = {}
        for name in self.layers:
            entry = out[name] = {}
            if "activations" in self.needs:
                entry["act_sum"], entry["act_sqsum"] = moments[("act", name)]
            if "input_activations" in self.needs:
                key = self.in_key[name]
                entry["in_sum"], entry["in_sqsum"] = (t.clone() if key[0] == "act" else t for t in moments[key])
            c = self.contrib.get(name)
            if c is not None:
                entry.update(c.finish(sums.get((name, "c")), sums.get((name, "c2"))))
            if self.taylor:
                start, stop = self.unit_cols[name]
                entry["grad_sum"] = sums[(name, "grad")].clone()
                entry["taylor_unit_sq_sum"] = sums["units"][start:stop].clone()
            for key, stat in (("sqnorm", "input_sqnorm"), ("rank", "rank_sum"), ("fisher", "fisher_sum")):
                if (name, key) in sums:
                    entry[stat] = sums[(name, key)].clone()
        return out
