"""Checks of a schema-validated config (defaults filled) that the schema cannot express, run at DAG time.

`check_config(cfg, config_files)` raises `ConfigError` with one line naming the config key (or file) and what
was expected: duplicate YAML keys, unsafe experiment names, ratios that vanish or collide at the two decimals
of result paths, sections that would schedule nothing, schedule coherence, the device, data files, model
names and options (against `prunelab.models.MODELS` and torchvision's list), layer names, split sizes.
Models are built only on the meta device with initialisation skipped (milliseconds, no memory); torchvision
is imported only when a `tv:` model is named. No Snakemake import: common.smk turns ConfigError into a
WorkflowError.

Data files and split sizes: `prunelab.checks.data`; models: `prunelab.checks.models`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from prunelab.checks.data import ConfigError, check_data_files, check_sizes, dataset_sizes, few
from prunelab.checks.models import check_arch, gradual_archs
from prunelab.methods import get_method, method_names
from prunelab.methods.variants import expand_methods
from prunelab.models import DENSE_ONLY
from prunelab.pruning.schedules import finetune_budgets
from prunelab.settings import FinetuneSettings, GradualSettings, recipe

__all__ = ["ConfigError", "check_config", "dry_run_notes"]

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_config(cfg: dict, config_files: list[str] = (), check_device: bool = True, check_files: bool = True,
                 overridden: set[str] = frozenset()) -> None:
    """Raise ConfigError on the first mistake in `cfg` (schema-validated, defaults filled).

    config_files: the YAML files the config was read from (duplicate keys); overridden: the top-level keys set on
    the command line (`--config`). check_device: False where jobs run on other machines (cluster), whose GPUs
    this one cannot see, and in a dry run. check_files: False in a dry run, which plans without the data files.
    """
    given = set(overridden).union(*(check_duplicate_keys(path) for path in config_files)) if config_files else None
    check_experiment(cfg["experiment"])
    check_ratios(cfg)
    check_methods(cfg)
    check_sections(cfg, given)
    check_schedule(cfg)
    check_prune(cfg)
    if check_device:
        check_device_available(cfg["device"])
    elif cfg["device"] == "cuda" and cfg["resources"]["gpu"] == 0:
        raise ConfigError("config key 'resources.gpu': 0, but device is cuda: cluster jobs would get no GPU; "
                          "expected resources.gpu >= 1 (or device: auto)")
    in_shape, classes, n_train, n_val = dataset_sizes(cfg["dataset"], check_files=check_files)
    check_sizes(cfg, classes, n_train, n_val)
    check_budgets(cfg, n_train)
    for key, arch in cfg["archs"].items():
        check_arch(cfg, key, arch, in_shape, classes)


def dry_run_notes(cfg: dict, check_device: bool = True) -> list[str]:
    """What a real run of `cfg` would stop on that a dry run does not need: missing data files, no usable GPU
    for `device: cuda` (check_device: False where the jobs' machines are others). One line each."""
    checks = [lambda: check_data_files(cfg["dataset"])]
    if check_device:
        checks.append(lambda: check_device_available(cfg["device"]))
    notes = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            notes.append(f"a real run stops here: {exc}")
    return notes


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
    for a, spec in cfg["archs"].items():
        out.update({f"archs.{a}.granularities.{g}": list(v) for g, v in (spec.get("granularities") or {}).items()})
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
    for name, opts in cfg["methods"].items():
        if name not in method_names():
            raise ConfigError(f"config key 'methods.{name}': unknown method; expected one of {method_names()}")
        spec = get_method(name)
        bad = sorted(set(opts or {}) - set(spec.defaults)) if spec.defaults is not None else []
        if bad:
            raise ConfigError(f"config key 'methods.{name}': unknown options {bad}; expected some of "
                              f"{sorted(spec.defaults)}")
    swept = [k for k, v in (cfg["methods"].get("frs") or {}).items() if isinstance(v, list) and len(v) > 1]
    if swept:
        raise ConfigError(f"config key 'methods.frs.{swept[0]}': a list, but the statistics pass and the gradual "
                          "schedule compute LRP relevance with one (alpha, beta); expected a single value")


def _granularities(method: str) -> tuple[str, ...]:
    """Granularities the registered method behind `method` (a method or variant name) scores."""
    base = method if method in method_names() else method.split("-", 1)[0]
    return get_method(base).granularities


def _selectable(cfg: dict) -> list[str]:
    """Names a section may use for the experiment's methods: each method and each of its variants."""
    return list(dict.fromkeys([*cfg["methods"], *expand_methods(cfg["methods"])]))


def check_sections(cfg: dict, given: set[str] | None = None) -> None:
    """Names in sections must exist, and every enabled section must schedule at least one job. given: the
    top-level keys the config files set (None: all); granularities left to its default ({}) is a run of
    baselines only, which is allowed."""
    archs, methods = list(cfg["archs"]), _selectable(cfg)
    # ratios of any arch (an arch's own granularities replace the top-level ones for it)
    ratios = {g: sorted({r for a in archs for r in arch_ratios(cfg, a).get(g) or []})
              for g in ("unstructured", "structured")}
    structured = ratios["structured"]

    def unknown(key, names, valid, what):
        bad = [n for n in names if n not in valid]
        if bad:
            raise ConfigError(f"config key '{key}': {bad} not in {what} {few(valid)}")

    reg = cfg["regularizer"]
    unknown("regularizer.archs", reg["archs"] or [], archs, "archs")
    unknown("regularizer.methods", reg["methods"] or [], methods, "methods")
    for a, spec in cfg["archs"].items():
        unknown(f"archs.{a}.methods", spec.get("methods") or [], methods, "methods")
        if spec.get("methods") == []:
            raise ConfigError(f"config key 'archs.{a}.methods': [] would prune nothing on arch {a!r}; expected "
                              "method or variant names, or leave it out (all methods)")
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
        if not g["archs"] and all(cfg["archs"][a]["name"] in DENSE_ONLY for a in archs):
            raise ConfigError("config key 'gradual.enabled': every arch is a dense model without channels "
                              f"({sorted(DENSE_ONLY)}), so gradual would schedule nothing; name archs in "
                              "gradual.archs or set gradual.enabled: false")
        if not (g["ratios"] or structured):
            raise ConfigError("config key 'gradual.ratios': empty and granularities.structured is empty: gradual "
                              "would schedule nothing; expected at least one ratio")
    if cfg["scratch"]["enabled"]:
        s = cfg["scratch"]
        unknown("scratch.methods", s["methods"], methods, "methods")
        unknown("scratch.regimes", s["regimes"], cfg["regimes"], "regimes")
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
        pat_only = "standard" not in s["regimes"] and reg["methods"]
        if pat_only and not base(s["methods"]) & base(reg["methods"]):
            raise ConfigError(f"config key 'scratch.methods': {s['methods']} are not in regularizer.methods "
                              f"{reg['methods']} (scratch.regimes is pat only): scratch would schedule nothing")
    if cfg["space"]["enabled"]:
        unknown("space.archs", cfg["space"]["archs"], archs, "archs")
    for i, ref in enumerate(cfg["reference"]):
        for field, valid in (("arch", archs), ("method", methods), ("granularity", ["unstructured", "structured"])):
            if field in ref and ref[field] not in valid:
                raise ConfigError(f"config key 'reference.{i}.{field}': {ref[field]!r} matches no result; "
                                  f"expected one of {few(valid)}")
        if "ratio" in ref and "granularity" in ref and round(ref["ratio"], 2) not in ratios[ref["granularity"]]:
            raise ConfigError(f"config key 'reference.{i}.ratio': {ref['ratio']} matches no result; expected one "
                              f"of granularities.{ref['granularity']} {ratios[ref['granularity']]}")
    if "pat" not in cfg["regimes"] and (reg["archs"] or reg["methods"]):
        raise ConfigError("config key 'regularizer': archs/methods are set but regimes has no 'pat': no pat "
                          "baseline would be trained; add pat to regimes or remove them")
    if "pat" in cfg["regimes"] and reg["methods"] is not None and not reg["methods"]:
        raise ConfigError("config key 'regularizer.methods': [] would prune no pat baseline; "
                          "use null for all methods")


# ------------------------------------------------------------------------------------------------ schedule

def arch_ratios(cfg: dict, arch: str) -> dict[str, list[float]]:
    """Ratios per granularity of config arch `arch`: its own granularities where set, else the top level."""
    return cfg["archs"][arch].get("granularities") or cfg["granularities"]


def _epochs(cfg: dict, section: str, arch: str) -> tuple[int, str]:
    """(epochs, the key they come from) of `section` (train, finetune) for `arch` (its own value first)."""
    own = "epochs" in (cfg["archs"][arch].get(section) or {})
    return recipe(cfg, section, arch)["epochs"], f"archs.{arch}.{section}.epochs" if own else f"{section}.epochs"


def check_schedule(cfg: dict) -> None:
    """Per arch (its own epochs where set): gradual pruning steps fit in the training epochs; iterative rounds
    each get fine-tuning epochs; multistep milestones (epochs, or fractions in (0, 1)) fall inside the run."""
    g, p = cfg["gradual"], cfg["prune"]
    for arch in gradual_archs(cfg) if g["enabled"] else []:
        epochs, key = _epochs(cfg, "train", arch)
        stop = GradualSettings.from_config(g).stop_epoch_for(epochs)
        what = f"{stop}" if g["stop_epoch"] is not None else f"null, i.e. {key} // 2 = {stop},"
        if stop >= epochs:
            raise ConfigError(f"config key 'gradual.stop_epoch': {what} must be below {key} ({epochs}); the "
                              "epochs after the last pruning step are the fine-tuning")
        if stop < g["interval"]:
            raise ConfigError(f"config key 'gradual.stop_epoch': {what} is below gradual.interval ({g['interval']}) "
                              f"for arch {arch!r}: no pruning step would run")
    for arch in cfg["archs"]:
        ft, key = _epochs(cfg, "finetune", arch)
        if p["schedule"] == "iterative" and p["iterative_steps"] > 1 and ft < p["iterative_steps"]:
            raise ConfigError(f"config key 'prune.iterative_steps': {p['iterative_steps']} rounds share {key} ({ft}), "
                              f"leaving rounds without fine-tuning; expected iterative_steps <= {key}")
        for section in ("train", "finetune"):
            epochs, key = _epochs(cfg, section, arch)
            late = [m for m in cfg[section]["milestones"] if m >= 1 and m >= epochs]
            if cfg[section]["schedule"] == "multistep" and late and epochs > 0:
                raise ConfigError(f"config key '{section}.milestones': {late} are not below {key} ({epochs}): the "
                                  "learning rate would never drop there")


def check_prune(cfg: dict) -> None:
    """Prune settings the schema cannot relate: a cost target needs the global ranking."""
    p = cfg["prune"]
    if p["target"] != "units" and p["scope"] != "global":
        raise ConfigError(f"config key 'prune.target': {p['target']} needs prune.scope global (layerwise scope gives "
                          "every method the same widths, hence the same cost, already); expected target: units")


def check_budgets(cfg: dict, n_train: int) -> None:
    """Each arch's fine-tuning budgets are whole epochs of its fine-tuning run, the largest the run itself; several
    budgets need the one-shot schedule (the iterative one splits the run between its rounds)."""
    for arch in cfg["archs"]:
        own = "budgets" in (cfg["archs"][arch].get("finetune") or {})
        key = f"archs.{arch}.finetune.budgets" if own else "finetune.budgets"
        ft = FinetuneSettings.from_config(recipe(cfg, "finetune", arch))
        try:
            finetune_budgets(ft, cfg["prune"], n_train)
        except ValueError as exc:
            raise ConfigError(f"config key '{key}': {str(exc).removeprefix('finetune.budgets: ')} (arch {arch!r}, "
                              f"{n_train} training images)") from None


def check_device_available(device: str) -> None:
    """`device: cuda` needs a GPU torch can use here (ConfigError naming the override that tries the CPU)."""
    if device == "cuda":
        from prunelab.models import cuda_problem

        problem = cuda_problem()
        if problem:
            raise ConfigError(f"config key 'device': cuda, but {problem}; expected a usable GPU, or to try on the "
                              "CPU: --config device=cpu")
