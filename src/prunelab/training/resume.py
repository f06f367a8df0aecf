"""Resume state of a training run: what `train_model` needs to go on after a stop as if it had never stopped.

At the end of an epoch `ResumeState.epoch_end` keeps a snapshot in memory (at most every KEEP_EVERY_S seconds):
clones of the model's state and the optimiser's momentum buffers, every RNG state (torch, CUDA, numpy, python and
the generator of the batch order and augmentation), the history and the best-on-validation epoch so far, and the
state of registered extras (gradual pruning's masks and schedule, a job's own history). It writes a snapshot to
`path` when `every_minutes` have passed since the last write (or `every_epochs` epochs), and `write_snapshot`
writes the last one at once (a job's SIGTERM handler: a SLURM time limit or preemption). A rerun's `restore`, at
the start of `train_model`, loads it back and training continues with the next epoch: the weights and metrics at
the end equal an uninterrupted run's, bit for bit on CPU.

The file is not a workflow output: Snakemake removes a killed job's outputs, the state stays. Its owner
(prunelab.jobs) names it after the job's config, inputs and code, so a state made under other ones is never loaded,
and removes it when the job completes.

    resume = ResumeState(out_dir / "resume-<key>.pt", ResumeSettings.of({"every_epochs": 5}))
    resume.register("masks", get=lambda: ..., put=lambda value: ...)   # state kept outside train_model
    train_model(model, data, cfg, device, seed, resume=resume)
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from prunelab.io import save_torch
from prunelab.settings import ResumeSettings

log = logging.getLogger("prunelab.training.resume")
FORMAT = 2  # version of the file's layout; a state of another version is not loaded
# Seconds between in-memory snapshots: a SIGTERM redoes at most this much training (plus the epoch under way). A
# snapshot costs 0.1-0.3 ms for the default config's models, 3 % of an MLP epoch on digits if taken every epoch.
KEEP_EVERY_S = 1.0


def clone_state(state: dict) -> dict:
    """A state dict's tensors cloned (detached), its other values as they are."""
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def rng_states(generator: torch.Generator) -> dict:
    """Every RNG a training run draws from, as the generators return them: `generator` (batch order,
    augmentation), torch's CPU and CUDA default generators, numpy's and python's global ones."""
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(generator: torch.Generator, states: dict) -> None:
    """Put back what `rng_states` returned."""
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def storable_rng(states: dict) -> dict:
    """`rng_states` in types `torch.load(weights_only=True)` reads back (numpy's and python's as tensors, lists)."""
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    version, mt, gauss_next = states["python"]
    return {**states, "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(mt), "gauss_next": gauss_next}}


def loaded_rng(states: dict) -> dict:
    """The inverse of `storable_rng`."""
    n, p = states["numpy"], states["python"]
    return {**states, "numpy": (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]),
            "python": (p["version"], tuple(p["state"]), p["gauss_next"])}


class ResumeState:
    """The resume state of one training run, kept in memory each epoch and written to `path` now and then.

    path: the file (its folder is created on the first write). settings: when to write (`ResumeSettings`).
    """

    def __init__(self, path: str | Path, settings: ResumeSettings | dict | None = None):
        self.path = Path(path)
        self.settings = ResumeSettings.of(settings)
        self.extras: dict[str, tuple[Callable[[], object], Callable[[object], None]]] = {}
        self.snapshot: dict | None = None     # the state at the end of a recent epoch
        self.written_epoch = 0                # epoch of the state on disk (0: none written by this process)
        self.last_write = self.last_keep = time.monotonic()
        self.writing = False                  # a write is under way (a signal handler must not start another)
        self.after_write: Callable[[], None] | None = None  # called once when the write under way ends

    def register(self, name: str, get: Callable[[], object], put: Callable[[object], None]) -> None:
        """State held outside `train_model` that must come back with it: `get()` returns a copy of it (tensors,
        lists, dicts, numbers, strings), `put(value)` restores it. Registered before `train_model` starts."""
        self.extras[name] = (get, put)

    # ----------------------------------------------------------------------------------- train_model's hooks
    def restore(self, model: torch.nn.Module, optimizer, generator: torch.Generator, result):
        """Load the saved state into the run, if there is one → (epochs done, best_state, best_val, seconds
        trained before), or None (nothing saved: the run starts at epoch 0). `result.history` and `best_epoch`
        are set in place; the registered extras are restored."""
        state = self.read()
        if state is None:
            return None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_states(generator, state["rng"])
        result.history[:] = state["history"]
        result.best_epoch, result.steps = state["best_epoch"], state["steps"]
        result.snapshots = dict(state["snapshots"])   # {epoch: fields of a training.Snapshot}
        for name, (_, put) in self.extras.items():
            put(state["extras"][name])
        self.snapshot, self.written_epoch = state, state["epoch"]
        log.info("resuming from epoch %d (%s)", state["epoch"], self.path)
        return state["epoch"], state["best_state"], state["best_val"], state["elapsed_s"]

    def epoch_end(self, epoch: int, model: torch.nn.Module, optimizer, generator: torch.Generator, result,
                  best_state: dict | None, best_val: float, elapsed_s: float) -> None:
        """After epoch `epoch` (1-based count of finished epochs): keep a snapshot when KEEP_EVERY_S have passed
        since the last one, write one when due. (History records are never changed once their epoch ended: the
        lists are copied, not the records.)"""
        now, every = time.monotonic(), self.settings.every_epochs
        due = bool(every and epoch - self.written_epoch >= every) or \
            now - self.last_write >= 60 * self.settings.every_minutes
        if not due and now - self.last_keep < KEEP_EVERY_S:
            return
        self.snapshot = {
            "format": FORMAT, "epoch": epoch, "model": clone_state(model.state_dict()),
            "optimizer": optimizer.state_dict(), "rng": rng_states(generator),
            "history": list(result.history), "best_epoch": result.best_epoch, "steps": result.steps,
            "snapshots": {e: vars(snap) for e, snap in result.snapshots.items()},
            "best_state": best_state, "best_val": best_val, "elapsed_s": elapsed_s,
            "extras": {name: get() for name, (get, _) in self.extras.items()}}
        self.last_keep = now
        if due:
            self.write_snapshot()

    # ------------------------------------------------------------------------------------------------ files
    def write_snapshot(self) -> int | None:
        """Write the last snapshot (atomically) → its epoch; None when there is nothing new."""
        state = self.snapshot
        if state is None or state["epoch"] == self.written_epoch or self.writing:
            return None
        self.writing = True
        try:
            t0 = time.perf_counter()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_torch({**state, "rng": storable_rng(state["rng"])}, self.path)
            self.written_epoch, self.last_write = state["epoch"], time.monotonic()
            log.info("resume state of epoch %d written in %.2f s (%s)", state["epoch"], time.perf_counter() - t0,
                     self.path.name)
        finally:
            self.writing = False
        if self.after_write is not None:
            after, self.after_write = self.after_write, None
            after()
        return state["epoch"]

    def read(self) -> dict | None:
        """The state in `path`, or None when there is none or it cannot be used (a warning says why)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: train from the start rather than fail
            log.warning("resume state %s is unreadable (%s: %s): starting from epoch 0", self.path,
                        type(exc).__name__, exc)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or set(state["extras"]) != set(self.extras):
            log.warning("resume state %s does not fit this run (format or extras differ): starting from epoch 0",
                        self.path)
            return None
        return {**state, "rng": loaded_rng(state["rng"])}
