"""Layer-wise relevance propagation (LRP-αβ) for the `frs` method (Aketi et al. 2020, arXiv 2002.09958).

One forward pass in which every module is swapped for an autograd Function whose backward propagates
relevance instead of gradient, then one `torch.autograd.grad` from the initial relevance at the logits (a plain
nn.Sequential runs the same rules as a chain, forward then backward, without autograd). RelevanceSession sets a
model up once for many batches; the relevance at the model input is only computed when asked for (`relevance`),
so `unit_relevance` and the statistics pass stop at the first weighted layers. The rules (prunelab.stats.lrp_rules):

- Conv2d / Linear: αβ rule on the positive / negative parts of the contributions a_i·w_ij (signed inputs
  handled), no bias in the denominators, ε = 1e-9:
  R_i = Σ_j [α (a_i w_ij)⁺ / (z⁺_j + ε) − β (a_i w_ij)⁻ / (z⁻_j − ε)] R_j;
  z⁺, z⁻ come from one product with stacked weights [w⁺; w⁻] (the layer's output is z⁺ + z⁻ + bias),
  R_i from one transposed product with [α w⁺; −β w⁻].
- BatchNorm, ReLU, Dropout, Identity: identity (relevance passes unchanged).
- MaxPool, Flatten/Unflatten, option-A shortcut (subsample + zero-pad channels): outputs are copies of
  selected inputs, so relevance follows the gradient routing (max-pool: winner takes all).
- AvgPool2d, AdaptiveAvgPool2d, Add: proportional to the inputs, R_i = a_i ∂z/∂a_i · R / z.

With α − β = 1 each unit passes on exactly its relevance (layer totals are conserved), except a unit
whose contributions all share one sign (z⁺ or z⁻ = 0): it passes on α·R or β·R.

Initial relevance (default `init="onehot"`): the one-hot of the true label at the logits, so every
sample brings total relevance 1 (`init="logit"`: the true class's logit value instead).

Any leaf module without a rule, or a functional op in a forward on the relevance path (e.g. a residual
`out += x`, as in torchvision; checked on a session's first pass) raises a ValueError naming it and "frs".
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn
from torch.nn.modules import module as _module_globals

from prunelab.models.layers import Add, ShortcutA
from prunelab.stats.lrp_rules import EPS, alpha_beta_step  # noqa: F401  (public, re-exported)
from prunelab.stats.lrp_rules import (RelevanceFunction, ab_parameters, ab_rule, is_signed, record_relevance,
                                      reduce_maps, rule_backward, rule_forward, vjp)

_WEIGHTED = (nn.Conv2d, nn.Linear)
_IDENTITY = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Identity)
_ROUTE = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten, ShortcutA)
_PROPORTIONAL = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, Add)
_PASS = (nn.Identity, nn.Dropout)  # identity ops in eval mode: run without a relevance Function
_FRESH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU)  # their outputs: new tensors (the chain's ReLU may reuse them)
_KEEP_SIGN = (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_NO_CONTEXT = contextlib.nullcontext()
# autograd nodes allowed between modules: pure reshapes, which carry relevance unchanged
_VIEW_NODES = ("View", "ReshapeAlias", "UnsafeView", "Squeeze", "Unsqueeze", "Clone", "AccumulateGrad")


def rule_for(module: nn.Module) -> str | None:
    """Relevance rule name of a module ("alpha_beta", "identity", "route", "proportional") or None.

    A module may also declare its own rule with a class attribute `lrp_rule`.
    """
    declared = module.__dict__.get("lrp_rule", getattr(type(module), "lrp_rule", None))  # no __getattr__ miss
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
        if kind.startswith("RelevanceFunctionBackward"):
            continue
        if not kind.startswith(_VIEW_NODES):
            name, module = where
            raise ValueError(f"frs/LRP: module '{name or '(model)'}' ({type(module).__name__}) applies '{kind}' "
                             "in its forward outside any module with a relevance rule (e.g. a functional "
                             "residual `+`, as torchvision models do); frs needs such ops as modules with an "
                             "LRP rule (prunelab.models.Add)")
        stack.extend(n for n, _ in node.next_functions)


class RelevanceSession:
    """LRP-αβ passes over many batches of one model: rules checked, forwards patched and αβ weights prepared
    once; the graph is checked for functional ops on the first pass only (a static graph is assumed after it).

        with RelevanceSession(model, alpha=2.0, beta=1.0) as lrp:   # (None: the frs options' defaults)
            layers, r_in, logits = lrp(x, y)       # per batch

    layers: {layer: relevance at that Conv2d/Linear's output} (reduce=True: conv maps reduced to B×C by the
    signed mean over H×W, Linear B×U; False: full maps); r_in: relevance at the input (shape of x) if
    input_relevance, else None (then nothing is propagated below the first weighted layers: no cost there);
    logits: B×K. Model in eval mode while open; between calls the patched forwards are the model's own.
    A plain nn.Sequential of ruled modules without hooks runs as a chain, without autograd (same numbers).
    Prepared αβ weights are remade when a weight's storage or in-place version changes (writes through
    `.data` are not seen: open a new session after those). close() (also remove(), as for hook handles)
    restores forwards and train flags; weights untouched.
    """

    def __init__(self, model: nn.Module, alpha: float | None = None, beta: float | None = None,
                 init: str = "onehot", reduce: bool = True, input_relevance: bool = False):
        alpha, beta = ab_parameters(alpha, beta)
        if init not in ("onehot", "logit"):
            raise ValueError(f"frs/LRP: init must be 'onehot' or 'logit', got {init!r}")
        if not (alpha >= 1 and beta >= 0):
            raise ValueError(f"frs/LRP: need alpha >= 1 and beta >= 0, got alpha={alpha}, beta={beta}")
        rules = _check_rules(model)
        self.model, self.init, self.input_relevance = model, init, input_relevance
        self.state = {"alpha": float(alpha), "beta": float(beta), "reduce": reduce, "out": {}, "shapes": {},
                      "layers": {n for n, rule in rules.items() if rule == "alpha_beta"}, "anchor": None, "ab": {},
                      "active": False, "check": True}
        self._modules = dict(model.named_modules())
        self._module_list = list(self._modules.values())
        for name, m in self._modules.items():
            if name in rules and "forward" in m.__dict__:
                raise ValueError(f"frs/LRP: module '{name}' has an instance-level forward; cannot attach rules")
        self._rules, self._chain, self._eye = rules, _chain(model, rules), None
        self._plan = None if self._chain is None else _plan(self._chain, input_relevance)
        self._layer_names = [n for n in self._modules if n in self.state["layers"]]
        self._training = [(m, m.training) for m in self._modules.values()]
        self._patched, self._where = [], [("", model)]
        if any(t for _, t in self._training):
            model.eval()

    def _patch(self) -> None:
        """Swap each ruled module's forward for _wrap's (first graph pass; chains need none)."""
        for name, m in self._modules.items():
            if name in self._rules:
                m.forward = self._wrap(m, self._rules[name], name)
                self._patched.append(m)

    def _wrap(self, mod: nn.Module, rule: str, name: str):
        """mod's forward while open: its own outside a call; in a call, the relevance Function."""
        state, where, fwd = self.state, self._where, type(mod).forward

        def forward(*xs):
            if not state["active"]:
                return fwd(mod, *xs)
            if state["check"]:
                for x in xs:
                    _check_input(x, where[-1])
            if type(mod) in _PASS:  # eval-mode identity ops: the gradient is the relevance
                return fwd(mod, *xs)
            if any(x.requires_grad for x in xs):
                return RelevanceFunction.apply(mod, rule, name, state, *xs)
            if rule == "alpha_beta":  # no relevance wanted at its input: record the output's, stop there
                return RelevanceFunction.apply(mod, "leaf", name, state, state["anchor"], *xs)
            if getattr(mod, "inplace", False):  # no relevance wanted below: the module's own forward
                xs = tuple(x.clone() for x in xs)
            with torch.no_grad():
                return fwd(mod, *xs)
        return forward

    def _track(self) -> list:
        """Hooks on containers tracking which module's forward runs (named in _check_input's errors)."""
        where, hooks = self._where, []

        def leave(*_):  # forward hook: must return None (a value would replace the output)
            where.pop()

        patched = set(map(id, self._patched))
        for name, m in self._modules.items():
            if id(m) not in patched:
                hooks.append(m.register_forward_pre_hook(lambda mod, _, n=name: where.append((n, mod))))
                hooks.append(m.register_forward_hook(leave))
        return hooks

    def close(self) -> None:
        """Restore the forwards and train flags (once; later calls do nothing)."""
        for m in self._patched:
            del m.forward
        for m, training in self._training:
            if m.training != training:
                m.training = training
        self._patched, self._training = [], []

    remove = close

    def __enter__(self) -> "RelevanceSession":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _graph_pass(self, xin: torch.Tensor) -> torch.Tensor:
        """The model's forward through the patched modules (autograd records the relevance graph) → logits."""
        state, model = self.state, self.model
        if not self._patched:
            self._patch()
        self._where[:] = [("", model)]
        hooks = self._track() if state["check"] else []
        state["active"] = True
        try:
            logits = model(xin)
            if state["check"] and logits.dim() == 2:
                _check_input(logits, ("", model))
        finally:
            state["active"] = False
            for h in hooks:
                h.remove()
        return logits

    def _chain_forward(self, xin: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Run the chain's plan in order, keeping what each rule needs → (logits, tape)."""
        state, tape, h = self.state, [], xin
        for step, name, m, fwd, nonneg in self._plan:
            if step == "ab":
                ab = ab_rule(state, name, m)
                signed = not nonneg and is_signed(h)
                out, zs = ab.forward(h, signed)
                tape.append((name, ab, (h, zs, signed)))
            elif step == "relu_":
                out = h.relu_()
            elif step == "rule":
                out, saved = rule_forward(m, self._rules[name], name, state, (h,), nonneg)
                tape.append((name, None, saved))
            else:  # the module's own forward
                out = fwd(h.clone() if getattr(m, "inplace", False) and fwd is not torch.relu else h)
                if step == "identity" and out.shape != h.shape:
                    raise ValueError(f"frs/LRP: identity rule on '{name}' changes the shape")
                if step == "leaf":
                    tape.append((name, None, None))
            h = out
        return h, tape

    def _chain_backward(self, tape: list, r: torch.Tensor) -> torch.Tensor | None:
        """Relevance r at the logits back through the tape → relevance at the input (None if not kept)."""
        state = self.state
        while tape:  # popped: each step's saved tensors are freed as soon as it is done
            name, ab, saved = tape.pop()
            if ab is not None:
                record_relevance(state, name, r)
                r = ab.backward(*saved[:2], r, saved[2])
            elif saved is None:  # the leaf: nothing below it wants relevance
                record_relevance(state, name, r)
                return None
            else:
                r = rule_backward(self._rules[name], name, state, saved, r, (True,))[0]
        return r

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor | None, torch.Tensor]:
        """x: B×... float input, y: B class indices → (layers, r_in, logits), see the class docstring."""
        if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
            raise ValueError("frs/LRP: x must be a float tensor B×...")
        y = torch.as_tensor(y, device=x.device)
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise ValueError(f"frs/LRP: y must hold {x.shape[0]} integer labels, got shape {tuple(y.shape)}")
        state, model = self.state, self.model
        state["out"], state["shapes"] = {}, {}
        if model.training:
            model.eval()
        chain = self._chain is not None and not _hooked(self._module_list)
        # an inference tensor cannot be saved for backward; route rules need grad mode inside
        with torch.inference_mode(False) if torch.is_inference_mode_enabled() else _NO_CONTEXT:
            if chain:
                with torch.no_grad():
                    xin = x.clone() if x.is_inference() else x
                    logits, tape = self._chain_forward(xin)
                    r_in = self._chain_backward(tape, self._r0(logits, y))
            else:
                with torch.enable_grad():
                    if self.input_relevance:
                        xin = x.detach().clone().requires_grad_(True)
                    else:  # the first weighted layers hang on the anchor (no relevance below them)
                        xin = x.clone() if x.is_inference() else x.detach()
                        state["anchor"] = torch.zeros((), device=x.device, requires_grad=True)
                    logits = self._graph_pass(xin)
                    r0 = self._r0(logits, y)
                    start = xin if self.input_relevance else state["anchor"]
                    r_in = vjp(logits, [start], r0)[0] if logits.requires_grad else None
                    r_in = r_in if self.input_relevance else None
                state["check"] = False  # graph checked: a static graph is assumed from here on
        if self.input_relevance:
            r_in = (torch.zeros_like(xin) if r_in is None else r_in).detach()
        out = {}
        for name in self._layer_names:  # a layer relevance never reached (unused output) gets zeros
            if name in state["out"]:
                out[name] = state["out"][name].detach()
            elif name in state["shapes"]:
                zero = xin.new_zeros(state["shapes"][name])
                out[name] = reduce_maps(zero) if state["reduce"] else zero
        state["out"], state["anchor"] = {}, None
        return out, r_in, logits.detach()

    def _r0(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Initial relevance at the logits (B×K): one-hot of y (init "logit": times the logit)."""
        if logits.dim() != 2:
            raise ValueError(f"frs/LRP: model output must be B×K logits, got {tuple(logits.shape)}")
        k = logits.shape[1]
        lo, hi = (v.item() for v in torch.aminmax(y)) if len(y) else (0, 0)
        if lo < 0 or hi >= k:
            raise ValueError(f"frs/LRP: labels must lie in [0, {k}), got [{lo}, {hi}]")
        eye = self._eye
        if eye is None or eye.shape[0] != k or eye.dtype != logits.dtype or eye.device != logits.device:
            eye = self._eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
        r0 = eye.index_select(0, y.long())
        return r0 * logits.detach() if self.init == "logit" else r0


def _plan(chain: list, input_relevance: bool) -> list:
    """(step, name, module, forward, input known ≥ 0) per chain module. Steps: "plain" (nothing below needs
    relevance: the module's forward), "leaf" (the first αβ layer then: its output relevance is recorded, nothing
    propagated below it), "ab", "rule" (route / proportional), "identity", "relu_" (on a new tensor nobody
    keeps: in place)."""
    plan, need, nonneg, fresh = [], input_relevance, False, False
    for name, m, rule, fwd in chain:
        if rule == "identity":
            step = "relu_" if fwd is torch.relu and fresh else "identity"
        elif not need:
            step, need = ("leaf", True) if rule == "alpha_beta" else ("plain", False)
        else:
            step = "ab" if rule == "alpha_beta" else "rule"
        plan.append((step, name, m, fwd, nonneg))
        nonneg = type(m) is nn.ReLU or nonneg and type(m) in _KEEP_SIGN
        fresh = rule == "alpha_beta" or type(m) in _FRESH
    return plan


def _chain(model: nn.Module, rules: dict[str, str]) -> list | None:
    """[(name, module, rule, forward)] in call order when model is a plain nn.Sequential (nested ones flattened)
    of distinct ruled leaf modules (no instance-level forwards), else None."""
    out, seen = [], set()

    def walk(seq, prefix):
        if type(seq).forward is not nn.Sequential.forward or "forward" in seq.__dict__ or id(seq) in seen:
            return False
        seen.add(id(seq))
        for n, m in seq._modules.items():  # what Sequential.forward runs, repeats included
            name = prefix + n
            if isinstance(m, nn.Sequential):
                if not walk(m, name + "."):
                    return False
                continue
            if m is None or id(m) in seen or name not in rules or next(m.children(), None) is not None \
                    or "forward" in m.__dict__:
                return False
            seen.add(id(m))
            if type(m) not in _PASS:  # eval-mode identities: skipped
                fwd = torch.relu if type(m) is nn.ReLU else functools.partial(type(m).forward, m)
                out.append((name, m, rules[name], fwd))
        return True

    return out if isinstance(model, nn.Sequential) and walk(model, "") else None


def _hooked(modules) -> bool:
    """Whether any forward hook would run (the chain pass calls no module, so it runs none)."""
    if _module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks:
        return True
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks:
            return True
    return False


def relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float | None = None,
              beta: float | None = None, init: str = "onehot",
              reduce: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """LRP-αβ of a batch. x: B×... input, y: B class indices.

    Returns ({layer: relevance at that Conv2d/Linear's output}, relevance at the input, shape of x).
    reduce=True: conv maps reduced to B×C by the signed mean over H×W (Linear: B×U); False: full maps.
    Model put in eval mode for the pass and restored after; weights are not touched.
    """
    with RelevanceSession(model, alpha, beta, init, reduce, input_relevance=True) as lrp:
        layers, r_in, _ = lrp(x, y)
    return layers, r_in


def unit_relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float | None = None,
                   beta: float | None = None) -> dict[str, torch.Tensor]:
    """Per-sample signed relevance B×U at each Conv2d/Linear output (conv: mean over H×W), LRP-αβ from
    the one-hot true label y (B,). Batched; eval mode for the pass; the model is left unchanged. For many
    batches, RelevanceSession does the set-up once."""
    with RelevanceSession(model, alpha, beta) as lrp:
        return lrp(x, y)[0]
