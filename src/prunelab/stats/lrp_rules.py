"""The LRP-αβ rule of each module kind (see prunelab.stats.lrp), as tensor ops shared by its two passes: the autograd
Function (any model) and the chain pass (plain nn.Sequential, no autograd)."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from prunelab.models.layers import Add
from prunelab.settings import method_defaults

EPS = 1e-9
_RESHAPE = (nn.Flatten, nn.Unflatten)


def _stab_div_(r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """z ← r / (z + ε·sign(z)), sign(0) = +1, in place (z: a fresh tensor of r's shape); returns z."""
    z.add_(z < 0, alpha=-2 * EPS).add_(EPS)
    return torch.div(r, z, out=z)


def is_signed(a: torch.Tensor) -> bool:
    """Whether a has a negative entry (one min over its dense memory: NHWC reductions are slow)."""
    if a.dim() == 4 and not a.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last):
        a = a.permute(0, 2, 3, 1)
    return a.numel() > 0 and torch.amin(a.reshape(-1)).item() < 0


@functools.lru_cache(maxsize=64)
def _halves_of(units: int, first: float, second: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[first]*units + [second]*units (2·units, read-only use: cached)."""
    return torch.tensor([first, second], dtype=dtype, device=device).repeat_interleave(units)


class _AlphaBeta:
    """αβ rule of one Conv2d / Linear with O units, its weights w = w⁺ + w⁻ taken (detached) once.

    forward(a, signed) -> (z, zs): zs = [z⁺ + ε ; z⁻ − ε], 2O units stacked on the unit dim (conv: dim 1,
    Linear: last), from ONE product with stacked weights [w⁺; w⁻] and bias [ε; −ε] (signed a: one more, a⁻ with
    [w⁻; w⁺]); z = z⁺ + z⁻ + bias is the module's output (up to float rounding).
    backward(a, zs, r, signed) -> relevance at the input (shape of a) = a⁺ ⊙ Tᵀ(s) (+ a⁻ ⊙ T'ᵀ(s)),
    s = [r; r] / zs (written into zs), T = [α w⁺; −β w⁻] (T' = [α w⁻; −β w⁺]): ONE transposed product
    (conv_transpose2d for convs). Grouped convs: the two halves as separate products.
    """

    def __init__(self, module: nn.Module, alpha: float, beta: float):
        w = module.weight.detach()
        self.key = (w.data_ptr(), w._version, alpha, beta)
        self.units, self.dim = w.shape[0], -1
        self.bias = None if module.bias is None else module.bias.detach()
        self.conv, self.groups = None, 1
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str) and module.padding != "valid":
                raise ValueError(f"frs/LRP: Conv2d with padding={module.padding!r}, "
                                 f"padding_mode={module.padding_mode!r} is not supported")
            pad = (0, 0) if isinstance(module.padding, str) else tuple(module.padding)
            self.conv = dict(stride=module.stride, padding=pad, dilation=module.dilation, groups=module.groups)
            self.dim, self.groups, self.kernel = 1, module.groups, tuple(w.shape[2:])
            if self.bias is not None:
                self.bias = self.bias[:, None, None]
        cl = torch.channels_last
        self.fmt = cl if w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=cl) \
            else torch.contiguous_format
        self.w, self.alpha, self.beta = w, alpha, beta
        self.eps = _halves_of(self.units, EPS, -EPS, w.dtype, w.device)
        wp = w.clamp(min=0)
        self.pos, self.neg = self._weights(wp, w - wp), None  # w − w⁺ = w⁻ exactly

    def _weights(self, wp: torch.Tensor, wn: torch.Tensor) -> tuple:
        """Stacked weights of the a⁺ products (forward [w⁺; w⁻], backward [α w⁺; −β w⁻]); given (w⁻, w⁺):
        those of the a⁻ products."""
        if self.groups > 1:
            return (wp, wn), (self.alpha * wp, -self.beta * wn)
        fwd = torch.cat([wp, wn])
        scale = _halves_of(self.units, self.alpha, -self.beta, fwd.dtype, fwd.device)
        bwd = fwd * scale.view(-1, *[1] * (fwd.dim() - 1))
        return fwd.contiguous(memory_format=self.fmt), bwd.contiguous(memory_format=self.fmt)

    def _neg(self) -> tuple:
        if self.neg is None:  # made on first use: most layers only see ReLU outputs
            self.neg = self._weights(self.w.clamp(max=0), self.w.clamp(min=0))
        return self.neg

    def _product(self, a: torch.Tensor, w, bias) -> torch.Tensor:
        """a (…×I or B×C×H×W) → stacked 2O units."""
        if self.conv is None:
            return nn.functional.linear(a, w, bias)
        if self.groups == 1:
            return nn.functional.conv2d(a, w, bias, **self.conv)
        bu, bv = bias.chunk(2) if bias is not None else (None, None)
        return torch.cat([nn.functional.conv2d(a, w[0], bu, **self.conv),
                          nn.functional.conv2d(a, w[1], bv, **self.conv)], 1)

    def _transposed(self, s: torch.Tensor, w, shape) -> torch.Tensor:
        """Stacked 2O units s → input units (shape), Σ_j w_ji s_j."""
        if self.conv is None:
            return s @ w
        c = self.conv  # conv_transpose2d: as fast as a forward conv (conv2d_input materialises the input's size)
        opad = [n - ((m - 1) * st - 2 * p + d * (k - 1) + 1) for n, m, st, p, d, k in
                zip(shape[2:], s.shape[2:], c["stride"], c["padding"], c["dilation"], self.kernel)]
        args = (None, c["stride"], c["padding"], opad, c["groups"], c["dilation"])
        if self.groups == 1:
            return nn.functional.conv_transpose2d(s, w, *args)
        su, sv = s.split(self.units, 1)
        tconv = nn.functional.conv_transpose2d
        return tconv(su, w[0], *args).add_(tconv(sv, w[1], *args))

    def forward(self, a: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        zs = self._product(a.clamp(min=0) if signed else a, self.pos[0], self.eps)
        if signed:
            zs.add_(self._product(a.clamp(max=0), self._neg()[0], None))
        z = torch.add(*zs.chunk(2, self.dim))  # z⁺ + z⁻ (halves: views)
        return (z if self.bias is None else z.add_(self.bias)), zs

    def backward(self, a: torch.Tensor, zs: torch.Tensor, r: torch.Tensor, signed: bool) -> torch.Tensor:
        """zs is overwritten (with s)."""
        for half in zs.chunk(2, self.dim):
            torch.div(r, half, out=half)
        if not signed:
            return self._transposed(zs, self.pos[1], a.shape).mul_(a)
        return self._transposed(zs, self.pos[1], a.shape).mul_(a.clamp(min=0)).add_(
            self._transposed(zs, self._neg()[1], a.shape).mul_(a.clamp(max=0)))


def alpha_beta_step(module: nn.Module, a: torch.Tensor, r: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """αβ rule through one Conv2d (a: B×C×H×W) or Linear (a: B×I); r is the relevance at the output
    (shape of module(a)); returns the relevance at the input, shape of a."""
    rule, signed = _AlphaBeta(module, alpha, beta), is_signed(a)
    return rule.backward(a, rule.forward(a, signed)[1], r, signed)


def reduce_maps(r: torch.Tensor) -> torch.Tensor:
    """Unit relevance B×U: conv maps B×C×H×W → signed mean over H×W."""
    return r.flatten(2).mean(2) if r.dim() > 2 else r


def vjp(out: torch.Tensor, inputs: list[torch.Tensor], v: torch.Tensor) -> tuple:
    """Σ v·∂out/∂inputs, as the gradient of the scalar <out, v> (autograd.grad with a grad tensor
    imports sympy on first use: seconds per process)."""
    with torch.enable_grad():
        return torch.autograd.grad((out * v).sum(), inputs, allow_unused=True)


def ab_rule(state: dict, name: str, module: nn.Module) -> _AlphaBeta:
    """The layer's prepared αβ weights, made again only when its weight changed."""
    rule, w = state["ab"].get(name), module.weight
    if rule is None or rule.key != (w.data_ptr(), w._version, state["alpha"], state["beta"]):
        rule = state["ab"][name] = _AlphaBeta(module, state["alpha"], state["beta"])
    return rule


def record_relevance(state: dict, name: str, r: torch.Tensor) -> None:
    """Add r (relevance at layer `name`'s output) to the pass's layer relevances."""
    if name in state["layers"]:
        unit = reduce_maps(r) if state["reduce"] else r.clone()
        prev = state["out"].get(name)
        state["out"][name] = unit if prev is None else prev + unit


def rule_forward(module: nn.Module, rule: str, name: str, state: dict, xs: tuple, nonneg: bool = False):
    """One ruled module's forward for LRP → (output, what rule_backward needs). nonneg: xs known ≥ 0."""
    fwd = type(module).forward
    if getattr(module, "inplace", False):  # e.g. ReLU(inplace=True): never write into a saved tensor
        xs = tuple(x.clone() for x in xs)
    if rule == "leaf":  # a weighted layer whose input relevance nobody wants; xs[0]: an anchor to hang on
        out = fwd(module, *xs[1:])
        state["shapes"].setdefault(name, out.shape)
        return out, ("leaf",)
    if rule == "alpha_beta":
        ab, signed = ab_rule(state, name, module), not nonneg and is_signed(xs[0])
        out, zs = ab.forward(xs[0], signed)
        state["shapes"].setdefault(name, out.shape)
        return out, ("ab", ab, signed, xs[0], zs)   # zs: overwritten in backward
    if type(module) is Add and len(xs) == 2 and xs[0].shape == xs[1].shape:  # a + b: no graph to keep
        return xs[0] + xs[1], ("add",) + xs
    if type(module) in _RESHAPE:
        return fwd(module, *xs), ("reshape", xs[0].shape)
    if rule in ("route", "proportional"):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            out = fwd(module, *leaves)
        return out.detach(), ("graph", leaves, out)
    out = fwd(module, *xs)
    if rule == "identity" and out.shape != xs[0].shape:
        raise ValueError(f"frs/LRP: identity rule on '{name}' changes the shape")
    return (out.clone() if out is xs[0] else out), ("identity",)


def rule_backward(rule: str, name: str, state: dict, saved: tuple, r: torch.Tensor, need: tuple) -> tuple:
    """Relevance at each input (None where need[i] is False) from r at the output (see module docstring)."""
    kind = saved[0]
    if kind == "identity":
        return (r,)
    if kind == "leaf":
        record_relevance(state, name, r)
        return (None,) * len(need)
    if kind == "ab":
        record_relevance(state, name, r)
        _, ab, signed, a, zs = saved
        return (ab.backward(a, zs, r, signed),)
    if kind == "reshape":
        return (r.reshape(saved[1]),)
    if kind == "add":  # R_a = a·s, R_b = b·s, s = r / stab(a + b)
        _, a, b = saved
        s = _stab_div_(r, a + b)
        return (a * s if need[0] else None, s.mul_(b) if need[1] else None)
    _, leaves, out = saved
    if rule == "route":
        grads = vjp(out, leaves, r)
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))
    grads = vjp(out, leaves, _stab_div_(r, out.detach().clone()))
    return tuple(torch.zeros_like(x) if g is None else x.detach() * g for x, g in zip(leaves, grads))


class RelevanceFunction(torch.autograd.Function):
    """Forward = the module's forward (αβ layers: from the stacked product); backward = its relevance rule."""

    @staticmethod
    def forward(ctx, module, rule, name, state, *xs):
        out, ctx.saved = rule_forward(module, rule, name, state, xs)
        ctx.lrp = (rule, name, state)
        return out

    @staticmethod
    def backward(ctx, r):
        saved, ctx.saved = ctx.saved, None
        return (None, None, None, None) + rule_backward(*ctx.lrp, saved, r, ctx.needs_input_grad[4:])


def ab_parameters(alpha: float | None, beta: float | None) -> tuple[float, float]:
    """(α, β) of the LRP-αβ rule: None takes the frs method's option from the schema (methods.frs)."""
    options = method_defaults("frs")
    return (options["alpha"] if alpha is None else alpha, options["beta"] if beta is None else beta)
