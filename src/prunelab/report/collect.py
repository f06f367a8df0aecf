"""Read metrics.json and score files into tidy tables."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

# the metrics.json keys (prunelab.records.METRICS_KEYS), in that order: the first columns of results.csv.
COLUMNS = [
    "experiment", "dataset", "arch", "regime", "seed", "method", "granularity", "stage",
    "ratio_requested", "sparsity_achieved", "params_total", "params_nonzero", "compression",
    "macs_dense", "macs_effective", "speedup_theoretical", "latency_ms_b1", "latency_ms_b64",
    "latency_speedup", "device", "top1_val", "top1_test", "top5_test", "loss_test",
    "top1_test_before_finetune", "epochs", "wall_s", "git_commit", "config_hash",
]
STAGES = ("baseline", "pruned", "finetuned", "gradual", "scratch", "space")
PERCENT_KEYS = ("top1_val", "top1_test", "top5_test", "top1_test_before_finetune")
SORT_KEYS = ("experiment", "dataset", "arch", "regime", "stage", "method", "granularity",
             "ratio_requested", "schedule", "space_regime", "budget_steps", "seed")
# Derived columns added by `annotate` (never written to results.csv).
DERIVED = ("gran", "target", "budget", "ratio", "base", "vkey", "vval", "style", "label", "pair_regime")
VARIANT_SEPARATOR = "-"  # `<method>-<option><value>`: the base method is the name before the first "-"


def read_metrics(path: str | Path) -> dict:
    """One metrics.json as a validated flat dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return validate_record(rec, str(path))


def validate_record(rec, where: str) -> dict:
    """Check the keys the report relies on; return the record unchanged."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: metrics.json must hold one JSON object, got {type(rec).__name__}")
    for key in ("arch", "stage"):
        if rec.get(key) in (None, ""):
            raise ValueError(f"{where}: missing required key {key!r}")
    if rec["stage"] not in STAGES:
        raise ValueError(f"{where}: stage {rec['stage']!r} is not one of {STAGES}")
    for key in PERCENT_KEYS:
        v = rec.get(key)
        if v is not None and not (isinstance(v, (int, float)) and (math.isnan(v) or 0 <= v <= 100)):
            raise ValueError(f"{where}: {key}={v!r} is not a percentage in [0, 100]")
    if rec["stage"] in ("pruned", "finetuned") and rec.get("method") in (None, ""):
        raise ValueError(f"{where}: stage {rec['stage']!r} needs a 'method'")
    return rec


def _sort_key(rec: dict) -> tuple:
    key = []
    for k in SORT_KEYS:
        v = rec.get(k)
        if k == "stage":
            v = STAGES.index(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            key.append((False, 0, float(v), ""))
        else:
            key.append((v is None, 1, 0.0, "" if v is None else str(v)))
    return (*key, canonical(rec))


def canonical(rec: dict) -> str:
    """Order-independent text of a record (sorting tie-breaker, duplicate detection)."""
    return json.dumps(rec, sort_keys=True, default=str)


def records_frame(records: list[dict]) -> pd.DataFrame:
    """The long results table: one row per record, §3 columns first, extras sorted, rows sorted."""
    if not records:
        raise ValueError("no metrics records to report on")
    records = sorted(records, key=_sort_key)
    extras = sorted({k for r in records for k in r} - set(COLUMNS))
    df = pd.DataFrame.from_records([{k: r.get(k) for k in COLUMNS + extras} for r in records],
                                   columns=COLUMNS + extras)
    for col in df.columns:  # integers stay integers even with nulls (seed, params, MACs)
        vals = [v for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                                for v in df[col]], dtype="Int64")
    return df


def budget_rows(rec: dict) -> list[dict]:
    """The rows of one record: a fine-tuned model read at several budgets (its `budgets` list: budget_steps,
    best_epoch, accuracy and steps of the model selected within each) gives one row per budget, the rest of the
    record (architecture, costs, latency) shared; any other record is its own row."""
    entries = rec.get("budgets")
    if not isinstance(entries, list) or not entries:
        return [rec]
    base = {k: v for k, v in rec.items() if k != "budgets"}
    return [{**base, **entry} for entry in entries]


def load_metrics(files) -> pd.DataFrame:
    """results.csv content from metrics.json paths (the same file listed twice counts once; a fine-tuned model
    read at several budgets gives one row per budget)."""
    paths = sorted({Path(f).resolve() for f in files})
    return records_frame([row for p in paths for row in budget_rows(read_metrics(p))])


TEXT_COLUMNS = ("experiment", "dataset", "arch", "regime", "method", "granularity", "stage", "device", "git_commit",
                "config_hash", "source_hash", "schedule", "latency_form", "prune_target")
_INT = re.compile(r"^-?\d+$")


def _cell(text: str, column: str):
    """One results.csv cell back to its metrics.json value: '' → None, JSON objects/lists, ints, floats, bools."""
    if text == "":
        return None
    if column in TEXT_COLUMNS:
        return text
    if text[0] in "[{":
        return json.loads(text)
    if text in ("True", "False"):
        return text == "True"
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def load_results_csv(path: str | Path) -> pd.DataFrame:
    """A report's results.csv (one row per model, as `csv_frame` wrote it) back as the results frame; the records
    are validated as metrics.json files are."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results table not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [k for k in ("arch", "stage") if k not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a results.csv (no column {missing[0]!r})")
    return records_frame([validate_record({k: _cell(v, k) for k, v in r.items()}, f"{path} row {i + 2}")
                          for i, r in enumerate(rows)])


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without derived columns, dict/list cells as canonical JSON (for CSV)."""
    out = df.drop(columns=[c for c in DERIVED if c in df.columns])
    for col in out.columns:
        if out[col].dtype == object and any(isinstance(v, (dict, list)) for v in out[col]):
            out[col] = [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                        for v in out[col]]
    return out


def _num(v):
    """v, or None for None/NaN/NA."""
    return None if v is None or (not isinstance(v, (dict, list, str)) and pd.isna(v)) else v


def base_method(name) -> str | None:
    """The method behind a variant name (`screening-lambda0.25` → `screening`); None for no method."""
    return None if _num(name) is None else str(name).split(VARIANT_SEPARATOR, 1)[0]


def swept_options(df: pd.DataFrame) -> dict[str, list[str]]:
    """{base method: numeric method_config keys whose value differs between its one-shot models}: what its variants
    sweep, read from the records' own `method_config` (no parsing of names)."""
    if "method_config" not in df:
        return {}
    values: dict[tuple[str, str], set] = {}
    for m, s, c in zip(df["method"], df["stage"], df["method_config"]):
        if s in ("pruned", "finetuned") and isinstance(c, dict) and base_method(m) is not None:
            for k, v in c.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    values.setdefault((base_method(m), k), set()).add(float(v))
    out: dict[str, list[str]] = {}
    for (b, k), vs in sorted(values.items()):
        if len(vs) > 1:
            out.setdefault(b, []).append(k)
    return out


def annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add derived columns: gran, target, budget, ratio, base, vkey, vval, style, label, pair_regime.

    label names a method variant: "frs (gradual)", "magnitude (iterative)", and method_config keys
    that vary within a method ("screening (lambda=0.25)"). style is the colour/marker key (the base method).
    vkey/vval: the one option a base method's variants sweep (`swept_options`) and this row's value of it.
    target: what a ratio is a fraction of (`prune_target` where recorded; else "units" structured, "weights"
    unstructured). budget: a fine-tuned row's `budget_steps` (NaN where not recorded and for other stages).
    """
    df = df.copy()
    g = [_num(v) for v in df["granularity"]]
    df["gran"] = [x if x is not None or s not in ("gradual", "scratch") else "structured"
                  for x, s in zip(g, df["stage"])]
    tgt = df["prune_target"] if "prune_target" in df else pd.Series([None] * len(df), index=df.index)
    df["target"] = [str(t) if _num(t) is not None else ("weights" if x == "unstructured" else "units")
                    for t, x in zip(tgt, df["gran"])]
    steps = df["budget_steps"] if "budget_steps" in df else pd.Series([None] * len(df), index=df.index)
    df["budget"] = [float(b) if s == "finetuned" and _num(b) is not None else np.nan
                    for b, s in zip(steps, df["stage"])]
    df["ratio"] = [round(float(r), 4) if _num(r) is not None else np.nan for r in df["ratio_requested"]]
    df["base"] = [base_method(m) for m in df["method"]]
    cfgs = df["method_config"] if "method_config" in df else pd.Series([None] * len(df), index=df.index)
    swept = swept_options(df)
    vkey, vval = [], []
    for b, c, s in zip(df["base"], cfgs, df["stage"]):
        keys = swept.get(b, [])
        ok = len(keys) == 1 and s in ("pruned", "finetuned") and isinstance(c, dict) and keys[0] in c
        vkey.append(keys[0] if ok else None)
        vval.append(float(c[keys[0]]) if ok else np.nan)
    df["vkey"], df["vval"] = vkey, vval
    df["style"] = [s if s in ("gradual", "scratch") else b for s, b in zip(df["stage"], df["base"])]
    sched = df["schedule"] if "schedule" in df else pd.Series([None] * len(df), index=df.index)
    varying: dict[str, list[str]] = {}
    for m in set(df["method"].dropna()):
        sub = [c for c in cfgs[df["method"] == m] if isinstance(c, dict)]
        keys = sorted({k for c in sub for k in c})
        varying[m] = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in sub}) > 1]
    labels = []
    for m, s, sc, c in zip(df["method"], df["stage"], sched, cfgs):
        if _num(m) is None:
            labels.append(s if s in ("gradual", "scratch") else None)
            continue
        lab = str(m)
        c = c if isinstance(c, dict) else {}
        extra = [f"{k}={c.get(k)}" for k in varying.get(m, [])]
        if extra:
            lab += f" ({', '.join(extra)})"
        if s in ("gradual", "scratch"):
            lab += f" ({s})"
        elif _num(sc) is not None and sc != "oneshot":
            lab += f" ({sc})"
        labels.append(lab)
    df["label"] = labels
    df["pair_regime"] = [r if _num(r) is not None else "standard" for r in df["regime"]]
    return df


# ---- score files ------------------------------------------------------------------------------

_SEED_DIR = re.compile(r"^seed(\d+)$")


def parse_score_path(path: str | Path) -> tuple[str, str, int, str]:
    """(arch, regime, seed, method) from .../scores/{arch}/{regime}/seed{seed}/{method}.pt."""
    p = Path(path)
    parts = p.parts
    if p.suffix != ".pt" or len(parts) < 4 or not _SEED_DIR.match(parts[-2]):
        raise ValueError(f"score file path must end in {{arch}}/{{regime}}/seed{{seed}}/{{method}}.pt: {path}")
    return parts[-4], parts[-3], int(_SEED_DIR.match(parts[-2]).group(1)), p.stem


def load_scores(files) -> list[dict]:
    """Score files as dicts {arch, regime, seed, method, layers: {layer: {gran: ndarray | None}}}."""
    files = sorted({Path(f) for f in files})
    if not files:
        return []
    import torch

    out = []
    for f in files:
        arch, regime, seed, method = parse_score_path(f)
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the path
            raise ValueError(f"{f}: cannot load score file ({err})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("layers"), dict):
            raise ValueError(f"{f}: score file must be a dict with a 'layers' dict")
        layers = {}
        for name, entry in obj["layers"].items():
            if not isinstance(entry, dict):
                raise ValueError(f"{f}: layer {name!r} must map granularity -> tensor | None")
            layers[name] = {}
            for gran in ("unstructured", "structured"):
                t = entry.get(gran)
                if t is None:
                    layers[name][gran] = None
                    continue
                a = t.detach().double().cpu().numpy().ravel() if torch.is_tensor(t) else np.asarray(t, float).ravel()
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"{f}: layer {name!r} {gran} scores contain NaN/inf")
                layers[name][gran] = a
        out.append(dict(arch=arch, regime=regime, seed=seed, method=method, layers=layers, path=str(f)))
    return out


# ---- canonical method order (tables and legends) ----------------------------------------------

METHOD_ORDER = ("random", "magnitude", "taylor", "screening", "contribution", "frs", "gradual", "scratch")


def method_rank(label: str, style: str | None = None) -> tuple:
    """Sort key: known methods in METHOD_ORDER, then others alphabetically; variants after their base, in
    natural order of their values (`lambda0.25` before `lambda1`, `lambda2` before `lambda10`)."""
    key = style if style is not None else base_method(str(label).split(" ")[0])
    pos = METHOD_ORDER.index(key) if key in METHOD_ORDER else len(METHOD_ORDER)
    return (pos, key, str(label) != key, _natural(str(label)))


def _natural(text: str) -> tuple:
    return tuple((0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
                 for t in re.split(r"(\d+(?:\.\d+)?)", text) if t)
