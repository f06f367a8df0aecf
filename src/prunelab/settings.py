"""Typed settings of the config sections the library reads, with the defaults of the workflow's JSON schema.

The schema (`workflow/schemas/config.schema.yaml`) is the one home of every default, bound and help text. The
workflow validates the config against it (Snakemake fills the defaults in); a library function receives a
section as a frozen dataclass, built here from a dict by `<Settings>.of(values)`: missing keys take the
schema's defaults, so a notebook calling the library with `{"epochs": 2}` gets the same recipe as the workflow.
No default is written a second time in Python.

    TrainSettings.of({"epochs": 2})                 # baseline recipe, checked against the schema
    TrainSettings.of(cfg["finetune"], "finetune")   # fine-tuning recipe (its own epochs and lr defaults)
    PruneSettings.of({"round_to": 8}); LatencySettings.of(cfg["latency"]); StatsSettings; GradualSettings;
    ResumeSettings

A dict is checked against the schema (ValueError naming `section.key`), so a notebook gets the workflow's
errors too; a job builds its settings with `from_config` from the config Snakemake has validated already.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def schema() -> dict:
    """The workflow's config schema (YAML anchors and merge keys resolved)."""
    if not SCHEMA_FILE.is_file():
        raise FileNotFoundError(f"config schema {SCHEMA_FILE} not found: prunelab reads its defaults from the "
                                "repository's workflow/schemas/ (install the package editable from a checkout)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~5 ms, not ~50 ms, in every job process
    return yaml.load(SCHEMA_FILE.read_text(), Loader=loader)


def section_defaults(section: str) -> dict:
    """{key: default} of a top-level config section's properties (keys without a default are left out)."""
    props = _section_schema(section).get("properties", {})
    return {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}


def _section_schema(section: str) -> dict:
    """The schema of a config section, dotted for nested ones ("prune", "methods.screening")."""
    node = schema()
    for part in section.split("."):
        node = node["properties"][part]
    return node


@functools.cache
def _property_validator(section: str, key: str):
    """A JSON-schema validator of one property of a config section (jsonschema is imported here, ~0.1 s, only
    where values from outside the workflow are checked: a notebook, a test, a score job's method options)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(_section_schema(section).get("properties", {})[key])


def check_values(section: str, values: dict) -> None:
    """ValueError naming `section.key` and the schema's complaint for the first value the schema refuses
    (section dotted for nested ones: "methods.screening")."""
    from jsonschema.exceptions import best_match

    for key, value in values.items():
        value = list(value) if isinstance(value, tuple) else value
        error = best_match(_property_validator(section, key).iter_errors(value))
        if error is not None:
            where = ".".join([section, key, *map(str, error.path)])
            raise ValueError(f"{where}: {error.message}")


class _Settings:
    """Base of the settings dataclasses: `of(values, section)` completes `values` from the schema and checks them
    against it; `from_config` takes a section the workflow has already validated and completed."""

    SECTION = ""
    BORROWED: dict[str, str] = {}  # setting -> the section that owns it, where that is not SECTION

    @classmethod
    def _owner(cls, key: str, section: str) -> str:
        return cls.BORROWED.get(key, section)

    @classmethod
    def of(cls, values=None, section: str | None = None):
        """Settings from a dict (checked against the schema; missing keys: its defaults) or an instance
        (returned as is)."""
        if isinstance(values, cls):
            return values
        section = section or cls.SECTION
        names = {f.name for f in dataclasses.fields(cls)}
        given = dict(values or {})
        unknown = sorted(set(given) - names)
        if unknown:
            raise KeyError(f"{section}: unknown setting(s) {unknown}; known: {sorted(names)}")
        for key, value in given.items():
            check_values(cls._owner(key, section), {key: value})
        return cls.from_config(given, section)

    @classmethod
    def from_config(cls, values, section: str | None = None):
        """Settings from a config section the workflow validated (not checked again; missing keys: defaults)."""
        if isinstance(values, cls):
            return values
        section = section or cls.SECTION
        names = [f.name for f in dataclasses.fields(cls)]
        owners = {cls._owner(k, section) for k in names}
        defaults = {o: section_defaults(o) for o in owners}
        merged = {k: defaults[cls._owner(k, section)][k] for k in names if k in defaults[cls._owner(k, section)]}
        merged.update({k: v for k, v in dict(values or {}).items() if k in names})
        return cls(**{k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """A training recipe (sections `train` and `finetune`, and an arch's own keys over them). lr per step of
    SGD; epochs over the train split, or of `steps_per_epoch` batches when that is set."""

    SECTION = "train"
    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    milestones: list
    gamma: float
    augment: bool
    select: str
    steps_per_epoch: int | None

    def epoch_steps(self, n_train: int) -> int:
        """Optimiser steps in one epoch over a train split of `n_train` images (steps_per_epoch batches, or the
        whole split; the last batch may be smaller)."""
        images = n_train if self.steps_per_epoch is None else min(n_train, self.steps_per_epoch * self.batch_size)
        return -(-images // self.batch_size)

    def run_steps(self, n_train: int) -> int:
        """Optimiser steps of the whole recipe: epochs × `epoch_steps`."""
        return self.epochs * self.epoch_steps(n_train)


@dataclass(frozen=True)
class FinetuneSettings(TrainSettings):
    """Section `finetune`: a training recipe plus the step budgets read from its one run."""

    SECTION = "finetune"
    budgets: list | None   # optimiser steps; None = the whole run

    def budget_epochs(self, n_train: int) -> dict[int, int]:
        """{budget in steps: the epoch it ends after} for every budget (the whole run when budgets is None).
        ValueError naming finetune.budgets when a budget is not a whole number of epochs or the largest is not the
        run."""
        per_epoch, total = self.epoch_steps(n_train), self.run_steps(n_train)
        budgets = sorted(self.budgets or [total])
        bad = [b for b in budgets if b % per_epoch]
        if bad or budgets[-1] != total:
            raise ValueError(f"finetune.budgets: {budgets} must be multiples of the {per_epoch} steps of an epoch "
                             f"(validation selects among epochs) and the largest must be the run, epochs x steps of "
                             f"an epoch = {self.epochs} x {per_epoch} = {total}")
        return {b: b // per_epoch for b in budgets}


@dataclass(frozen=True)
class PruneSettings(_Settings):
    """Section `prune`: selection scope, schedule and the structured width rules."""

    SECTION = "prune"
    scope: str                  # global | layerwise ranking
    min_keep_fraction: float    # unstructured: fraction of each layer's weights always kept
    min_keep_units: int         # structured: units each layer always keeps
    ignore_layers: list         # layer names never pruned
    schedule: str               # oneshot | iterative
    iterative_steps: int        # rounds of the iterative schedule
    round_to: int               # structured: kept units per layer rounded up to a multiple of this
    target: str                 # structured: units | params | macs, what a ratio is a fraction of
    normalize: str              # structured: l2 | mean | max, the common scale of the global ranking

    @property
    def iterative(self) -> bool:
        return self.schedule == "iterative"


@dataclass(frozen=True)
class LatencySettings(_Settings):
    """Section `latency`: how each model's inference time (ms per batch of 1 and of 64) is measured."""

    SECTION = "latency"
    warmup: int      # untimed calls before timing
    repeats: int     # timed calls per form, the median reported (interleaved with the dense model: rounds)
    compile: bool    # time the TorchInductor-compiled form (frozen weights) instead of eager


@dataclass(frozen=True)
class StatsSettings(_Settings):
    """Section `stats`: the calibration pass (images from the train split, batch size of the pass)."""

    SECTION = "stats"
    samples: int
    batch_size: int


@dataclass(frozen=True)
class GradualSettings(_Settings):
    """Section `gradual` as a job uses it (channel budget and timing of gradual FRS), with the structured
    `prune.min_keep_units`."""

    SECTION = "gradual"
    BORROWED = {"min_keep_units": "prune", "target": "prune"}
    interval: int                   # epochs between pruning steps
    stop_epoch: int | None          # last pruning step after this many epochs (None: epochs // 2)
    channels_per_step: int | None   # channels masked per step (None: the ratio spread evenly)
    ignore_layers: list             # layers never pruned (besides the automatic ones)
    min_keep_units: int             # channels each layer always keeps
    target: str                     # units | params | macs: what the ratio is a fraction of (prune.target)

    def stop_epoch_for(self, epochs: int) -> int:
        """The epoch after which the last pruning step runs: stop_epoch, or epochs // 2 when it is null."""
        return epochs // 2 if self.stop_epoch is None else self.stop_epoch


def recipe(config: dict, section: str, arch: str) -> dict:
    """Settings of `section` ("train" or "finetune") for config arch `arch`: the arch's own keys
    (`archs.<arch>.<section>`) over the top-level section."""
    return {**config[section], **(config["archs"][arch].get(section) or {})}


def round_half_up(x: float) -> int:
    """The count a fraction of units or weights becomes: x rounded to the nearest integer, halves up (0.5 → 1;
    Python's round() would give 0)."""
    return int(math.floor(x + 0.5))


def rounded_up(kept: int, units: int, round_to: int) -> int:
    """A layer's kept units raised to the smallest multiple of `round_to` at least `kept`, capped at all its
    `units` (prune.round_to)."""
    return min(units, -(-kept // round_to) * round_to)


@dataclass(frozen=True)
class ResumeSettings(_Settings):
    """Section `resume`: when a training job writes its resume state (prunelab.training.resume)."""

    SECTION = "resume"
    every_minutes: float        # at the first epoch end this many minutes after the last write
    every_epochs: int | None    # and every this many epochs (None: by time only)


# Settings that cannot change a model's weights (device, latency timing, resume cadence) and where tracking goes:
# not rule params, so changing them reruns nothing, and not written by an `onstart` handler, which does not run when
# the workflow is imported as a Snakemake module. Every Snakemake process that parses the workflow (the main one,
# each job's own, an importing workflow) computes them from its config and puts them in its environment, which the
# jobs it starts inherit; keyed by experiment, so two imported experiments do not mix.
RUNTIME_ENV = "PRUNELAB_RUNTIME"


def publish_runtime(experiment: str, settings: dict) -> None:
    """Workflow side: `settings` (JSON-serialisable) of `experiment` into this process's environment."""
    published = json.loads(os.environ.get(RUNTIME_ENV) or "{}")
    published[experiment] = settings
    os.environ[RUNTIME_ENV] = json.dumps(published, sort_keys=True)


def published_runtime(experiment: str) -> dict | None:
    """Job side: the settings the workflow published for `experiment`, or None outside a workflow run."""
    return json.loads(os.environ.get(RUNTIME_ENV) or "{}").get(experiment)


def method_defaults(name: str) -> dict | None:
    """{option: default} of method `name` in the schema's `methods` section ({} for a method without options);
    None when the schema does not list the method."""
    props = schema()["properties"]["methods"]["properties"]
    if name not in props:
        return None
    return {k: v["default"] for k, v in (props[name].get("properties") or {}).items()}
