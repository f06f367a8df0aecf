"""profiles/default (Snakemake's workflow profile): read by every run, so `make run` and a plain `snakemake` behave
the same; it stays minimal, composes with profiles/slurm, and keeps the console's lines short."""
from __future__ import annotations

import shutil

import yaml

from conftest import REPO, TINY, make_workdir, snakemake

DEFAULT = REPO / "profiles" / "default" / "config.yaml"


def test_default_profile_is_minimal():
    prof = yaml.safe_load(DEFAULT.read_text())
    assert prof == {"cores": "all", "scheduler": "greedy", "rerun-incomplete": True, "show-failed-logs": True,
                    "quiet": ["reason"]}
    makefile = (REPO / "Makefile").read_text()
    assert "--scheduler" not in makefile and "--rerun-incomplete" not in makefile  # said once, in the profile


def test_plain_snakemake_uses_it_with_short_lines(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    (wd / "profiles").symlink_to(REPO / "profiles")
    shutil.copy(TINY, wd / "tiny.yaml")
    out = snakemake(wd, "--configfile", "tiny.yaml", "-n").stdout
    assert "Using workflow specific profile profiles/default" in out
    assert "reason:" not in out and "Job stats:" in out
    assert "report of tiny: tables and figures from 18 metrics.json files" in out  # not the 18 paths
    longest = max(out.splitlines(), key=len)
    assert len(longest) < 1000, longest[:200]
    # under the SLURM profile too: both apply, the SLURM one's GPU requests survive
    out = snakemake(wd, "--configfile", "tiny.yaml", "-n", "--profile", "profiles/slurm").stdout
    assert "profiles/slurm and workflow specific profile profiles/default" in out
    assert "gpu=1" in out and "reason:" not in out
