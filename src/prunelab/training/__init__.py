"""Training loop shared by baselines, fine-tuning, scratch and gradual runs.

SGD with momentum and weight decay, a multistep or cosine schedule, batched on-device augmentation, validation
every epoch (the validation split selects the epoch; the test split is never read here).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from prunelab.data import augment_batch, normalize
from prunelab.measure import evaluate
from prunelab.models import architecture_for, build_model, place
from prunelab.settings import TrainSettings
from prunelab.training.regularizers import regularizer_loss

log = logging.getLogger("prunelab.training")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; deterministic kernels on CPU (and cuDNN where it can)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass
class TrainResult:
    """What a training run returns: per-epoch history and the selected (best-val) epoch."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_top1_val: float = float("nan")
    wall_s: float = 0.0
    steps: int = 0                                       # optimiser steps taken
    snapshots: dict = field(default_factory=dict)        # epoch -> Snapshot (train_model's snapshot_epochs)


@dataclass
class Snapshot:
    """The model train_model selects among the epochs up to one (a fine-tuning budget): its epoch, validation top-1
    and weights (state dict on CPU)."""

    best_epoch: int
    best_top1_val: float
    state: dict


class SGD:
    """SGD with momentum, L2 weight decay and optional Nesterov: the update of `torch.optim.SGD` (dampening 0).

    Written out because every `torch.optim` optimiser imports torch._dynamo on first use (seconds per process,
    paid by every short workflow job); tests check it against `torch.optim.SGD` step for step.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=self.weight_decay) if self.weight_decay else p.grad.clone()
            if self.momentum:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = d.clone()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = d.add(buf, alpha=self.momentum) if self.nesterov else buf
            p.add_(d, alpha=-lr)

    def state_dict(self) -> dict:
        """The momentum buffers (cloned; None for a parameter not stepped yet): what a resumed run needs."""
        return {"buffers": [None if b is None else b.detach().clone() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        """Put back buffers from `state_dict` (onto each parameter's device)."""
        buffers = state["buffers"]
        if len(buffers) != len(self.params):
            raise ValueError(f"optimizer state has {len(buffers)} momentum buffers for {len(self.params)} parameters")
        self.buffers = [None if b is None else b.to(p.device) for b, p in zip(buffers, self.params)]


def make_optimizer(model: nn.Module, cfg: TrainSettings | dict) -> SGD:
    """SGD over all trainable parameters (weight decay on all, as in the CIFAR ResNet recipes)."""
    cfg = TrainSettings.of(cfg)
    return SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
               nesterov=cfg.nesterov)


def lr_at(epoch: int, cfg: TrainSettings | dict) -> float:
    """Learning rate for a 0-based epoch: 'cosine' to 0 over cfg.epochs, 'multistep' ×gamma at each
    milestone (milestones are epochs; values in (0, 1) are fractions of the run), or 'constant'."""
    cfg = TrainSettings.of(cfg)
    base, epochs, kind = cfg.lr, cfg.epochs, cfg.schedule
    if kind == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if kind == "multistep":
        marks = [m * epochs if 0 < m < 1 else m for m in cfg.milestones]
        return base * cfg.gamma ** sum(epoch >= m for m in marks)
    if kind == "constant":
        return base
    raise ValueError(f"train.schedule: expected 'cosine', 'multistep' or 'constant', got {kind!r}")


def train_model(model: nn.Module, data: dict, cfg: TrainSettings | dict, device: torch.device, seed: int,
                after_step: Callable[[], None] | None = None,
                extra_loss: Callable[[], torch.Tensor] | None = None,
                before_epoch: Callable[[int, nn.Module], None] | None = None,
                on_epoch: Callable[[dict], None] | None = None, snapshot_epochs=(),
                max_steps: int | None = None, resume=None) -> TrainResult:
    """Train `model` in place on data['train'], validating on data['val'] every epoch.

    data: a prepared dataset (uint8 images, see prunelab.data). cfg: a `TrainSettings` (or a dict completed
    with the schema's `train` defaults); steps_per_epoch None: the whole train split each epoch, k: k batches
    of a fresh seeded permutation.
    after_step: called after each optimiser step (e.g. re-apply pruning masks). extra_loss: a scalar added to
    the cross-entropy (e.g. a pruning-aware regulariser, already scaled). before_epoch(epoch, model): called
    at the start of each epoch (gradual pruning). on_epoch(record): per-epoch record {epoch, lr, loss_train,
    top1_train, top1_val, loss_val}. With select='best_val' the model ends with the best-validation weights.
    snapshot_epochs: 1-based epochs after which the model selected so far (best on validation up to then, or the
    current one with select='last') is kept in result.snapshots (fine-tuning budgets read from one run).
    max_steps: stop after this many optimiser steps (the last epoch may be cut short; its validation still runs).
    resume: a `prunelab.training.resume.ResumeState`: the run continues after the epoch it saved (if any) and
    hands it every finished epoch's state.
    """
    cfg = TrainSettings.of(cfg)
    seed_everything(seed)
    place(model, device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mean, std = data["mean"].to(device), data["std"].to(device)
    x_train = data["train"]["x"].to(device)
    y_train = data["train"]["y"].to(device)
    x_val = normalize(data["val"]["x"].to(device), mean, std)
    y_val = data["val"]["y"].to(device)
    aug = data.get("augment", {}) if cfg.augment else {}
    optimizer = make_optimizer(model, cfg)
    epochs, bs = cfg.epochs, cfg.batch_size
    result = TrainResult()
    best_state, best_val = None, -1.0
    t0 = time.perf_counter()
    first = 0
    saved = resume.restore(model, optimizer, gen, result) if resume is not None else None
    if saved is not None:  # a rerun of a stopped job continues after the last epoch its resume state holds
        first, best_state, best_val, done_s = saved
        t0 -= done_s
        result.snapshots = {e: Snapshot(**s) for e, s in result.snapshots.items()}
    for epoch in range(first, epochs):
        if max_steps is not None and result.steps >= max_steps:
            break
        if before_epoch is not None:
            before_epoch(epoch, model)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        model.train()
        order = torch.randperm(len(x_train), generator=gen).to(device)
        if cfg.steps_per_epoch:  # a seeded random subset of the split each epoch
            order = order[: cfg.steps_per_epoch * bs]
        loss_sum, correct, seen = 0.0, 0, 0
        if max_steps is not None:
            order = order[: (max_steps - result.steps) * bs]
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            xb = normalize(x_train[idx], mean, std)
            if aug.get("crop_padding", 0) or aug.get("hflip", False):
                xb = augment_batch(xb, aug.get("crop_padding", 0), aug.get("hflip", False), gen)
            yb = y_train[idx]
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            if extra_loss is not None:
                loss = loss + extra_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.steps += 1
            if after_step is not None:
                after_step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(idx)
        val = evaluate(model, x_val, y_val, cfg.eval_batch_size)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "loss_train": loss_sum / seen,
                  "top1_train": 100.0 * correct / seen, "top1_val": val["top1"], "loss_val": val["loss"]}
        result.history.append(record)
        log_epoch(record, epochs, time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(record)
        if val["top1"] > best_val:
            best_val, result.best_epoch = val["top1"], epoch + 1
            if cfg.select == "best_val":
                best_state = copy.deepcopy(model.state_dict())
        if epoch + 1 in snapshot_epochs:
            chosen = (result.best_epoch, best_val, best_state) if cfg.select == "best_val" else \
                (epoch + 1, val["top1"], model.state_dict())
            result.snapshots[epoch + 1] = Snapshot(chosen[0], chosen[1],
                                                   {k: v.detach().to("cpu", copy=True) for k, v in chosen[2].items()})
        if resume is not None:
            resume.epoch_end(epoch + 1, model, optimizer, gen, result, best_state, best_val, time.perf_counter() - t0)
    if best_state is not None and cfg.select == "best_val":
        model.load_state_dict(best_state)
    result.best_top1_val = best_val
    result.wall_s = time.perf_counter() - t0
    return result


def format_seconds(seconds: float) -> str:
    """A duration for logs: '12.3 s', '4 min 05 s', '2 h 07 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def log_epoch(record: dict, epochs: int, elapsed_s: float) -> None:
    """One progress line per epoch: 'epoch k/N', seconds per epoch (mean so far), time left, losses, top-1."""
    k = record["epoch"]
    per_epoch = elapsed_s / k
    log.info("epoch %d/%d: %.2f s/epoch, %s left; loss %.4f, train top-1 %.2f %%, val top-1 %.2f %%, lr %.4g",
             k, epochs, per_epoch, format_seconds(per_epoch * (epochs - k)), record["loss_train"],
             record["top1_train"], record["top1_val"], record["lr"])


def train_baseline(data: dict, spec: dict, train_cfg: dict, seed: int, device: torch.device,
                   regularizer_cfg: dict | None = None, on_epoch=None, resume=None):
    """Train a dense model from scratch → (model, arch, result). regularizer_cfg (regime 'pat'):
    {kind, beta}: β·R added to the loss (β = 0 gives standard training bit for bit). resume: see train_model."""
    arch = architecture_for(spec, data)
    seed_everything(seed)
    model = place(build_model(arch), device)
    with regularizer_loss(model, regularizer_cfg) as extra_loss:
        result = train_model(model, data, train_cfg, device, seed, extra_loss=extra_loss, on_epoch=on_epoch,
                             resume=resume)
    return model, arch, result
