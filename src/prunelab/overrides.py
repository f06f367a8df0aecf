"""`snakemake --config KEY=VALUE` values, typed as a config file would type them.

Snakemake reads a `--config` value as an int, float or True/False where the whole value is one, else with YAML's
BaseLoader, which leaves every scalar inside a list or mapping a string: `--config 'seeds=[0, 1]'` arrives as
['0', '1'] and the schema refuses it. `typed` re-reads each such string as YAML does in a config file (0 → int,
0.5 → float, true → bool, null → None, other text stays text). A mapping merges into the base config key by key
(`--config 'train={epochs: 2}'` changes train.epochs only); a list replaces the base's list. Keys cannot be
dotted (`train.epochs=2`: Snakemake refuses those before the workflow is read).

No torch import: the workflow types the overrides before the kernels are pinned (prunelab.numerics).
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml


def typed(value):
    """`value` with every string re-read as a YAML scalar (lists and mappings walked); other values unchanged."""
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return value if isinstance(parsed, (dict, list)) or value == "" else parsed
    if isinstance(value, Mapping):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(v) for v in value]
    return value

