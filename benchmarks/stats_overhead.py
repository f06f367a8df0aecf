"""Cost of the statistics pass relative to a plain evaluation pass over the same samples.

Per model (default MLP [128, 64] on 1×8×8, default CNN on 1×8×8, ResNet-20 on 3×32×32; random tensors; placed
as every job places them, `prunelab.models.place`) and per method group (screening alone; forward-only: screening
+ contribution, with kappa ≠ 0 and = 0; taylor; frs), the median wall time of
`collect_statistics` over that of `model(x)` batches under no_grad. Targets: forward-only ≤ 2×, taylor and
frs ≤ 4×. Writes JSON (default results/bench/stats_overhead.json).

    python benchmarks/stats_overhead.py [--threads 2] [--repeats 5] [--device cpu] [--groups frs taylor]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from prunelab.models import build_model, place
from prunelab.stats import collect_statistics, required_statistics

MODELS = {  # name: (arch, samples, batch size)
    "mlp": ({"name": "mlp", "options": {"hidden": [128, 64]}, "in_shape": [1, 8, 8], "num_classes": 10}, 2048, 256),
    "cnn": ({"name": "cnn", "options": {}, "in_shape": [1, 8, 8], "num_classes": 10}, 2048, 256),
    "resnet20": ({"name": "resnet20", "options": {}, "in_shape": [3, 32, 32], "num_classes": 10}, 512, 128),
}
TARGETS = {"screening": 2.0, "forward": 2.0, "forward_kappa0": 2.0, "taylor": 4.0, "frs": 4.0}


def groups() -> dict[str, set[str] | None]:
    """Statistics per method group; None where the group cannot run here (with the reason printed)."""
    out = {"screening": required_statistics(["screening"]),
           "forward": required_statistics(["screening", "contribution"]),
           "forward_kappa0": required_statistics(["screening", "contribution"], {"contribution": {"kappa": 0}}),
           "taylor": required_statistics(["taylor"])}
    if (Path(__file__).resolve().parents[1] / "src/prunelab/lrp.py").exists():
        out["frs"] = {"relevance"}
    else:
        print("note: src/prunelab/lrp.py is not there yet; frs skipped")
        out["frs"] = None
    return out


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, repeats: int, device: torch.device, scale: float, only=None) -> dict:
    arch, n, batch = MODELS[name]
    n = max(batch, int(n * scale))
    torch.manual_seed(0)
    model = place(build_model(arch), device).eval()   # the layout every job uses (channels-last on CPU)
    x = torch.randn(n, *arch["in_shape"], device=device)
    y = torch.arange(n, device=device) % arch["num_classes"]

    def evaluate():
        with torch.no_grad():
            for i in range(0, n, batch):
                model(x[i:i + batch])

    eval_s = timed(evaluate, repeats, device)
    result = {"samples": n, "batch_size": batch, "eval_s": eval_s, "groups": {}}
    for group, needs in groups().items():
        if only and group not in only:
            continue
        if needs is None:
            result["groups"][group] = {"skipped": "lrp.py missing"}
            continue
        sec = timed(lambda: collect_statistics(model, x, y, needs, arch["num_classes"], batch, device),
                    repeats, device)
        result["groups"][group] = {"needs": sorted(needs), "seconds": sec, "ratio": sec / eval_s,
                                   "target": TARGETS[group], "meets_target": sec / eval_s <= TARGETS[group]}
        print(f"{name:9s} {group:15s} {sec:8.4f} s  eval {eval_s:8.4f} s  ratio {sec / eval_s:5.2f}"
              f"  (target ≤ {TARGETS[group]:.0f}×)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default="results/bench/stats_overhead.json")
    parser.add_argument("--groups", nargs="+", default=None, choices=list(TARGETS),
                        help="method groups to run (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
              "models": {name: bench_model(name, args.repeats, device, args.scale, args.groups)
                         for name in args.models}}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
