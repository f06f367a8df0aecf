"""Layer-wise relevance propagation (LRP-αβ) for the `frs` method (Aketi et al. 2020, arXiv 2002.09958).

One forward pass in which every module is swapped for an autograd Function whose backward propagates
relevance instead of gradient, then one `torch.autograd.grad` from the initial relevance at the logits.
Rules per module type:

- Conv2d / Linear: αβ rule on the positive / negative parts of the contributions a_i·w_ij (signed inputs
  handled), no bias in the denominators, ε = 1e-9:
  R_i = Σ_j [α (a_i w_ij)⁺ / (z⁺_j + ε) − β (a_i w_ij)⁻ / (z⁻_j − ε)] R_j.
- BatchNorm, ReLU, Dropout, Identity: identity (relevance passes unchanged).
- MaxPool, Flatten/Unflatten, option-A shortcut (subsample + zero-pad channels): outputs are copies of
  selected inputs, so relevance follows the gradient routing (max-pool: winner takes all).
- AvgPool2d, AdaptiveAvgPool2d, Add: proportional to the inputs, R_i = a_i ∂z/∂a_i · R / z.

With α − β = 1 each unit passes on exactly its relevance (layer totals are conserved), except a unit
whose contributions all share one sign (z⁺ or z⁻ = 0): it passes on α·R or β·R.

Initial relevance (default `init="onehot"`): the one-hot of the true label at the logits, so every
sample brings total relevance 1 (`init="logit"`: the true class's logit value instead).

Any leaf module without a rule, or a functional op in a forward (e.g. a residual `out += x`, as in
torchvision) raises a ValueError naming it and "frs".
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from prunelab.models.layers import Add, ShortcutA

EPS = 1e-9

_WEIGHTED = (nn.Conv2d, nn.Linear)
_IDENTITY = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Identity)
_ROUTE = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten, ShortcutA)
_PROPORTIONAL = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, Add)
# autograd nodes allowed between modules: pure reshapes, which carry relevance unchanged
_VIEW_NODES = ("View", "ReshapeAlias", "UnsafeView", "Squeeze", "Unsqueeze", "Clone", "AccumulateGrad")


def rule_for(module: nn.Module) -> str | None:
    """Relevance rule name of a module ("alpha_beta", "identity", "route", "proportional") or None.

    A module may also declare its own rule with a class attribute `lrp_rule`.
    """
    declared = getattr(module, "lrp_rule", None)
    if declared in ("identity", "route", "proportional"):
        return declared
    if isinstance(module, _WEIGHTED):
        return "alpha_beta"
    if isinstance(module, _IDENTITY):
        return "identity"
    if isinstance(module, _ROUTE):
        return "route"
    if isinstance(module, _PROPORTIONAL):
        return "proportional"
    return None


def _stab(z: torch.Tensor) -> torch.Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def alpha_beta_step(module: nn.Module, a: torch.Tensor, r: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """αβ rule through one Conv2d (a: B×C×H×W) or Linear (a: B×I); r is the relevance at the output
    (shape of module(a)); returns the relevance at the input, shape of a."""
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        def fwd(x, k):
            return x @ k.T

        def bwd(s, k):
            return s @ k
    else:
        if module.padding_mode != "zeros" or isinstance(module.padding, str) and module.padding != "valid":
            raise ValueError(f"frs/LRP: Conv2d with padding={module.padding!r}, "
                             f"padding_mode={module.padding_mode!r} is not supported")
        pad = 0 if isinstance(module.padding, str) else module.padding
        conv = dict(stride=module.stride, padding=pad, dilation=module.dilation, groups=module.groups)

        def fwd(x, k):
            return torch.nn.functional.conv2d(x, k, None, **conv)

        def bwd(s, k):
            return torch.nn.grad.conv2d_input(a.shape, k, s, **conv)

    wp, wn = w.clamp(min=0), w.clamp(max=0)
    ap = a.clamp(min=0)
    signed = bool((a < 0).any())
    zp, zn = fwd(ap, wp), fwd(ap, wn)
    if signed:
        an = a.clamp(max=0)
        zp, zn = zp + fwd(an, wn), zn + fwd(an, wp)
    sp = alpha * r / (zp + EPS)        # (a w)⁺ ≥ 0 share of z⁺ ≥ 0
    sn = beta * r / (zn - EPS)         # (a w)⁻ ≤ 0 share of z⁻ ≤ 0
    out = ap * (bwd(sp, wp) - bwd(sn, wn))
    if signed:
        out = out + an * (bwd(sp, wn) - bwd(sn, wp))
    return out


def _reduce(r: torch.Tensor) -> torch.Tensor:
    """Unit relevance B×U: conv maps B×C×H×W → signed mean over H×W."""
    return r.flatten(2).mean(2) if r.dim() > 2 else r


def _vjp(out: torch.Tensor, inputs: list[torch.Tensor], v: torch.Tensor) -> tuple:
    """Σ v·∂out/∂inputs, as the gradient of the scalar <out, v> (autograd.grad with a grad tensor
    imports sympy on first use: seconds per process)."""
    with torch.enable_grad():
        return torch.autograd.grad((out * v).sum(), inputs, allow_unused=True)


class _Relevance(torch.autograd.Function):
    """Forward = the module's own forward; backward = its relevance rule (see module docstring)."""

    @staticmethod
    def forward(ctx, module, rule, name, state, *xs):
        ctx.lrp = (module, rule, name, state)
        fwd = type(module).forward
        if getattr(module, "inplace", False):  # e.g. ReLU(inplace=True): never write into a saved tensor
            xs = tuple(x.clone() for x in xs)
        if rule in ("route", "proportional"):
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_(True) for x in xs]
                out = fwd(module, *leaves)
            ctx.lrp_graph = (leaves, out)
            return out.detach()
        out = fwd(module, *xs)
        if rule == "identity" and out.shape != xs[0].shape:
            raise ValueError(f"frs/LRP: identity rule on '{name}' changes the shape")
        if rule == "alpha_beta":
            ctx.save_for_backward(xs[0])
            state["shapes"].setdefault(name, out.shape)
        return out.clone() if out is xs[0] else out

    @staticmethod
    def backward(ctx, r):
        module, rule, name, state = ctx.lrp
        none = (None, None, None, None)
        if rule == "identity":
            return none + (r,)
        if rule == "alpha_beta":
            if name in state["layers"]:
                unit = _reduce(r) if state["reduce"] else r.clone()
                prev = state["out"].get(name)
                state["out"][name] = unit if prev is None else prev + unit
            (a,) = ctx.saved_tensors
            return none + (alpha_beta_step(module, a, r, state["alpha"], state["beta"]),)
        leaves, out = ctx.lrp_graph
        if rule == "route":
            grads = _vjp(out, leaves, r)
            return none + tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))
        grads = _vjp(out, leaves, r / _stab(out.detach()))
        return none + tuple(torch.zeros_like(x) if g is None else x.detach() * g for x, g in zip(leaves, grads))


def _check_rules(model: nn.Module) -> dict[str, str]:
    rules, missing = {}, []
    for name, m in model.named_modules():
        rule = rule_for(m)
        if rule is not None:
            rules[name] = rule
        elif not any(True for _ in m.children()):
            missing.append(f"'{name}' ({type(m).__name__})")
    if missing:
        raise ValueError(f"frs/LRP: no relevance rule for module(s) {', '.join(missing)}; frs needs every op "
                         "of the model to be a module with an LRP rule (Conv2d, Linear, BatchNorm, ReLU, pools, "
                         "Flatten, Add, option-A shortcut)")
    return rules


def _check_input(t: torch.Tensor, where: tuple[str, nn.Module]) -> None:
    """Walk back from t through pure reshapes: the op behind it must be a relevance rule (or the input)."""
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        kind = node.name().rsplit("::", 1)[-1]
        if kind.startswith("_RelevanceBackward"):
            continue
        if not kind.startswith(_VIEW_NODES):
            name, module = where
            raise ValueError(f"frs/LRP: module '{name or '(model)'}' ({type(module).__name__}) applies '{kind}' "
                             "in its forward outside any module with a relevance rule (e.g. a functional "
                             "residual `+`, as torchvision models do); frs needs such ops as modules with an "
                             "LRP rule (prunelab.models.Add)")
        stack.extend(n for n, _ in node.next_functions)


@contextlib.contextmanager
def _relevance_mode(model: nn.Module, rules: dict[str, str], state: dict):
    """Swap each ruled module's forward for the relevance Function (inputs checked against functional ops,
    naming the enclosing module); restore forwards, hooks and train flags on exit."""
    modules = dict(model.named_modules())
    training = {name: m.training for name, m in modules.items()}
    patched, handles, where = [], [], [("", model)]

    def leave(*_):  # forward hook: must return None (a value would replace the output)
        where.pop()

    def wrap(mod, rule, name):
        def forward(*xs):
            for x in xs:
                _check_input(x, where[-1])
            return _Relevance.apply(mod, rule, name, state, *xs)
        return forward

    try:
        model.eval()
        for name, m in modules.items():
            if name in rules:
                if "forward" in m.__dict__:
                    raise ValueError(f"frs/LRP: module '{name}' has an instance-level forward; cannot attach rules")
                m.forward = wrap(m, rules[name], name)
                patched.append(m)
            else:  # containers: track which module's forward is running
                handles.append(m.register_forward_pre_hook(lambda mod, _, n=name: where.append((n, mod))))
                handles.append(m.register_forward_hook(leave))
        yield
    finally:
        for h in handles:
            h.remove()
        for m in patched:
            del m.forward
        for name, m in modules.items():
            m.training = training[name]


def relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0, beta: float = 1.0,
              init: str = "onehot", reduce: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """LRP-αβ of a batch. x: B×... input, y: B class indices.

    Returns ({layer: relevance at that Conv2d/Linear's output}, relevance at the input, shape of x).
    reduce=True: conv maps reduced to B×C by the signed mean over H×W (Linear: B×U); False: full maps.
    Model put in eval mode for the pass and restored after; weights are not touched.
    """
    if init not in ("onehot", "logit"):
        raise ValueError(f"frs/LRP: init must be 'onehot' or 'logit', got {init!r}")
    if not (alpha >= 1 and beta >= 0):
        raise ValueError(f"frs/LRP: need alpha >= 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError("frs/LRP: x must be a float tensor B×...")
    y = torch.as_tensor(y, device=x.device)
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise ValueError(f"frs/LRP: y must hold {x.shape[0]} integer labels, got shape {tuple(y.shape)}")
    rules = _check_rules(model)
    layers = {name for name, rule in rules.items() if rule == "alpha_beta"}
    state = {"alpha": float(alpha), "beta": float(beta), "layers": layers, "reduce": reduce, "out": {},
             "shapes": {}}
    with torch.inference_mode(False), torch.enable_grad(), _relevance_mode(model, rules, state):
        xin = x.detach().clone().requires_grad_(True)
        logits = model(xin)
        if logits.dim() != 2:
            raise ValueError(f"frs/LRP: model output must be B×K logits, got {tuple(logits.shape)}")
        k = logits.shape[1]
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"frs/LRP: labels must lie in [0, {k}), got [{int(y.min())}, {int(y.max())}]")
        _check_input(logits, ("", model))
        r0 = torch.nn.functional.one_hot(y.long(), k).to(logits.dtype)
        if init == "logit":
            r0 = r0 * logits.detach()
        (r_in,) = _vjp(logits, [xin], r0)
        r_in = torch.zeros_like(xin) if r_in is None else r_in
    out = {}
    for name, _ in model.named_modules():  # a layer relevance never reached (unused output) gets zeros
        if name in state["shapes"]:
            zero = xin.new_zeros(state["shapes"][name])
            r = state["out"].get(name, _reduce(zero) if reduce else zero)
            out[name] = r.detach()
    return out, r_in.detach()


def unit_relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0,
                   beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-sample signed relevance B×U at each Conv2d/Linear output (conv: mean over H×W), LRP-αβ from
    the one-hot true label y (B,). Batched; eval mode for the pass; the model is left unchanged."""
    return relevance(model, x, y, alpha=alpha, beta=beta)[0]
