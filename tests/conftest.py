"""Shared fixtures: a throw-away workflow folder and a Snakemake runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def make_workdir(path: Path) -> Path:
    """A folder that runs the repo's workflow: links to Snakefile, workflow/, scripts/, config/."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "scripts", "config"):
        link = path / name
        if not link.exists():
            link.symlink_to(REPO / name)
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600, env: dict | None = None):
    """Run snakemake in `workdir`; returns the CompletedProcess (stdout and stderr merged)."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: intra-op threads only add contention on tiny tensors."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """A small digits split (200 training images): enough to train the tiny models of the unit tests."""
    from prunelab.data import prepare_dataset

    return prepare_dataset("digits", None, val_fraction=0.2, max_train=200)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path / "wd")
