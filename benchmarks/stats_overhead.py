"""Cost of the statistics pass relative to a plain evaluation pass over the same samples.

Per model (default MLP [128, 64] on 1×8×8, default CNN on 1×8×8, ResNet-20 on 3×32×32; random tensors; placed
as every job places them, `prunelab.models.place`) and per method group (screening alone; forward-only: screening
+ contribution, with kappa ≠ 0 and = 0; taylor; frs), the median wall time of
`collect_statistics` over that of `model(x)` batches under no_grad. Targets: forward-only ≤ 2×, taylor and
frs ≤ 4×. Writes JSON (default results/bench/stats_overhead.json).

Timing: every group runs once before anything is timed (the allocator's heap grows to its steady size: an
evaluation timed on a cold heap takes page faults that one timed after a statistics pass does not, which
flattered earlier ratios 1.5–2×); then each group is timed in pairs with the evaluation pass (eval, stats, eval,
stats, ...) and the ratio is the median stats time over the median eval time of its own pairs.

Arithmetic floor: each group needs a number of layer-sized products per Conv2d/Linear (the eval pass: 1):
screening 1, contribution with kappa = 0 3 (the forward, D = |a|·|w| and the correlation of |a| with 1/D),
kappa ≠ 0 4 (one more correlation for Σ r²), frs 4 (z⁺ and z⁻, and one transposed product each way). `floor` is
the measured time of an evaluation pass in which every Conv2d/Linear repeats its own product that many times
(same shapes and layout), over the plain evaluation: no implementation of the statistics can be cheaper than
that, whatever the elementwise work. For taylor the floor is the gradient itself: a forward and one
`torch.autograd.grad` of the cross-entropy w.r.t. every prunable weight (backward through BN, ReLU and pools
included).

The statistics of wanda, hrank and obd are judged against their own floor (target: ratio ≤ 1.2 × floor):
wanda (input_sqnorm) an evaluation pass that also reduces each Conv2d/Linear input to Σ a² per unit (one read);
hrank (feature_rank) one that also takes torch.linalg.matrix_rank of every unit activation (the batched SVDs
are the cost); obd (fisher) the gradient floor above: exact per-sample squared gradients need the multiply-adds
of the weight gradient, kept per sample.

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

from prunelab.methods import required_statistics
from prunelab.models import build_model, place
from prunelab.stats import collect_statistics

MODELS = {  # name: (arch, samples, batch size)
    "mlp": ({"name": "mlp", "options": {"hidden": [128, 64]}, "in_shape": [1, 8, 8], "num_classes": 10}, 2048, 256),
    "cnn": ({"name": "cnn", "options": {}, "in_shape": [1, 8, 8], "num_classes": 10}, 2048, 256),
    "resnet20": ({"name": "resnet20", "options": {}, "in_shape": [3, 32, 32], "num_classes": 10}, 512, 128),
}
TARGETS = {"screening": 2.0, "forward": 2.0, "forward_kappa0": 2.0, "taylor": 4.0, "frs": 4.0,
           "wanda": None, "hrank": None, "obd": None}                  # None: judged by FLOOR_TARGET only
PRODUCTS = {"screening": 1, "forward": 4, "forward_kappa0": 3, "taylor": "grad", "frs": 4,   # per layer; eval = 1
            "wanda": "sqnorm", "hrank": "rank", "obd": "grad"}
FLOOR_TARGET = 1.2                                                     # wanda, hrank, obd: ratio ≤ 1.2 × floor


def groups() -> dict[str, set[str]]:
    """Statistics per method group."""
    return {"screening": required_statistics(["screening"]),
            "forward": required_statistics(["screening", "contribution"]),
            "forward_kappa0": required_statistics(["screening", "contribution"], {"contribution": {"kappa": 0}}),
            "taylor": required_statistics(["taylor"]), "frs": {"relevance"},
            "wanda": required_statistics(["wanda"]), "hrank": required_statistics(["hrank"]),
            "obd": required_statistics(["obd"])}


def paired(fa, fb, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of fa() and of fb(), timed alternately (a, b, a, b, ...) after one warm-up of each."""
    fa(), fb()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, out in ((fa, times[0]), (fb, times[1])):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def repeat_products(model: torch.nn.Module, k: int) -> list:
    """Forward hooks making every Conv2d / Linear compute its own product k - 1 more times (the floor)."""
    def hook(m, inp, out):
        for _ in range(k - 1):
            if isinstance(m, torch.nn.Conv2d):
                m._conv_forward(inp[0], m.weight, m.bias)
            else:
                torch.nn.functional.linear(inp[0], m.weight, m.bias)

    return [m.register_forward_hook(hook) for m in model.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def floor_hooks(model: torch.nn.Module, kind: str, x_probe: torch.Tensor) -> list:
    """Forward hooks adding the unavoidable work of a statistic to an evaluation pass: "sqnorm" Σ a² of every
    Conv2d/Linear input per unit; "rank" the matrix rank of every unit activation's maps (1×1: nonzero)."""
    from prunelab.models import prunable_layers
    from prunelab.stats import activation_sources

    if kind == "sqnorm":
        def sq(m, inp, out):
            a = inp[0]
            a.square().sum(0 if a.dim() == 2 else (0, 2, 3))

        return [m.register_forward_hook(sq) for m in model.modules()
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    sources = activation_sources(model, x_probe, prunable_layers(model))
    wanted: dict[str, set[int]] = {}
    for mod, idx in sources.values():
        wanted.setdefault(mod, set()).add(idx)
    calls: dict[str, int] = {}

    def rank(name, out):
        i = calls.get(name, 0)
        calls[name] = i + 1
        if i in wanted[name]:
            (out != 0).sum(0) if out.dim() == 2 else torch.linalg.matrix_rank(out).sum(0)

    handles = [model.get_submodule(n).register_forward_hook(lambda m, inp, out, n=n: rank(n, out)) for n in wanted]
    handles.append(model.register_forward_pre_hook(lambda *a: calls.clear()))
    return handles


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

    def gradient():
        weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        for i in range(0, n, batch):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch], reduction="sum")
            torch.autograd.grad(loss, weights)

    chosen = {g: needs for g, needs in groups().items() if not only or g in only}
    for needs in chosen.values():               # heap warm-up: see the module docstring
        collect_statistics(model, x, y, needs, arch["num_classes"], batch, device)
    result = {"samples": n, "batch_size": batch, "groups": {}, "floor": {}}
    eval_s, sec = paired(evaluate, gradient, repeats, device)
    result["floor"]["grad"] = sec / eval_s
    kinds = {PRODUCTS[g] for g in chosen}
    for k in sorted((k for k in kinds if k not in (1, "grad")), key=str):
        handles = []
        try:
            def with_products():
                handles.extend(repeat_products(model, k) if isinstance(k, int) else floor_hooks(model, k, x[:2]))
                evaluate()
                while handles:
                    handles.pop().remove()
            eval_s, sec = paired(evaluate, with_products, repeats, device)
        finally:
            for h in handles:
                h.remove()
        result["floor"][k] = sec / eval_s
    for group, needs in groups().items():
        if only and group not in only:
            continue
        eval_s, sec = paired(evaluate, lambda: collect_statistics(model, x, y, needs, arch["num_classes"], batch,
                                                                  device), repeats, device)
        floor, target, ratio = result["floor"].get(PRODUCTS[group], 1.0), TARGETS[group], sec / eval_s
        meets = ratio <= target if target is not None else ratio <= FLOOR_TARGET * floor
        result["groups"][group] = {"needs": sorted(needs), "seconds": sec, "eval_s": eval_s, "ratio": ratio,
                                   "floor": floor, "products": PRODUCTS[group], "target": target,
                                   "floor_ratio": ratio / floor, "meets_target": meets}
        what = " products" if isinstance(PRODUCTS[group], int) else ""
        goal = f"target ≤ {target:.0f}×" if target is not None else f"target ≤ {FLOOR_TARGET}× floor"
        print(f"{name:9s} {group:15s} {sec:8.4f} s  eval {eval_s:8.4f} s  ratio {ratio:5.2f}  floor {floor:5.2f} "
              f"({PRODUCTS[group]}{what})  ratio/floor {ratio / floor:5.2f}  ({goal})", flush=True)
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
