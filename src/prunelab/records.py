"""metrics.json: one flat record per model, the same keys for every stage (README: what results/ holds)."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

METRICS_KEYS = (
    "experiment", "dataset", "arch", "regime", "seed", "method", "granularity", "stage", "ratio_requested",
    "sparsity_achieved", "params_total", "params_nonzero", "compression",
    "macs_dense", "macs_effective", "speedup_theoretical",
    "latency_ms_b1", "latency_ms_b64", "latency_speedup", "device",
    "top1_val", "top1_test", "top5_test", "loss_test",
    "top1_test_before_finetune", "epochs", "wall_s", "git_commit", "config_hash",
    "source_hash",
)
STAGES = ("baseline", "pruned", "finetuned", "gradual", "scratch", "space")


def config_hash(cfg) -> str:
    """Short sha256 of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@functools.cache
def git_commit() -> str:
    """HEAD of the repository holding this package ('<12 hex>', '<12 hex>-dirty' when tracked files have
    uncommitted changes), or 'unknown' outside git. Computed once per process."""
    return git_state(Path(__file__).resolve().parent)


def git_state(folder: Path) -> str:
    """`git_commit` of the repository holding `folder`."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=folder, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else ""
        if not commit:
            return "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=folder, timeout=10)
        return commit + "-dirty" if status.returncode or status.stdout.strip() else commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def source_hash() -> str:
    """12-hex hash of the library's source (src/prunelab/**/*.py), committed or not: identifies the code that
    made a result. Computed once per process (a few ms)."""
    return tree_hash(Path(__file__).resolve().parent)


def tree_hash(root: Path) -> str:
    """12-hex sha256 over every *.py under `root`: relative path and bytes, in sorted path order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def empty_record(**fields) -> dict:
    """A record with every metrics.json key (METRICS_KEYS) set to None, then `fields` (extra keys allowed)."""
    rec = dict.fromkeys(METRICS_KEYS)
    rec.update(fields)
    if rec["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {rec['stage']!r}")
    return rec
