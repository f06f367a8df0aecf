"""Scoring methods, registered by name (like torch-pruning's importance classes).

A method is one function `fn(model, stats, cfg) -> {layer_name: {"unstructured": Tensor(weight shape) | None,
"structured": Tensor(out_units) | None}}` for every prunable layer (Conv2d / Linear). Higher score = more
important = kept longer. Register it with

    @register_method("name", needs={"activations"}, granularities=("unstructured", "structured"),
                     needs_for=lambda cfg: {...})

`needs`: statistic names (prunelab.stats.STAT_NAMES) the method reads; `needs_for(cfg)` optionally narrows
them for a resolved config. The method's options and their defaults are the schema's (`methods.<name>` in
workflow/schemas/config.schema.yaml, read by prunelab.settings.method_defaults); a method the schema does not
list (a notebook's own) may pass `defaults=` (None: its keys are not checked);
`inapplicable(model) -> str | None`: why the method cannot score this architecture (None: it can), read by
`inapplicable_reason` (for the workflow to skip such method × arch pairs) and checked by `score_model`.
`score_model` validates statistics, config and output, and builds the score-file dict.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from prunelab.methods.variants import base_method, parse_variant
from prunelab.models import prunable_layers
from prunelab.settings import check_values, method_defaults
from prunelab.stats import STAT_NAMES

GRANULARITIES = ("unstructured", "structured")
SCORABLE = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: scoring function, declared statistics, granularities, config defaults."""

    name: str
    fn: Callable[[nn.Module, dict, dict], dict]
    needs: frozenset[str]
    granularities: tuple[str, ...]
    defaults: dict | None = None
    needs_for: Callable[[dict], set[str]] | None = field(default=None, compare=False)
    inapplicable: Callable[[nn.Module], str | None] | None = field(default=None, compare=False)
    unused: dict = field(default_factory=dict, compare=False)   # granularity -> options its scores do not read

    def resolve_config(self, cfg: dict | None) -> dict:
        """cfg merged over the defaults; unknown keys raise (when defaults are declared), and the options of a
        method the schema lists are checked against it (methods.<name>.<option>)."""
        cfg = {} if cfg is None else cfg
        if not isinstance(cfg, dict):
            raise ValueError(f"method '{self.name}': config must be a dict, got {type(cfg).__name__}")
        if self.defaults is None:
            return dict(cfg)
        unknown = sorted(set(cfg) - set(self.defaults))
        if unknown:
            raise ValueError(f"method '{self.name}': unknown config keys {unknown}; valid keys: "
                             f"{sorted(self.defaults)}")
        if cfg and method_defaults(self.name) is not None:
            check_values(f"methods.{self.name}", cfg)
        return {**self.defaults, **cfg}

    def needs_for_config(self, cfg: dict | None) -> set[str]:
        """Statistics needed for this config (all declared ones when cfg is None)."""
        if cfg is None or self.needs_for is None:
            return set(self.needs)
        return set(self.needs_for(self.resolve_config(cfg))) & set(self.needs)


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, needs: set[str] | frozenset[str] = frozenset(),
                    granularities: tuple[str, ...] = GRANULARITIES, defaults: dict | None = None,
                    needs_for: Callable[[dict], set[str]] | None = None,
                    inapplicable: Callable[[nn.Module], str | None] | None = None,
                    unused: dict[str, tuple[str, ...]] | None = None):
    """Decorator registering `fn(model, stats, cfg) -> layer scores` under `name`. unused: {granularity: options
    the scores of that granularity do not read}: variants differing only in them run once there."""
    bad = sorted(set(needs) - set(STAT_NAMES))
    if bad:
        raise ValueError(f"method '{name}' declares unknown statistics {bad}; valid: {list(STAT_NAMES)}")
    if not granularities or not set(granularities) <= set(GRANULARITIES):
        raise ValueError(f"method '{name}': granularities must be a non-empty subset of {GRANULARITIES}, "
                         f"got {granularities!r}")

    options = method_defaults(name)
    if options is not None and defaults is not None:
        raise ValueError(f"method '{name}': its options and defaults are the schema's (methods.{name}); "
                         "do not pass defaults=")

    def deco(fn):
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered")
        METHODS[name] = MethodSpec(name, fn, frozenset(needs), tuple(granularities),
                                   options if options is not None else defaults, needs_for, inapplicable,
                                   dict(unused or {}))
        return fn

    return deco


def method_names() -> list[str]:
    """Sorted names of the registered methods."""
    return sorted(METHODS)


def get_method(name: str) -> MethodSpec:
    """The registered method `name` or behind variant `name` (`screening-lambda0.5`, see `variants`);
    unknown names raise listing the valid ones."""
    base = base_method(name)
    if base not in METHODS:
        raise ValueError(f"unknown scoring method {name!r}; valid methods: {method_names()}")
    return METHODS[base]


def unused_options(granularity: str) -> dict[str, tuple[str, ...]]:
    """{method: options its `granularity` scores do not read} (for methods.variants.distinct_variants)."""
    return {name: spec.unused.get(granularity, ()) for name, spec in METHODS.items()}


def variant_options(name: str) -> tuple[str, dict]:
    """(method, swept options) of a method variant name, read with the method's own option keys."""
    return parse_variant(name, option_names=get_method(name).defaults or ())


def required_statistics(method_names: Iterable[str], configs: dict[str, dict] | None = None) -> set[str]:
    """Union of the statistics the named methods (or variants) declare.

    With `configs` ({method: config}), a method may declare less for its config (contribution with
    kappa = 0 skips "contribution_sq"); without, the full declaration is used.
    """
    needs: set[str] = set()
    for name in method_names:
        cfg = None if configs is None else configs.get(name)
        needs |= get_method(name).needs_for_config(cfg)
    return needs


def inapplicable_reason(method: str, model: nn.Module) -> str | None:
    """Why `method` cannot score `model` (one line naming the layer), or None where it applies."""
    spec = get_method(method)
    return None if spec.inapplicable is None else spec.inapplicable(model)


def _check_stats(spec: MethodSpec, cfg: dict, model: nn.Module, stats: dict) -> None:
    needed = spec.needs_for_config(cfg)
    if not needed:
        return
    have = set(stats.get("needs", ())) if isinstance(stats, dict) else set()
    missing = sorted(needed - have)
    if missing:
        raise ValueError(f"method '{spec.name}' needs statistics {missing}, which the statistics file does not "
                         f"hold (it has {sorted(have)}); add the method to the config and rerun "
                         "snakemake --forcerun collect_stats")
    layers = stats.get("layers", {})
    for name, m in prunable_layers(model):
        entry = layers.get(name)
        if entry is None or list(entry.get("weight_shape", ())) != list(m.weight.shape):
            raise ValueError(f"statistics do not match the model at layer '{name}' (weight shape "
                             f"{list(m.weight.shape)}, statistics "
                             f"{None if entry is None else entry.get('weight_shape')}); statistics of another "
                             "model? rerun snakemake --forcerun collect_stats")


def score_model(model: nn.Module, stats: dict | None, method: str, cfg: dict | None = None) -> dict:
    """Score every prunable layer of `model` with `method` → {"method", "config", "layers"}.

    Scores are float64 on CPU; a granularity the method does not declare is None.
    """
    spec = get_method(method)
    cfg = spec.resolve_config(cfg)
    for name, m in prunable_layers(model):
        if not isinstance(m, SCORABLE):
            raise ValueError(f"method '{method}' cannot score layer '{name}' of type {type(m).__name__} "
                             "(only Linear and Conv2d)")
    reason = inapplicable_reason(method, model)
    if reason is not None:
        raise ValueError(reason)
    _check_stats(spec, cfg, model, stats or {})
    with torch.no_grad():
        raw = spec.fn(model, stats or {}, cfg)
    out = {}
    for name, m in prunable_layers(model):
        if name not in raw:
            raise RuntimeError(f"method '{method}' returned no scores for layer '{name}'")
        want = {"unstructured": tuple(m.weight.shape), "structured": (m.weight.shape[0],)}
        entry = {}
        for kind, shape in want.items():
            s = raw[name].get(kind) if kind in spec.granularities else None
            if s is not None:
                s = s.detach().to("cpu", torch.float64)
                if tuple(s.shape) != shape or not torch.isfinite(s).all():
                    raise RuntimeError(f"method '{method}' gave {kind} scores of shape {tuple(s.shape)} for layer "
                                       f"'{name}' (expected {shape}, finite)")
            entry[kind] = s
        out[name] = entry
    return {"method": method, "config": cfg, "layers": out}


# Import every method module of this package last: each registers itself (a new module needs no line here).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "variants"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "GRANULARITIES", "MethodSpec", "get_method", "inapplicable_reason", "method_names",
           "register_method", "required_statistics", "score_model", "unused_options", "variant_options"]
