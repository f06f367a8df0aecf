"""Method variants: a method option given as a list in the config sweeps it, one variant per value.

    methods: {screening: {lambda: [0, 0.5, 1]}, contribution: {kappa: [0, 1]}, random: {seed: [0, 1]}}

gives the methods `screening-lambda0`, `screening-lambda0.5`, `screening-lambda1`, `contribution-kappa0`,
`contribution-kappa1`, `random-seed0`, `random-seed1`. Several listed options of one method give their
product, the keys in sorted order (`frs-alpha1-beta0`). A method whose options are all single values (or a
one-element list) keeps its plain name, so existing results keep their paths. A variant name is path-safe
(letters, digits, `_`, `.`, `-`); a negative value is written with `m` (`kappam1` for κ = −1). An option whose
values are lower-case words sweeps them too (`screening: {allocation: [magnitude, anova]}` gives
`screening-allocationanova`); reading such a name back needs the method's option keys (the schema's).
"""

from __future__ import annotations

import itertools
import re

SEPARATOR = "-"
_VALUE = re.compile(r"^m?([0-9][0-9.em]*|inf|nan)$")
_WORD = re.compile(r"^[a-z]+$")


def format_value(value) -> str:
    """A swept value as written in a variant name: `format(v, "g")`, '-' written 'm' (0.25 → '0.25'); a
    lower-case word as it is."""
    if isinstance(value, str) and _WORD.match(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"method variants sweep numbers or lower-case words only, got {value!r}")
    return format(value, "g").replace("-", "m").replace("+", "")


def _parse_value(text: str) -> float | int | str:
    if not _VALUE.match(text):
        return text  # a word (the caller checked it)
    v = float(text.replace("m", "-"))
    return int(v) if v.is_integer() and "." not in text and "e" not in text else v


def expand_methods(methods: dict) -> dict[str, tuple[str, dict]]:
    """Config `methods` (name → options, option values may be lists) → {variant name: (method, options)}.

    Options of each variant are scalars; the order is the config's, values in list order.
    """
    out: dict[str, tuple[str, dict]] = {}
    for method, options in methods.items():
        options = dict(options or {})
        swept = sorted(k for k, v in options.items() if isinstance(v, list) and len(v) > 1)
        fixed = {k: (v[0] if isinstance(v, list) else v) for k, v in options.items() if k not in swept}
        if not swept:
            out[method] = (method, fixed)
            continue
        for values in itertools.product(*(options[k] for k in swept)):
            name = SEPARATOR.join([method] + [f"{k}{format_value(v)}" for k, v in zip(swept, values)])
            out[name] = (method, {**fixed, **dict(zip(swept, values))})
    return out


def pat_regimes(config: dict) -> dict[str, float]:
    """{regime name: beta} of pruning-aware training: `pat` for one regularizer.beta, `pat-beta<value>` (written as a
    method variant's value) for each beta of a list that sweeps it."""
    betas = config["regularizer"]["beta"]
    betas = betas if isinstance(betas, list) else [betas]
    if len(betas) == 1:
        return {"pat": betas[0]}
    return {f"pat{SEPARATOR}beta{format_value(b)}": b for b in betas}


def base_method(name: str) -> str:
    """The registered method behind a variant name (`screening-lambda0.5` → `screening`)."""
    return name.split(SEPARATOR, 1)[0]


def parse_variant(name: str, option_names=None) -> tuple[str, dict]:
    """`screening-lambda0.5` → ('screening', {'lambda': 0.5}); a plain name → (name, {}).

    option_names (the method's option keys) settle where a key ends: without them a key is the leading
    letters of each part, which misreads a negative value (`kappam1`); `prunelab.methods.variant_options`
    passes the registry's keys.
    """
    method, *parts = name.split(SEPARATOR)
    swept = {}
    for part in parts:
        keys = sorted((k for k in option_names or () if part.startswith(k)), key=len, reverse=True)
        key = keys[0] if keys else re.match(r"[A-Za-z_]*", part).group(0)
        text = part[len(key):]
        if not key or not (_VALUE.match(text) or (keys and _WORD.match(text))):
            raise ValueError(f"method variant {name!r}: cannot read {part!r} as <option><value>")
        swept[key] = _parse_value(text)
    return method, swept


def distinct_variants(variants: dict[str, tuple[str, dict]], unused: dict[str, tuple[str, ...]]) -> list[str]:
    """Variant names, leaving out each variant that equals an earlier one of its method once the options in
    `unused` ({method: options its scores at some granularity do not read}) are dropped: the variants worth
    running at that granularity (contribution's kappa does not change its structured score)."""
    seen, out = set(), []
    for name, (method, options) in variants.items():
        key = (method, tuple(sorted((k, v) for k, v in options.items() if k not in unused.get(method, ()))))
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def select_variants(variants: list[str], names: list[str] | None) -> list[str]:
    """The variants a list of names selects: a method name selects all its variants, a variant itself."""
    if names is None:
        return list(variants)
    return [v for v in variants if v in names or base_method(v) in names]
