"""Model checks of a config (part of `prunelab.checks`, run at DAG time).

Names and options against the registry (`prunelab.models.MODELS`, builder signatures) and torchvision's list;
then each model is built on the meta device with initialisation skipped (milliseconds, no memory) for its
layer names (ignore_layers) and widths (whether the requested ratios can be reached). torchvision is imported
only for a `tv:` model, whose forward pass on its input shape is also checked (meta device).
"""

from __future__ import annotations

import contextlib
import inspect
import math

from prunelab.checks.data import ConfigError, few
from prunelab.models import (DENSE_ONLY, MODELS, TV_PREFIX, Add, ShortcutA, build_model, classifier_name, model_names,
                             prunable_layers)
from prunelab.pruning.gradual import auto_ignore
from prunelab.settings import GradualSettings, recipe, round_half_up, rounded_up

# Models without a convolution: gradual pruning leaves them out unless gradual.archs names them (gradual.smk).


def _noop_init(*args, **kwargs):
    return args[0] if args else next(iter(kwargs.values()), None)


@contextlib.contextmanager
def meta_build():
    """Build modules on the meta device with torch.nn.init skipped (random init on meta imports torch._dynamo:
    seconds; the values are meaningless there anyway)."""
    import torch
    from torch import nn

    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, _noop_init)
        with torch.device("meta"):
            yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def check_model_name(key: str, name: str, options: dict) -> None:
    """Name in the registry (options in the builder's signature) or in torchvision's list."""
    if name.startswith(TV_PREFIX):
        import torchvision

        tv = name[len(TV_PREFIX):]
        if tv not in torchvision.models.list_models(module=torchvision.models):
            raise ConfigError(f"config key '{key}.name': {tv!r} is not a torchvision classification model; "
                              "expected a name of torchvision.models.list_models(module=torchvision.models)")
        bad = sorted({"weights", "num_classes"} & set(options))
        if bad:
            raise ConfigError(f"config key '{key}.options': {bad} are set by prunelab (weights=None, classes "
                              "from the dataset); remove them")
        return
    if name not in MODELS:
        raise ConfigError(f"config key '{key}.name': unknown model {name!r}; expected one of {model_names()} "
                          f"or '{TV_PREFIX}<torchvision model>'")
    valid = [p for p in inspect.signature(MODELS[name]).parameters if p not in ("in_shape", "num_classes")]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(f"config key '{key}.options': unknown options {bad} for model {name!r}; "
                          f"expected some of {valid}")


def check_arch(cfg: dict, key: str, arch: dict, in_shape, classes: int) -> None:
    """Model name and options, then on the meta-built model: ignore_layers names, structured prunability,
    prune.round_to against the layers' widths."""
    where, options = f"archs.{key}", arch["options"] or {}
    check_model_name(where, arch["name"], options)
    try:
        with meta_build():
            model = build_model({"name": arch["name"], "options": options, "in_shape": list(in_shape),
                                 "num_classes": classes})
    except (ValueError, TypeError) as err:
        at = f"'{where}.options'" if "option" in str(err) else \
            f"'{where}' (input {list(in_shape)} from dataset {cfg['dataset']['name']!r})"
        raise ConfigError(f"config key {at}: {err}".replace("\n", " ")) from None
    if arch["name"].startswith("tv:"):  # prunelab's builders check their input size; torchvision's do not
        _check_forward(model, where, in_shape, cfg["dataset"]["name"])
    layers = dict(prunable_layers(model))
    head = classifier_name(model)
    for sect in ("prune", "gradual"):
        if sect == "gradual" and not (cfg["gradual"]["enabled"] and key in gradual_archs(cfg)):
            continue
        bad = [n for n in cfg[sect]["ignore_layers"] if n not in layers]
        if bad:
            raise ConfigError(f"config key '{sect}.ignore_layers': {bad} are not prunable layers of arch {key!r}; "
                              f"expected some of {few(layers)}")
    if cfg["gradual"]["enabled"] and key in gradual_archs(cfg):
        _check_gradual(cfg, key, arch["name"], model, layers, head)
    _check_prunable(cfg, key, arch["name"], model, layers, head)


def _check_forward(model, where: str, in_shape, dataset: str) -> None:
    """One forward pass on the meta device (shapes only: milliseconds once torchvision is imported)."""
    import torch

    try:
        with meta_build(), torch.no_grad():
            model.eval()(torch.empty(1, *in_shape))
    except Exception as err:
        raise ConfigError(f"config key '{where}': the model cannot run on input {list(in_shape)} of dataset "
                          f"{dataset!r} ({type(err).__name__}: {err}); set dataset.image_size or pick another model"
                          .replace("\n", " ")) from None


def _check_prunable(cfg: dict, key: str, name: str, model, layers: dict, head: str) -> None:
    """Every requested ratio can be reached on arch `key` (prunelab.pruning.selection caps it silently otherwise):
    unstructured, each layer keeps max(1, ceil(min_keep_fraction x weights)); structured, each layer keeps
    min_keep_units, rounded up to prune.round_to (exact for models without residual adds, where every
    Conv/Linear but the classifier is its own group; elsewhere only 'nothing left to prune' is checked)."""
    own = cfg["archs"][key].get("granularities")
    p, gran, gkey = cfg["prune"], own or cfg["granularities"], f"archs.{key}.granularities" if own else "granularities"
    kept = {n: m.weight for n, m in layers.items() if n not in p["ignore_layers"]}
    if not kept:
        raise ConfigError(f"config key 'prune.ignore_layers': names every prunable layer of arch {key!r}: "
                          "nothing to prune")
    sizes = [w.numel() for w in kept.values()]
    keeps = [max(1, math.ceil(p["min_keep_fraction"] * n)) for n in sizes]
    for r in gran.get("unstructured") or []:
        got = _capped(r, sizes, keeps, p["scope"])
        if got is not None:
            raise ConfigError(f"config key '{gkey}.unstructured': {r} cannot be reached on arch {key!r}: "
                              f"prune.min_keep_fraction {p['min_keep_fraction']} ({p['scope']} scope) lets at most "
                              f"{got:.3f} go; expected a lower ratio or min_keep_fraction")
    if not gran.get("structured"):
        return
    widths = [w.shape[0] for n, w in kept.items() if n != head]
    if not widths:
        raise ConfigError(f"config key 'archs.{key}': structured pruning requested ({gkey}.structured) but "
                          f"{name} has no prunable units besides the classifier {head!r} and prune.ignore_layers "
                          "(an MLP needs a hidden layer)")
    rt, mku = p["round_to"], p["min_keep_units"]
    if rt > 1 and rt >= max(widths):
        raise ConfigError(f"config key 'prune.round_to': {rt} >= the widest prunable layer of arch {key!r} "
                          f"({max(widths)} units): every layer would keep all its units (achieved ratio 0); "
                          f"expected round_to below {max(widths)}")
    if any(isinstance(m, (Add, ShortcutA)) for m in model.modules()) or name.startswith("tv:"):
        return
    for r in gran["structured"]:
        got = _capped(r, widths, [min(mku, u) for u in widths], p["scope"])
        if got is not None:
            raise ConfigError(f"config key '{gkey}.structured': {r} cannot be reached on arch {key!r}: "
                              f"prune.min_keep_units {mku} per layer ({p['scope']} scope) lets at most {got:.3f} of "
                              "its units go; expected a lower ratio or min_keep_units")
    for r in gran["structured"] if rt > 1 else []:
        if _rounded_removal(widths, r, mku, rt, p["scope"]) == 0:
            raise ConfigError(f"config key 'prune.round_to': {rt} rounds every layer of arch {key!r} back to all its "
                              f"units at ratio {r} ({p['scope']} scope): achieved ratio 0; expected a smaller round_to")


def _capped(r: float, sizes: list[int], keeps: list[int], scope: str) -> float | None:
    """The achieved ratio when prunelab.pruning.selection's per-layer minimum (`keeps`) caps ratio `r` so much that its
    two-decimal label is wrong, else None. global: min(round(r·N), N - Σkeep); layerwise: per layer."""
    total = sum(sizes)
    if scope == "layerwise":
        target = sum(round_half_up(r * n) for n in sizes)
        got = sum(min(round_half_up(r * n), n - k) for n, k in zip(sizes, keeps))
    else:
        target = round_half_up(r * total)
        got = min(target, total - sum(keeps))
    return got / total if got < target and f"{got / total:.2f}" != f"{r:.2f}" else None


def _rounded_removal(widths: list[int], r: float, mku: int, rt: int, scope: str) -> int | None:
    """Units removed after rounding kept counts up to multiples of `rt` (prunelab.pruning.selection's rule): exact for
    layerwise scope; for global scope 0 when the target is below the smallest removal that survives rounding
    in any layer (whatever the scores), else None (depends on the scores)."""
    if scope == "layerwise":
        return sum(u - rounded_up(u - min(round_half_up(r * u), u - min(mku, u)), u, rt) for u in widths)
    # removing d units of a layer survives rounding iff u - d <= the largest multiple of rt below u
    smallest = [u - (u - 1) // rt * rt for u in widths if u - (u - 1) // rt * rt <= u - min(mku, u)]
    return 0 if not smallest or round_half_up(r * sum(widths)) < min(smallest) else None


def _check_gradual(cfg: dict, key: str, name: str, model, layers: dict, head: str) -> None:
    """Gradual FRS on arch `key` has channels to prune, and channels_per_step x steps reaches every ratio
    (exact for models without residual adds: every Conv/Linear but the classifier, gradual.ignore_layers and
    VGG's first two convs is its own group, as prunelab.pruning.gradual selects them)."""
    g = cfg["gradual"]
    skip = set(g["ignore_layers"]) | set(auto_ignore(model, name)) | {head}
    widths = [m.weight.shape[0] for n, m in layers.items() if n not in skip]
    if not widths:
        raise ConfigError(f"config key 'gradual.archs': arch {key!r} ({name}) has no prunable units besides the "
                          f"classifier {head!r} and gradual.ignore_layers: nothing to prune")
    per_step = g["channels_per_step"]
    if per_step is None or name.startswith("tv:") or any(isinstance(m, (Add, ShortcutA)) for m in model.modules()):
        return
    epochs = recipe(cfg, "train", key)["epochs"]
    steps = GradualSettings.from_config(g).stop_epoch_for(epochs) // g["interval"]
    mku, total = cfg["prune"]["min_keep_units"], sum(widths)
    cap = sum(u - min(mku, u) for u in widths)
    for r in g["ratios"] or cfg["granularities"].get("structured") or []:
        target = min(round_half_up(r * total), cap)
        if per_step * steps < target:
            raise ConfigError(f"config key 'gradual.channels_per_step': {steps} steps of {per_step} channels cannot "
                              f"reach ratio {r} on arch {key!r} ({target} of {total} channels); expected at least "
                              f"{math.ceil(target / steps)}, or more steps (stop_epoch, interval)")


def gradual_archs(cfg: dict) -> list[str]:
    """Archs trained by gradual FRS: gradual.archs, or every arch with convolutions when it is empty."""
    names = cfg["gradual"]["archs"]

    return list(names) if names else [a for a, s in cfg["archs"].items() if s["name"] not in DENSE_ONLY]
