"""What portable numerics costs: the FNN's and LeNet-5's training step and latency with the kernels capped at AVX2
(`portable_numerics: true`, the default) and with this CPU's own kernels.

Each measurement runs in a fresh process (the caps are read when torch loads): `prunelab.numerics.pin_kernels`
before torch in one, nothing in the other, alternating for --rounds rounds so that load on a shared machine hits
both alike. A training step is what a job does per batch on the CPU (channels-last placement, forward,
cross-entropy, backward, the project's SGD step) at batch 128 on random 1×28×28 inputs; latency is the deployed
form's median forward time at batch 1 and 64 (`prunelab.measure.latency.latency_ms`). One thread, as the jobs of
the CPU configs. Prints each figure's median over rounds (the fastest training step too: least disturbed by other
processes) and the pinned/native ratio.

    python benchmarks/portable_numerics.py [--rounds 3] [--fnn-steps 200] [--lenet-steps 30]

Writes JSON (default results/bench/portable_numerics.json). The workflow's latency figures are timed with the
pinned kernels too (every job is pinned); this script is how to see what that changes on a given CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARCHS = {"fnn": {"name": "mlp", "options": {"hidden": [300, 100]}},
         "lenet5": {"name": "lenet5", "options": {"batchnorm": True}}}


def measure(fnn_steps: int, lenet_steps: int) -> dict:
    """In this process (caps already set or not): {arch: {step_ms, b1_ms, b64_ms}} and the capability dispatched."""
    import torch
    from torch import nn

    from prunelab.measure.latency import latency_ms
    from prunelab.models import build_model, place
    from prunelab.training import make_optimizer, seed_everything

    torch.set_num_threads(1)
    seed_everything(0)
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for arch, steps in (("fnn", fnn_steps), ("lenet5", lenet_steps)):
        model = place(build_model({**ARCHS[arch], "in_shape": [1, 28, 28], "num_classes": 10}), "cpu")
        opt = make_optimizer(model, {"lr": 0.01})
        x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
        times = []
        for _ in range(steps + 3):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        lat = latency_ms(model.eval(), [1, 28, 28], "cpu", {"warmup": 5, "repeats": 50})
        out[arch] = {"step_ms": 1000 * statistics.median(times[3:]), "best_step_ms": 1000 * min(times[3:]),
                     "b1_ms": lat["b1"], "b64_ms": lat["b64"]}
    return out


def child(pinned: bool, args) -> dict:
    """`measure` in a fresh process whose environment has no caps, pinned or not before torch loads."""
    from prunelab.numerics import PORTABLE_ENV

    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    cmd = [sys.executable, __file__, "--child", "pinned" if pinned else "native", "--fnn-steps", str(args.fnn_steps),
           "--lenet-steps", str(args.lenet_steps)]
    return json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fnn-steps", type=int, default=200)
    ap.add_argument("--lenet-steps", type=int, default=30)
    ap.add_argument("--out", default="results/bench/portable_numerics.json")
    ap.add_argument("--child", choices=["pinned", "native"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "pinned":
            from prunelab.numerics import pin_kernels

            pin_kernels(True)
        print(json.dumps(measure(args.fnn_steps, args.lenet_steps)))
        return
    runs = {"pinned": [], "native": []}
    for i in range(args.rounds):
        for mode in (("pinned", "native") if i % 2 == 0 else ("native", "pinned")):
            runs[mode].append(child(mode == "pinned", args))
    from prunelab.numerics import cpu_model

    summary = {"cpu_model": cpu_model(), "rounds": args.rounds,
               "capability": {m: runs[m][0]["cpu_capability"] for m in runs}}
    print(f"{summary['cpu_model']}: pinned dispatches {summary['capability']['pinned']}, native "
          f"{summary['capability']['native']}; medians of {args.rounds} rounds (best_step: the fastest step of "
          "all rounds), 1 thread")
    print(f"{'arch':8} {'figure':10} {'pinned ms':>10} {'native ms':>10} {'pinned/native':>14}")
    for arch in ARCHS:
        for fig in ("step_ms", "best_step_ms", "b1_ms", "b64_ms"):
            pick = min if fig.startswith("best") else statistics.median
            p, n = (pick(r[arch][fig] for r in runs[m]) for m in ("pinned", "native"))
            summary.setdefault(arch, {})[fig] = {"pinned": p, "native": n, "ratio": p / n}
            print(f"{arch:8} {fig[:-3]:10} {p:10.3f} {n:10.3f} {p / n:14.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
