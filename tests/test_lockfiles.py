"""The pip/conda path installs exactly uv.lock's set: requirements.lock is uv.lock exported, environment.yml uses it."""
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO


def test_requirements_lock_is_uv_lock_exported():
    uv = shutil.which("uv")
    assert uv, "uv is needed (make venv installs it)"
    out = subprocess.run([uv, "export", "--locked", "--no-dev", "--no-emit-project", "--format", "requirements-txt",
                          "--no-header"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    lock = "".join(line for line in (REPO / "requirements.lock").read_text().splitlines(keepends=True)
                   if not line.startswith("#"))
    body = "".join(line for line in out.splitlines(keepends=True) if not line.startswith("#"))
    assert lock.strip() == body.strip(), "requirements.lock is stale: rerun `make requirements.lock`"


def test_pins_are_the_matched_torch_pair_with_hashes():
    text = (REPO / "requirements.lock").read_text()
    for pin in ("torch==2.13.0", "torchvision==0.28.0"):
        block = text[text.index(pin + " "):].split("\n\n")[0]
        assert "--hash=sha256:" in block.split(pin)[1].split("==")[0]


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.lock" in pip and "--require-hashes" in pip


@pytest.mark.parametrize("name", ["torch", "torchvision", "snakemake", "mlflow", "torch-pruning", "scikit-learn",
                                  "matplotlib", "snakemake-executor-plugin-slurm"])
def test_core_packages_are_locked(name):
    assert f"\n{name}==" in "\n" + (REPO / "requirements.lock").read_text()


def test_rule_conda_env_installs_the_lock_and_the_project():
    env = yaml.safe_load((REPO / "workflow/envs/prunelab.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "--require-hashes" in pip and "-r ../../requirements.lock" in pip
    assert (REPO / "workflow/envs" / "../../requirements.lock").resolve() == REPO / "requirements.lock"
    deploy = (REPO / "workflow/envs/prunelab.post-deploy.sh").read_text()
    assert "pip install --no-deps -e" in deploy
