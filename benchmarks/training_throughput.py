"""Training throughput of the real training step on CIFAR-shaped data, and the augmentation's share of it.

For ResNet-20, ResNet-56 and VGG-11 (3×32×32, 10 classes) on the CPU and, when present, CUDA: images/s of the
step `prunelab.training.train_model` runs for every batch — index the uint8 train tensor on the device, `normalize`,
`augment_batch` (random crop, pad 4, + horizontal flip, as for CIFAR), forward, cross-entropy, backward, the
project's SGD step (momentum 0.9, weight decay 5e-4), and the two host reads of loss and accuracy the loop
does per batch. Data: random uint8 tensors of the real shape, already on the device (as train_model puts them).
Seeded like a training job (`seed_everything`: deterministic cuDNN, no autotuning).

img/s is from the median step time ("best": the fastest step, less sensitive to other processes on a shared
machine). The augmentation share is the median time of `augment_batch` alone on the same batches divided by the median
step time (target ≤ 10 %); `normalize` + `augment_batch` together is printed too.

    python benchmarks/training_throughput.py [--threads 2] [--batch-size 128] [--cpu-steps 3] [--cuda-steps 50]
                                             [--models resnet20,resnet56,vgg11] [--devices cpu,cuda]

Writes JSON (default results/bench/training_throughput.json). The CPU run is short on purpose (a few steps);
the CUDA figures are the ones to plan GPU time with (README, "Paper-scale experiments").
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
from torch import nn

from prunelab.data import augment_batch, normalize
from prunelab.models import build_model, place
from prunelab.training import make_optimizer, seed_everything

MODELS = ("resnet20", "resnet56", "vgg11")
CIFAR_TRAIN = 45_000  # images per epoch with val_fraction 0.1
AUG = {"crop_padding": 4, "hflip": True}  # prunelab.data.DEFAULT_AUGMENT["cifar10"]
OPT = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
TARGET_AUG_SHARE = 0.10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, device: torch.device, batch: int, warmup: int, steps: int) -> dict:
    """Time `steps` training steps (after `warmup`) and the augmentation alone on the same batches."""
    seed_everything(0)
    arch = {"name": name, "options": {}, "in_shape": [3, 32, 32], "num_classes": 10}
    model = place(build_model(arch), device).train()
    optimizer = make_optimizer(model, OPT)
    n = batch * (warmup + steps)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x_train = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device)
    y_train = torch.randint(0, 10, (n,), generator=gen).to(device)
    mean = torch.tensor([0.4914, 0.4822, 0.4465], device=device)
    std = torch.tensor([0.2470, 0.2435, 0.2616], device=device)
    order = torch.randperm(n, generator=gen).to(device)

    def step(i: int) -> tuple[float, int]:  # the body of train_model's batch loop
        idx = order[i * batch:(i + 1) * batch]
        xb = normalize(x_train[idx], mean, std)
        xb = augment_batch(xb, AUG["crop_padding"], AUG["hflip"], gen)
        yb = y_train[idx]
        logits = model(xb)
        loss = nn.functional.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach()) * len(idx), int((logits.detach().argmax(1) == yb).sum())

    for i in range(warmup):
        step(i)
    sync(device)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        sync(device)  # step() already waits on the loss read; this also covers the accuracy count
        times.append(time.perf_counter() - t0)

    def timed_calls(fn, reps: int) -> float:
        fn(0)
        sync(device)
        out = []
        for r in range(reps):
            t0 = time.perf_counter()
            fn(r % (warmup + steps))
            sync(device)
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    def aug_only(i: int):
        xb = normalize(x_train[order[i * batch:(i + 1) * batch]], mean, std)
        sync(device)
        t0 = time.perf_counter()
        augment_batch(xb, AUG["crop_padding"], AUG["hflip"], gen)
        sync(device)
        return time.perf_counter() - t0

    def prep(i: int):
        augment_batch(normalize(x_train[order[i * batch:(i + 1) * batch]], mean, std), AUG["crop_padding"],
                      AUG["hflip"], gen)

    reps = 20 if device.type == "cpu" else 100
    aug_s = statistics.median(aug_only(r % (warmup + steps)) for r in range(reps))
    prep_s = timed_calls(prep, reps)
    step_s = statistics.median(times)
    return {"device": device.type, "model": name, "batch_size": batch, "steps": steps, "warmup": warmup,
            "step_ms": 1e3 * step_s, "step_ms_all": [1e3 * t for t in times], "images_per_s": batch / step_s,
            "images_per_s_best": batch / min(times),
            "augment_ms": 1e3 * aug_s, "augment_share": aug_s / step_s,
            "normalize_augment_ms": 1e3 * prep_s, "normalize_augment_share": prep_s / step_s,
            "cifar_epoch_s": CIFAR_TRAIN / (batch / step_s)}


def device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {threads} threads"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--cpu-warmup", type=int, default=2, help="the first CPU steps of a process are slow (oneDNN)")
    ap.add_argument("--cuda-steps", type=int, default=50)
    ap.add_argument("--cuda-warmup", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--devices", default="cpu,cuda", help="cuda is skipped when torch sees none")
    ap.add_argument("--out", default="results/bench/training_throughput.json")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    devices = []
    for d in args.devices.split(","):
        if d == "cuda" and not torch.cuda.is_available():
            print("cuda: not available here, skipped")
            continue
        devices.append(torch.device(d))
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch_size}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    results = []
    header = (f"{'device':<6} {'model':<9} {'img/s':>8} {'best':>6} {'step ms':>9} {'aug ms':>8} {'aug %':>6} "
              f"{'norm+aug %':>10} {'CIFAR epoch':>12}")
    print(header)
    for device in devices:
        cpu = device.type == "cpu"
        for name in args.models.split(","):
            r = bench(name, device, args.batch_size, args.cpu_warmup if cpu else args.cuda_warmup,
                      args.cpu_steps if cpu else args.cuda_steps)
            r["device_name"] = device_name(device, args.threads)
            results.append(r)
            print(f"{r['device']:<6} {name:<9} {r['images_per_s']:>8.0f} {r['images_per_s_best']:>6.0f} "
                  f"{r['step_ms']:>9.1f} {r['augment_ms']:>8.2f} {100 * r['augment_share']:>5.1f}% "
                  f"{100 * r['normalize_augment_share']:>9.1f}% {r['cifar_epoch_s']:>10.0f} s", flush=True)
    worst = max((r["augment_share"] for r in results), default=0.0)
    ok = worst <= TARGET_AUG_SHARE
    print(f"augmentation share of the step: at most {100 * worst:.1f}% (target <= {100 * TARGET_AUG_SHARE:.0f}%): "
          f"{'ok' if ok else 'OVER TARGET'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "training_throughput", "torch": torch.__version__,
                               "threads": args.threads, "load_average": load, "cpu_count": os.cpu_count(),
                               "target_augment_share": TARGET_AUG_SHARE, "augment_share_max": worst,
                               "augment_ok": ok, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
