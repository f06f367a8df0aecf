"""Checks of a schema-validated config (defaults filled) that the schema cannot express, run at DAG time.

`check_config(cfg, config_files)` raises `ConfigError` with one line naming the config key (or file) and what
was expected: duplicate YAML keys, unsafe experiment names, ratios that vanish or collide at the two decimals
of result paths, sections that would schedule nothing, schedule coherence, the device, data files, model
names and options (against `prunelab.models.MODELS` and torchvision's list), layer names, split sizes.
Models are built only on the meta device with initialisation skipped (milliseconds, no memory); torchvision
is imported only when a `tv:` model is named. No Snakemake import: common.smk turns ConfigError into a
WorkflowError.

Data files and split sizes: `prunelab.config_data_checks`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from pathlib import Path

import yaml

from prunelab.config_data_checks import ConfigError, check_sizes, dataset_sizes

__all__ = ["ConfigError", "check_config"]

# Models without a convolution: gradual pruning leaves them out unless gradual.archs names them (gradual.smk).
DENSE_ONLY_MODELS = {"mlp", "lenet300_100"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_config(cfg: dict, config_files: list[str] = (), check_device: bool = True) -> None:
    """Raise ConfigError on the first mistake in `cfg` (schema-validated, defaults filled).

    config_files: the YAML files the config was read from (duplicate keys). check_device: False where jobs run
    on other machines (cluster), whose GPUs this one cannot see.
    """
    given = set().union(*(check_duplicate_keys(path) for path in config_files)) if config_files else None
    check_experiment(cfg["experiment"])
    check_ratios(cfg)
    check_methods(cfg)
    check_sections(cfg, given)
    check_schedule(cfg)
    if check_device:
        check_device_available(cfg["device"])
    elif cfg["device"] == "cuda" and cfg["resources"]["gpu"] == 0:
        raise ConfigError("config key 'resources.gpu': 0, but device is cuda: cluster jobs would get no GPU; "
                          "expected resources.gpu >= 1 (or device: auto)")
    in_shape, classes, n_train, n_val = dataset_sizes(cfg["dataset"])
    check_sizes(cfg, classes, n_train, n_val)
    for key, arch in cfg["archs"].items():
        check_arch(cfg, key, arch, in_shape, classes)


# --------------------------------------------------------------------------------------------- files, names

class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping key given twice (Snakemake's loader keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"config file {self.name}: key {key!r} appears twice (lines {seen[key]} and "
                                  f"{key_node.start_mark.line + 1}); YAML keeps only the last, remove one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def check_duplicate_keys(path: str | Path) -> set[str]:
    """Re-read a YAML config file, rejecting duplicate keys at any depth (JSON files are YAML too); returns
    the top-level keys it sets."""
    with open(path) as fh:
        loader = _UniqueKeyLoader(fh)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    return set(data) if isinstance(data, dict) else set()


def check_experiment(name: str) -> None:
    if not SAFE_NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"config key 'experiment': {name!r} is not a safe folder name (results/{name}/); "
                          "expected letters, digits, '_', '.', '-', starting with a letter or digit")


# --------------------------------------------------------------------------------------------------- ratios

def _ratio_lists(cfg: dict) -> dict[str, list[float]]:
    out = {f"granularities.{g}": list(v) for g, v in cfg["granularities"].items()}
    out.update({"gradual.ratios": cfg["gradual"]["ratios"], "scratch.ratios": cfg["scratch"]["ratios"],
                "space.regimes": cfg["space"]["regimes"]})
    return out


def check_ratios(cfg: dict) -> None:
    """Ratios are written with two decimals in result paths and read back from them by the jobs: each must
    be a distinct two-decimal value in [0.01, 0.99] (space.regimes: up to 1.00)."""
    for key, values in _ratio_lists(cfg).items():
        top = "1.00" if key == "space.regimes" else "0.99"
        by_path = {}
        for r in values:
            text = f"{float(r):.2f}"
            if text == "0.00" or float(text) > float(top):
                raise ConfigError(f"config key '{key}': {r} is written {text!r} in result paths (two decimals); "
                                  f"expected values in [0.01, {top}]")
            by_path.setdefault(text, []).append(r)
        clash = {t: v for t, v in by_path.items() if len(v) > 1}
        if clash:
            t, v = next(iter(clash.items()))
            raise ConfigError(f"config key '{key}': {v} collide as {t!r} in result paths (two decimals); "
                              "expected distinct two-decimal values")
        for r in values:
            if abs(float(r) - round(float(r), 2)) > 1e-9:
                raise ConfigError(f"config key '{key}': {r} has more than two decimals, but result paths and "
                                  f"jobs use {float(r):.2f}; write {float(r):.2f} (or another two-decimal value)")


# -------------------------------------------------------------------------------------- methods, sections

def check_methods(cfg: dict) -> None:
    """Method names are registry names; option keys are the method's (values may be lists: variants)."""
    from prunelab.methods import get_method, method_names

    for name, opts in cfg["methods"].items():
        if name not in method_names():
            raise ConfigError(f"config key 'methods.{name}': unknown method; expected one of {method_names()}")
        spec = get_method(name)
        bad = sorted(set(opts or {}) - set(spec.defaults)) if spec.defaults is not None else []
        if bad:
            raise ConfigError(f"config key 'methods.{name}': unknown options {bad}; expected some of "
                              f"{sorted(spec.defaults)}")


def _granularities(method: str) -> tuple[str, ...]:
    """Granularities the registered method behind `method` (a method or variant name) scores."""
    from prunelab.methods import get_method, method_names

    base = method if method in method_names() else method.split("-", 1)[0]
    return get_method(base).granularities


def _selectable(cfg: dict) -> list[str]:
    """Names a section may use for the experiment's methods: each method and each of its variants."""
    try:
        from prunelab.methods.variants import expand_methods
    except ImportError:  # no variants
        return list(cfg["methods"])
    return list(dict.fromkeys([*cfg["methods"], *expand_methods(cfg["methods"])]))


def check_sections(cfg: dict, given: set[str] | None = None) -> None:
    """Names in sections must exist, and every enabled section must schedule at least one job. given: the
    top-level keys the config files set (None: all); granularities left to its default ({}) is a run of
    baselines only, which is allowed."""
    archs, methods = list(cfg["archs"]), _selectable(cfg)
    ratios = {g: list(cfg["granularities"].get(g) or []) for g in ("unstructured", "structured")}
    structured = ratios["structured"]

    def unknown(key, names, valid, what):
        bad = [n for n in names if n not in valid]
        if bad:
            raise ConfigError(f"config key '{key}': {bad} not in {what} {valid}")

    reg = cfg["regularizer"]
    unknown("regularizer.archs", reg["archs"] or [], archs, "archs")
    unknown("regularizer.methods", reg["methods"] or [], methods, "methods")
    extra = cfg["gradual"]["enabled"] or cfg["space"]["enabled"] or cfg["scratch"]["enabled"]
    if given is not None and "granularities" not in given:
        extra = True  # baselines only, asked for by leaving granularities out
    if not any(ratios.values()) and not extra:
        raise ConfigError("config key 'granularities': no ratio under unstructured or structured, and gradual, "
                          "scratch and space are off: nothing would be pruned; expected at least one ratio")
    for m in cfg["methods"]:
        if not any(ratios[g] for g in _granularities(m)) and not extra:
            need = " or ".join(f"granularities.{g}" for g in _granularities(m))
            raise ConfigError(f"config key 'methods.{m}': {m} scores only {', '.join(_granularities(m))} units, "
                              f"but {need} lists no ratio: {m} would schedule no job")
    if cfg["gradual"]["enabled"]:
        g = cfg["gradual"]
        unknown("gradual.archs", g["archs"], archs, "archs")
        if not g["archs"] and all(cfg["archs"][a]["name"] in DENSE_ONLY_MODELS for a in archs):
            raise ConfigError("config key 'gradual.enabled': every arch is a dense model without channels "
                              f"({sorted(DENSE_ONLY_MODELS)}), so gradual would schedule nothing; name archs in "
                              "gradual.archs or set gradual.enabled: false")
        if not (g["ratios"] or structured):
            raise ConfigError("config key 'gradual.ratios': empty and granularities.structured is empty: gradual "
                              "would schedule nothing; expected at least one ratio")
    if cfg["scratch"]["enabled"]:
        s = cfg["scratch"]
        unknown("scratch.methods", s["methods"], methods, "methods")
        if not s["methods"]:
            raise ConfigError("config key 'scratch.methods': empty: scratch would schedule nothing")
        flat = [m for m in s["methods"] if "structured" not in _granularities(m)]
        if flat:
            raise ConfigError(f"config key 'scratch.methods': {flat} do not prune structurally: no pruned "
                              "architecture to retrain from scratch")
        if not (s["ratios"] or structured):
            raise ConfigError("config key 'scratch.ratios': empty and granularities.structured is empty: scratch "
                              "retrains structurally pruned architectures, so it would schedule nothing")
        base = lambda names: {n.split("-", 1)[0] for n in names}  # noqa: E731  (variant -> method)
        pat_only = "standard" not in cfg["regimes"] and reg["methods"]
        if pat_only and not base(s["methods"]) & base(reg["methods"]):
            raise ConfigError(f"config key 'scratch.methods': {s['methods']} are not in regularizer.methods "
                              f"{reg['methods']} (the only regime is pat): scratch would schedule nothing")
    if cfg["space"]["enabled"]:
        unknown("space.archs", cfg["space"]["archs"], archs, "archs")
    for i, ref in enumerate(cfg["reference"]):
        for field, valid in (("arch", archs), ("method", methods), ("granularity", ["unstructured", "structured"])):
            if field in ref and ref[field] not in valid:
                raise ConfigError(f"config key 'reference.{i}.{field}': {ref[field]!r} matches no result; "
                                  f"expected one of {valid}")
        if "ratio" in ref and "granularity" in ref and round(ref["ratio"], 2) not in ratios[ref["granularity"]]:
            raise ConfigError(f"config key 'reference.{i}.ratio': {ref['ratio']} matches no result; expected one "
                              f"of granularities.{ref['granularity']} {ratios[ref['granularity']]}")
    if "pat" in cfg["regimes"] and reg["beta"] == 0:
        raise ConfigError("config key 'regularizer.beta': 0 makes pat training identical to standard; expected > 0")
    if "pat" in cfg["regimes"] and reg["methods"] is not None and not reg["methods"]:
        raise ConfigError("config key 'regularizer.methods': [] would prune no pat baseline; "
                          "use null for all methods")


# ------------------------------------------------------------------------------------------------ schedule

def check_schedule(cfg: dict) -> None:
    """gradual: pruning steps fit in train.epochs; iterative: each round gets fine-tuning epochs;
    multistep milestones (epochs, or fractions in (0, 1)) fall inside the run."""
    g, epochs = cfg["gradual"], cfg["train"]["epochs"]
    if g["enabled"]:
        stop = epochs // 2 if g["stop_epoch"] is None else g["stop_epoch"]
        what = "gradual.stop_epoch" if g["stop_epoch"] is not None else "gradual.stop_epoch (null: train.epochs // 2)"
        if stop >= epochs:
            raise ConfigError(f"config key '{what}': {stop} must be below train.epochs ({epochs}); the epochs after "
                              "the last pruning step are the fine-tuning")
        if stop < g["interval"]:
            raise ConfigError(f"config key '{what}': {stop} is below gradual.interval ({g['interval']}): no "
                              "pruning step would run")
    p, ft = cfg["prune"], cfg["finetune"]["epochs"]
    if p["schedule"] == "iterative" and p["iterative_steps"] > 1 and ft < p["iterative_steps"]:
        raise ConfigError(f"config key 'prune.iterative_steps': {p['iterative_steps']} rounds share finetune.epochs "
                          f"({ft}), leaving rounds without fine-tuning; expected iterative_steps <= finetune.epochs")
    for section in ("train", "finetune"):
        t = cfg[section]
        if t["schedule"] == "multistep":
            late = [m for m in t["milestones"] if m >= 1 and m >= t["epochs"]]
            if late and t["epochs"] > 0:
                raise ConfigError(f"config key '{section}.milestones': {late} are not below {section}.epochs "
                                  f"({t['epochs']}): the learning rate would never drop there")


def check_device_available(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("config key 'device': cuda, but torch sees no CUDA GPU on this machine; "
                              "expected device: auto or cpu")


# --------------------------------------------------------------------------------------------------- models

def _noop_init(*args, **kwargs):
    return args[0] if args else next(iter(kwargs.values()), None)


@contextlib.contextmanager
def _meta_build():
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
    from prunelab.models import MODELS, TV_PREFIX, model_names

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
    from prunelab.models import build_model, classifier_name, prunable_layers

    where, options = f"archs.{key}", arch["options"] or {}
    check_model_name(where, arch["name"], options)
    try:
        with _meta_build():
            model = build_model({"name": arch["name"], "options": options, "in_shape": list(in_shape),
                                 "num_classes": classes})
    except (ValueError, TypeError) as err:
        at = f"'{where}.options'" if "option" in str(err) else \
            f"'{where}' (input {list(in_shape)} from dataset {cfg['dataset']['name']!r})"
        raise ConfigError(f"config key {at}: {err}".replace("\n", " ")) from None
    layers = dict(prunable_layers(model))
    head = classifier_name(model)
    for sect in ("prune", "gradual"):
        if sect == "gradual" and not (cfg["gradual"]["enabled"] and key in _gradual_archs(cfg)):
            continue
        bad = [n for n in cfg[sect]["ignore_layers"] if n not in layers]
        if bad:
            raise ConfigError(f"config key '{sect}.ignore_layers': {bad} are not prunable layers of arch {key!r}; "
                              f"expected some of {list(layers)}")
    if cfg["gradual"]["enabled"] and key in _gradual_archs(cfg):
        _check_gradual(cfg, key, arch["name"], model, layers, head)
    _check_prunable(cfg, key, arch["name"], model, layers, head)


def _check_prunable(cfg: dict, key: str, name: str, model, layers: dict, head: str) -> None:
    """Every requested ratio can be reached on arch `key` (prunelab.prune caps it silently otherwise):
    unstructured, each layer keeps max(1, ceil(min_keep_fraction x weights)); structured, each layer keeps
    min_keep_units, rounded up to prune.round_to (exact for models without residual adds, where every
    Conv/Linear but the classifier is its own group; elsewhere only 'nothing left to prune' is checked)."""
    from prunelab.models import Add, ShortcutA

    p, gran = cfg["prune"], cfg["granularities"]
    kept = {n: m.weight for n, m in layers.items() if n not in p["ignore_layers"]}
    if not kept:
        raise ConfigError(f"config key 'prune.ignore_layers': names every prunable layer of arch {key!r}: "
                          "nothing to prune")
    total = sum(w.numel() for w in kept.values())
    cap = total - sum(max(1, math.ceil(p["min_keep_fraction"] * w.numel())) for w in kept.values())
    for r in gran.get("unstructured") or []:
        if r - cap / total > 0.005:
            raise ConfigError(f"config key 'granularities.unstructured': {r} cannot be reached on arch {key!r}: "
                              f"prune.min_keep_fraction {p['min_keep_fraction']} leaves at most {cap / total:.3f} "
                              "prunable")
    if not gran.get("structured"):
        return
    widths = [w.shape[0] for n, w in kept.items() if n != head]
    if not widths:
        raise ConfigError(f"config key 'archs.{key}': structured pruning requested (granularities.structured) but "
                          f"{name} has no prunable units besides the classifier {head!r} and prune.ignore_layers "
                          "(an MLP needs a hidden layer)")
    rt, mku = p["round_to"], p["min_keep_units"]
    if rt > 1 and rt >= max(widths):
        raise ConfigError(f"config key 'prune.round_to': {rt} >= the widest prunable layer of arch {key!r} "
                          f"({max(widths)} units): every layer would keep all its units (achieved ratio 0); "
                          f"expected round_to below {max(widths)}")
    residual = any(isinstance(m, (Add, ShortcutA)) for m in model.modules())
    most = sum(u - min(mku, u) for u in widths) / sum(widths)
    worst = max(gran["structured"])
    if not residual and not name.startswith("tv:") and worst - most > 0.005:
        raise ConfigError(f"config key 'granularities.structured': {worst} cannot be reached on arch {key!r}: "
                          f"prune.min_keep_units {mku} per layer leaves at most {most:.3f} of its units prunable")


def _check_gradual(cfg: dict, key: str, name: str, model, layers: dict, head: str) -> None:
    """Gradual FRS on arch `key` has channels to prune, and channels_per_step x steps reaches every ratio
    (exact for models without residual adds: every Conv/Linear but the classifier, gradual.ignore_layers and
    VGG's first two convs is its own group, as prunelab.gradual selects them)."""
    from prunelab.gradual import auto_ignore
    from prunelab.models import Add, ShortcutA

    g = cfg["gradual"]
    skip = set(g["ignore_layers"]) | set(auto_ignore(model, name)) | {head}
    widths = [m.weight.shape[0] for n, m in layers.items() if n not in skip]
    if not widths:
        raise ConfigError(f"config key 'gradual.archs': arch {key!r} ({name}) has no prunable units besides the "
                          f"classifier {head!r} and gradual.ignore_layers: nothing to prune")
    per_step = g["channels_per_step"]
    if per_step is None or name.startswith("tv:") or any(isinstance(m, (Add, ShortcutA)) for m in model.modules()):
        return
    epochs = cfg["train"]["epochs"]
    steps = (epochs // 2 if g["stop_epoch"] is None else g["stop_epoch"]) // g["interval"]
    mku, total = cfg["prune"]["min_keep_units"], sum(widths)
    cap = sum(u - min(mku, u) for u in widths)
    for r in g["ratios"] or cfg["granularities"].get("structured") or []:
        target = min(math.floor(r * total + 0.5), cap)
        if per_step * steps < target:
            raise ConfigError(f"config key 'gradual.channels_per_step': {steps} steps of {per_step} channels cannot "
                              f"reach ratio {r} on arch {key!r} ({target} of {total} channels); expected at least "
                              f"{math.ceil(target / steps)}, or more steps (stop_epoch, interval)")


def _gradual_archs(cfg: dict) -> list[str]:
    names = cfg["gradual"]["archs"]
    return list(names) if names else [a for a, s in cfg["archs"].items() if s["name"] not in DENSE_ONLY_MODELS]
