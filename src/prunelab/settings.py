"""Typed settings of the config sections the library reads, with the defaults of the workflow's JSON schema.

The schema (`workflow/schemas/config.schema.yaml`) is the one home of every default, bound and help text. The
workflow validates the config against it (Snakemake fills the defaults in); a library function receives a
section as a frozen dataclass, built here from a dict by `<Settings>.of(values)`: missing keys take the
schema's defaults, so a notebook calling the library with `{"epochs": 2}` gets the same recipe as the workflow.
No default is written a second time in Python.

    TrainSettings.of(cfg["train"])                  # baseline recipe
    TrainSettings.of(cfg["finetune"], "finetune")   # fine-tuning recipe (its own epochs and lr defaults)
    PruneSettings.of(cfg["prune"]); LatencySettings.of(cfg["latency"])
"""

from __future__ import annotations

import dataclasses
import functools
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
    props = schema()["properties"][section].get("properties", {})
    return {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}


class _Settings:
    """Base of the settings dataclasses: `of(values, section)` completes `values` from the schema."""

    SECTION = ""

    @classmethod
    def of(cls, values=None, section: str | None = None):
        """Settings from a dict (missing keys: the schema's defaults of `section`) or an instance (returned)."""
        if isinstance(values, cls):
            return values
        section = section or cls.SECTION
        names = {f.name for f in dataclasses.fields(cls)}
        given = dict(values or {})
        unknown = sorted(set(given) - names)
        if unknown:
            raise KeyError(f"{section}: unknown setting(s) {unknown}; known: {sorted(names)}")
        merged = {**section_defaults(section), **given}
        return cls(**{k: merged[k] for k in names})

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


def method_defaults(name: str) -> dict | None:
    """{option: default} of method `name` in the schema's `methods` section ({} for a method without options);
    None when the schema does not list the method."""
    props = schema()["properties"]["methods"]["properties"]
    if name not in props:
        return None
    return {k: v["default"] for k, v in (props[name].get("properties") or {}).items()}
