"""Network pruning spaces: random subnetworks of a trained model at a fixed MACs budget, and their summary.

A subnetwork keeps `counts[g]` output units of each prunable group g (`prune.structured_groups`, residual
streams not pruned, the classifier's outputs never pruned). Sampling (`sample_counts`): per-group keep
fractions f_g ~ U(FRACTION_RANGE), counts c_g(s) = clip(round(s · f_g · units_g), 1, units_g), and a
bisection on the common scale s so that MACs(c) lands within ±`tol` (relative) of regime × dense MACs; if
the rounding steps miss the band, single-unit moves around the bisection point are tried, then the
fractions are drawn again. MACs of a count vector come from `prunelab.pruning.costs.CostModel` (layer MACs
scale with its kept output fraction × kept input fraction, the coupling read once from torch-pruning's
dependency graph).
`build_subnetwork` removes the units physically: `inherit` keeps each group's highest-L1 units with the
trained weights (checked against the masked dense model), `scratch` re-initialises the same shapes.
`summarize_space` turns the samples' metrics.json records into EDFs, correlations and comparisons.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from prunelab.models import architecture, build_model, classifier_name, init_weights, place, prunable_layers
from prunelab.models.graph import structured_groups
from prunelab.pruning.costs import CostModel
from prunelab.pruning.removal import check_equivalence, masked_dense_model, remove_units
from prunelab.pruning.selection import normalized
from prunelab.settings import round_half_up

FRACTION_RANGE = (0.1, 1.0)  # per-group keep fractions are drawn from U(lo, hi) before the common scaling
INITS = ("inherit", "scratch")


def sample_rng(space_seed: int, regime: float, sample: int) -> np.random.Generator:
    """The generator of one sample: a function of (space seed, regime with 2 decimals, sample index) only,
    so every baseline seed meets the same sampled architectures (paired design)."""
    return np.random.default_rng([int(space_seed), int(round(float(regime) * 100)), int(sample)])


class SpaceModel:
    """MACs of subnetworks of `model` (the dense model; its units define 100 %), one input of `in_shape`.

    groups: prunable groups [{"members", "units"}] in forward order (classifier excluded).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        self.in_shape = tuple(example_input.shape[1:])
        head = classifier_name(model)
        self.groups = [g for g in structured_groups(model, example_input, "inner") if head not in g["members"]]
        if not self.groups:
            raise ValueError(f"{type(model).__name__} has no prunable group besides the classifier")
        self.costs = CostModel(model, example_input, self.groups)
        self.dense_macs = self.costs.dense["macs"]

    def macs(self, counts) -> float:
        """MACs of the subnetwork keeping counts[i] units of group i (float; exact for groups=1 convs)."""
        return self.costs.cost("macs", counts)

    def min_macs(self) -> float:
        """MACs with one unit kept in every group: no regime below this is reachable."""
        return self.macs([1] * len(self.groups))

    def layer_counts(self, counts) -> dict[str, int]:
        """{member layer: kept output units} for every member of every group."""
        return {n: int(c) for g, c in zip(self.groups, counts) for n in g["members"]}


def _scaled(fractions: np.ndarray, units: np.ndarray, s: float) -> list[int]:
    return [min(max(round_half_up(v), 1), int(u)) for v, u in zip(s * fractions * units, units)]


def sample_counts(space: SpaceModel, regime: float, rng: np.random.Generator, tol: float = 0.02,
                  max_tries: int = 100) -> tuple[list[int], np.ndarray]:
    """(counts per group, the drawn fractions) of one subnetwork with |MACs / (regime · dense) − 1| ≤ tol.

    Raises ValueError when the regime is below the one-unit-per-group floor or no draw lands in the band.
    """
    if not 0.0 < regime <= 1.0:
        raise ValueError(f"regime (kept MACs fraction) must be in (0, 1], got {regime!r}")
    target = regime * space.dense_macs
    if space.min_macs() > target * (1 + tol):
        raise ValueError(f"regime {regime} keeps {target:.0f} MACs, below this model's floor of "
                         f"{space.min_macs():.0f} ({space.min_macs() / space.dense_macs:.3f} of dense)")
    units = np.array([g["units"] for g in space.groups])
    err = lambda c: abs(space.macs(c) / target - 1.0)  # noqa: E731
    for _ in range(max_tries):
        f = rng.uniform(*FRACTION_RANGE, size=len(units))
        lo, hi = 0.0, 1.0 / f.min()                      # MACs(lo) ≤ target < MACs(hi), or hi is all units
        if space.macs(_scaled(f, units, hi)) <= target:
            lo = hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if space.macs(_scaled(f, units, mid)) <= target:
                lo = mid
            else:
                hi = mid
        below, above = _scaled(f, units, lo), _scaled(f, units, hi)
        candidates = [below, above]
        for base in (below, above):
            for i in range(len(units)):
                for d in (-1, 1):
                    c = list(base)
                    c[i] = int(np.clip(c[i] + d, 1, units[i]))
                    candidates.append(c)
        best = min(candidates, key=err)                  # first minimum: deterministic
        if err(best) <= tol:
            return best, f
    raise ValueError(f"no sampled subnetwork within ±{tol:.0%} of {regime} × dense MACs after {max_tries} draws "
                     f"(channels too coarse for this tolerance?)")


def unit_scores(model: nn.Module, groups: list[dict]) -> list[torch.Tensor]:
    """Per group: mean over members of the L2-normalised L1 norms of each output unit's weights (|units|)."""
    layers = dict(prunable_layers(model))
    out = []
    for g in groups:
        s = [normalized(layers[n].weight.detach().abs().flatten(1).sum(1).double().cpu(), "l2") for n in g["members"]]
        out.append(torch.stack(s).mean(0))
    return out


def build_subnetwork(dense: nn.Module, arch: dict, space: SpaceModel, counts, example_input: torch.Tensor,
                     init: str = "inherit", seed: int = 0, tol: float = 1e-4):
    """Physical subnetwork of a COPY of `dense` keeping counts[i] units of group i → (model, new_arch, info).

    inherit: each group keeps its highest-L1 units (`unit_scores`, ties to the lower index) with the trained
    weights; the pruned logits are checked against the masked dense model (EquivalenceError otherwise).
    scratch: the same shapes, fresh zoo initialisation under `seed`. info: layer_kept {layer: kept fraction of
    output units, every Conv/Linear}, kept_units {layer: units}, removed {layer: [indices]}, max_logit_diff.
    """
    if init not in INITS:
        raise ValueError(f"space init must be one of {INITS}, got {init!r}")
    remove = {}
    for g, s, c in zip(space.groups, unit_scores(dense, space.groups), counts):
        if not 1 <= c <= g["units"]:
            raise ValueError(f"group {g['members']} keeps {c} of {g['units']} units; need 1..{g['units']}")
        drop = torch.sort(torch.argsort(s, descending=True, stable=True)[int(c):]).values
        for n in g["members"]:
            remove[n] = drop.clone()
    model = remove_units(copy.deepcopy(dense), remove, space.groups, example_input)
    diff = check_equivalence(model, masked_dense_model(dense, remove, example_input), example_input, tol)
    new_arch = architecture(model, arch)
    if init == "scratch":
        torch.manual_seed(seed)
        model = init_weights(build_model(new_arch))
        diff = None
    model = place(model, example_input.device)
    before = {n: m.weight.shape[0] for n, m in prunable_layers(dense)}
    after = {n: m.weight.shape[0] for n, m in prunable_layers(model)}
    info = {"layer_kept": {n: after[n] / before[n] for n in before}, "kept_units": after,
            "removed": {n: [int(i) for i in idx] for n, idx in remove.items()}, "max_logit_diff": diff,
            "init": init}
    return model, new_arch, info


# ------------------------------------------------------------------------------------------------ summary
def edf(values) -> dict:
    """Empirical distribution function: {"x": sorted values, "fraction": (k + 1) / n for the k-th}."""
    x = np.sort(np.asarray(values, dtype=float))
    return {"x": x.tolist(), "fraction": (np.arange(1, len(x) + 1) / len(x)).tolist()}


def correlations(x, y) -> dict:
    """Pearson r and Spearman ρ of x and y with two-sided p-values (scipy); None where undefined
    (fewer than 3 points or a constant input)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict.fromkeys(("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))
    p, s = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return {"pearson_r": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman_rho": float(s.statistic), "spearman_p": float(s.pvalue)}


SAMPLE_KEYS = ("sample", "top1_val", "top1_test", "params_total", "macs_effective", "macs_params_ratio")
STRUCT_KEYS = ("method", "ratio_requested", "top1_val", "top1_test", "params_total", "macs_effective", "epochs")


def error_of(rec: dict) -> float:
    """Top-1 test error in percent."""
    return 100.0 - float(rec["top1_test"])


def summarize_regime(samples: list[dict], structured: list[dict] = (), macs_tol: float = 0.05) -> dict:
    """Summary of one regime's sample records (metrics.json dicts of stage "space", one regime).

    error = 100 − top1_test. best: highest top1_val (validation selects; ties → lower test error, then lower
    sample index). best_decile: the ceil(n / 10) lowest-error samples and their MACs/params band.
    structured: the given fine-tuned structured records whose macs_effective is within ±macs_tol (relative)
    of regime × macs_dense, with the best of them by top1_val and the space best's top-1 gap to it.
    """
    if not samples:
        raise ValueError("summarize_regime needs at least one sample record")
    regime = float(samples[0]["space_regime"])
    if any(float(r["space_regime"]) != regime for r in samples):
        raise ValueError("summarize_regime: records from different regimes")
    rows = sorted(({k: r.get(k) for k in SAMPLE_KEYS} | {"error": error_of(r)} for r in samples),
                  key=lambda r: r["sample"])
    err = np.array([r["error"] for r in rows])
    ratio = np.array([r["macs_params_ratio"] for r in rows], dtype=float)
    best = min(rows, key=lambda r: (-r["top1_val"], r["error"], r["sample"]))
    k = max(1, math.ceil(len(rows) / 10))
    decile = sorted(rows, key=lambda r: (r["error"], r["sample"]))[:k]
    target = regime * float(samples[0]["macs_dense"])
    near = [{k2: r.get(k2) for k2 in STRUCT_KEYS} | {"error": error_of(r), "macs_params_ratio":
                                                     r["macs_effective"] / r["params_total"]}
            for r in structured if abs(r["macs_effective"] / target - 1.0) <= macs_tol]
    near.sort(key=lambda r: (r["method"], r["ratio_requested"]))
    s_best = min(near, key=lambda r: (-r["top1_val"], r["error"])) if near else None
    return {
        "space_regime": regime, "n": len(rows), "macs_target": target, "samples": rows,
        "edf": edf(err), "error_mean": float(err.mean()), "error_median": float(np.median(err)),
        "error_min": float(err.min()), "best": best, "correlation": correlations(ratio, err),
        "best_decile": {"n": k, "samples": [r["sample"] for r in decile],
                        "ratio_min": float(min(r["macs_params_ratio"] for r in decile)),
                        "ratio_max": float(max(r["macs_params_ratio"] for r in decile))},
        "structured": near, "structured_best": s_best,
        "best_minus_structured_top1": best["top1_test"] - s_best["top1_test"] if s_best else None,
    }


CSV_COLUMNS = ("space_regime", "n", "error_mean", "error_median", "error_min", "best_sample", "best_top1_val",
               "best_top1_test", "best_macs_params_ratio", "pearson_r", "pearson_p", "spearman_rho",
               "spearman_p", "decile_n", "decile_ratio_min", "decile_ratio_max", "n_structured",
               "structured_best_method", "structured_best_ratio", "structured_best_top1_test",
               "best_minus_structured_top1")


def csv_row(s: dict) -> dict:
    """One flat summary.csv row of a `summarize_regime` result."""
    sb = s["structured_best"] or {}
    return {"space_regime": s["space_regime"], "n": s["n"], "error_mean": s["error_mean"],
            "error_median": s["error_median"], "error_min": s["error_min"], "best_sample": s["best"]["sample"],
            "best_top1_val": s["best"]["top1_val"], "best_top1_test": s["best"]["top1_test"],
            "best_macs_params_ratio": s["best"]["macs_params_ratio"], **s["correlation"],
            "decile_n": s["best_decile"]["n"], "decile_ratio_min": s["best_decile"]["ratio_min"],
            "decile_ratio_max": s["best_decile"]["ratio_max"], "n_structured": len(s["structured"]),
            "structured_best_method": sb.get("method"), "structured_best_ratio": sb.get("ratio_requested"),
            "structured_best_top1_test": sb.get("top1_test"),
            "best_minus_structured_top1": s["best_minus_structured_top1"]}


def summarize_space(samples: list[dict], structured: list[dict] = (), macs_tol: float = 0.05) -> dict:
    """{"regimes": [summarize_regime per regime, ascending], "structured_selection": how matches are found}."""
    by = {}
    for r in samples:
        by.setdefault(float(r["space_regime"]), []).append(r)
    return {"regimes": [summarize_regime(by[k], structured, macs_tol) for k in sorted(by)],
            "structured_selection": f"fine-tuned structured models of the standard baseline with macs_effective "
                                    f"within ±{macs_tol:.0%} of regime × macs_dense; best by top1_val",
            "error": "100 - top1_test (%)", "best_sample": "highest top1_val (validation selects)"}
