"""Theoretical (MACs) vs measured (CPU latency) speedup of physically pruned CIFAR models.

Each model is pruned at 50 % of its prunable channels (ResNets: the blocks' inner convs) with magnitude scores
(L1 norm of each filter, computed here) by `prunelab.pruning.stage.prune_model`. Dense and pruned models are
timed in the inference forms every job times them in (`prunelab.measure.deploy.inference_model`): "eager" = BN folded
into the convs, channels-last on CPU; "compiled" = the same, compiled by TorchInductor with frozen weights
(the job setting `latency.compile: true`). Latency is the median of repeated timed forward passes (3x32x32,
batch 64, torch.inference_mode, 2 threads), dense and pruned runs interleaved so that load from other processes
hits both alike (the minimum, and the median of the pairwise ratios, are recorded too). Prints a table and
writes JSON (default results/bench/structured_speedup.json).

    python benchmarks/structured_speedup.py [--repeats 15] [--scope layerwise|global] [--round-to 16]
        [--forms eager compiled]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from prunelab.measure import count_macs, count_params
from prunelab.measure.deploy import inference_model, latency_form
from prunelab.models import build_model, prunable_layers
from prunelab.pruning.stage import prune_model

MODELS = [("vgg11", {}), ("vgg16", {}), ("resnet20", {"shortcut": "A"}), ("resnet56", {"shortcut": "B"})]
IN_SHAPE = [3, 32, 32]


def l1_scores(model) -> dict:
    """Structured magnitude scores: L1 norm of each output unit's filter (Li et al. 2017)."""
    return {"method": "magnitude", "config": {}, "layers": {
        n: {"unstructured": None, "structured": m.weight.detach().abs().flatten(1).sum(1)}
        for n, m in prunable_layers(model)}}


@torch.inference_mode()
def paired_latency(a, b, x, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """ms per forward of models a and b on x (all timed runs), timed alternately (a, b, a, b, ...)."""
    for _ in range(warmup):
        a(x), b(x)
    ta, tb = [], []
    for _ in range(repeats):
        for model, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return ta, tb


def timed_pair(dense, pruned, example, compiled: bool, args) -> dict:
    """Latency of dense vs pruned in one inference form (paired runs), as result keys."""
    fd = inference_model(dense, "cpu", compiled, check_input=example)
    fp = inference_model(pruned, "cpu", compiled, check_input=example)
    x = torch.randn(args.batch, *IN_SHAPE)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fd(x), fp(x)  # compiles, when compiled: not timed
    setup_s = time.perf_counter() - t0
    td, tp = paired_latency(fd, fp, x, args.warmup, args.repeats)
    lat_d, lat_p = statistics.median(td), statistics.median(tp)
    return {"form": latency_form(compiled), "first_call_s": setup_s,
            "latency_ms_dense": lat_d, "latency_ms_pruned": lat_p, "speedup_measured": lat_d / lat_p,
            # the minimum is the run least disturbed by other processes on a shared CPU
            "latency_ms_dense_min": min(td), "latency_ms_pruned_min": min(tp),
            "speedup_measured_min": min(td) / min(tp),
            # each dense run over the pruned run timed right after it: drift in machine load cancels pairwise
            "speedup_measured_paired": statistics.median(a / b for a, b in zip(td, tp))}


def bench(name: str, options: dict, args) -> dict:
    arch = {"name": name, "options": options, "in_shape": IN_SHAPE, "num_classes": 10}
    torch.manual_seed(0)
    dense = build_model(arch).eval()
    example = torch.randn(2, *IN_SHAPE)
    pruned, _, _, info = prune_model(dense, arch, l1_scores(dense), "structured", args.ratio,
                                     prune={"scope": args.scope, "round_to": args.round_to}, example_input=example)
    pruned.eval()
    macs_d, macs_p = count_macs(dense, IN_SHAPE), count_macs(pruned, IN_SHAPE)
    theo = macs_d / macs_p
    forms = {}
    for form in args.forms:
        r = timed_pair(dense, pruned, example, form == "compiled", args)
        r["measured_over_theoretical"] = r["speedup_measured"] / theo
        r["paired_over_theoretical"] = r["speedup_measured_paired"] / theo
        forms[form] = r
    return {"model": name, "options": options, "ratio_requested": args.ratio,
            "ratio_achieved": info["ratio_achieved"], "scope": args.scope, "round_to": args.round_to, "residual": "inner",
            "params_dense": count_params(dense), "params_pruned": count_params(pruned),
            "macs_dense": macs_d, "macs_pruned": macs_p, "speedup_theoretical": theo,
            "max_logit_diff": info["max_logit_diff"], "forms": forms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--scope", choices=["global", "layerwise"], default="layerwise",
                   help="layerwise (default): 50%% of every prunable layer; global ranks L2-normalised scores, "
                        "which on untrained weights puts nearly all removal in the widest layers")
    p.add_argument("--round-to", type=int, default=1,
                   help="kept channels per layer rounded up to a multiple (prune.round_to); 16 = one AVX-512 vector "
                        "of floats, the block oneDNN computes output channels in")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--models", nargs="*", default=[m for m, _ in MODELS])
    p.add_argument("--forms", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"],
                   help="inference forms to time (compiled needs a C++ compiler; ~5-15 s to compile per model)")
    p.add_argument("--out", default="results/bench/structured_speedup.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(n, o, args) for n, o in MODELS if n in args.models]
    print(f"{'model':<14}{'form':<10}{'MACs dense':>12}{'pruned':>11}{'theo':>6}{'ms dense':>9}{'pruned':>8}"
          f"{'meas':>6}{'meas/theo':>10}{'min-based':>10}{'paired':>7}")
    for r in rows:
        label = r["model"] + (f"-{r['options']['shortcut']}" if r["options"] else "")
        for form, f in r["forms"].items():
            print(f"{label:<14}{form:<10}{r['macs_dense']:>12,}{r['macs_pruned']:>11,}{r['speedup_theoretical']:>6.2f}"
                  f"{f['latency_ms_dense']:>9.1f}{f['latency_ms_pruned']:>8.1f}{f['speedup_measured']:>6.2f}"
                  f"{f['measured_over_theoretical']:>10.2f}"
                  f"{f['speedup_measured_min'] / r['speedup_theoretical']:>10.2f}{f['paired_over_theoretical']:>7.2f}")
    # Outside the workflow: this CPU's own kernels, not the AVX2 caps every job runs with (portable_numerics).
    print(f"kernels: {torch.backends.cpu.get_cpu_capability()} (this CPU's own; workflow jobs cap them at AVX2 unless "
          "portable_numerics is off: benchmarks/portable_numerics.py compares the two)")
    env = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": args.threads, "batch": args.batch, "in_shape": IN_SHAPE,
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "load_avg": os.getloadavg(), "bn_folded": True, "forms": args.forms, "warmup": args.warmup, "repeats": args.repeats}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
