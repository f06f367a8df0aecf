"""Whether a set of results comes from one clean source (metrics.json's git_commit and source_hash)."""

from __future__ import annotations

import logging
import math


def provenance_warnings(rows) -> list[str]:
    """Warnings when result rows (dicts with git_commit, source_hash) do not come from one clean source: several
    commits, several library source hashes, uncommitted changes, or no source hash recorded. Each is also logged."""
    def present(v):
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""

    rows = list(rows)
    commits = [str(r.get("git_commit")) for r in rows if present(r.get("git_commit"))]
    hashes = [str(r.get("source_hash")) for r in rows if present(r.get("source_hash"))]
    fix = "rerun the stale rules, e.g. `make rerun RULES=\"score prune_finetune\"` (README: Stale results)"
    warnings = []
    for what, values in (("commits", [c.removesuffix("-dirty") for c in commits]),
                         ("library source hashes", hashes)):
        counts = {v: values.count(v) for v in sorted(set(values))}
        if len(counts) > 1:
            listed = ", ".join(f"{v} ({n} rows)" for v, n in counts.items())
            warnings.append(f"rows come from {len(counts)} different {what}: {listed}; {fix}")
    dirty = sum(c.endswith("-dirty") for c in commits)
    if dirty:
        warnings.append(f"{dirty} of {len(rows)} rows were computed with uncommitted changes (git_commit ends in "
                        "-dirty): only their source_hash identifies the code")
    if len(hashes) < len(rows):
        warnings.append(f"{len(rows) - len(hashes)} of {len(rows)} rows record no source_hash (made by an older "
                        "version): they may be stale")
    for line in warnings:
        logging.getLogger("prunelab").warning("report: %s", line)
    return warnings
