"""What the resume state costs a training run (prunelab.training.resume), on the baselines of a config.

For each arch of the config (its own train recipe, seed 0, standard regime, the prepared dataset of the config,
on the CPU with `--threads` threads): the wall time of `train_baseline` without a resume state, with the default
settings of the schema (`resume.every_minutes`: the state is kept in memory every epoch and written when that many
minutes have passed, i.e. never in a run shorter than that), and written after every epoch (`every_epochs: 1`,
the most it can cost). Runs are interleaved, `--repeats` times each; the fastest of each are compared (on a shared
machine other processes only ever add time).

    python benchmarks/resume_overhead.py [--config config/config.yaml] [--repeats 11] [--threads 1]

Writes JSON (default results/bench/resume_overhead.json) and prints one line per arch and setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from prunelab.data import prepare_dataset
from prunelab.settings import ResumeSettings, TrainSettings
from prunelab.training import train_baseline
from prunelab.training.resume import ResumeState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/bench/resume_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    d = {**cfg["dataset"]}
    data = prepare_dataset(d.pop("name"), d.pop("data_root", None), **{k: v for k, v in d.items()
                                                                       if k in ("val_fraction", "split_seed",
                                                                                "max_train", "max_test")})
    settings = {"none": None, "default": ResumeSettings.of({}), "every epoch": ResumeSettings.of({"every_epochs": 1})}
    report = {"config": args.config, "threads": args.threads, "repeats": args.repeats,
              "default_settings": ResumeSettings.of({}).as_dict(), "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch in cfg["archs"].items():
            train = TrainSettings.of({**cfg.get("train", {}), **(arch.get("train") or {})})
            spec = {"name": arch["name"], "options": arch.get("options", {})}
            times: dict[str, list[float]] = {k: [] for k in settings}
            for i in range(args.repeats):
                for key, value in settings.items():
                    resume = None if value is None else ResumeState(Path(tmp) / f"{name}-{i}-{key}.pt", value)
                    t0 = time.perf_counter()
                    train_baseline(data, spec, train, 0, torch.device("cpu"), resume=resume)
                    times[key].append(time.perf_counter() - t0)
            base = min(times["none"])
            row = {"epochs": train.epochs, "seconds": {k: min(v) for k, v in times.items()},
                   "median_seconds": {k: statistics.median(v) for k, v in times.items()},
                   "overhead_pct": {k: 100 * (min(v) / base - 1) for k, v in times.items() if k != "none"}}
            report["archs"][name] = row
            for key, pct in row["overhead_pct"].items():
                print(f"{name} ({train.epochs} epochs, {base:.2f} s without): resume {key}: {pct:+.1f} %")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
