"""A fresh machine: `make uv` with a distribution's Python (tools/install_uv.sh) and what `make test` installs from the
system or names in one line (tools/system_packages.sh)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3.11")
SYSTEM_PATH = "/usr/bin:/bin"  # no pyenv shims, no ~/.local/bin, no .venv/bin: what a fresh Debian has


def make_in(folder: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not SYSTEM_PYTHON.is_file(), reason=f"{SYSTEM_PYTHON} (the distribution's Python) is not here")
def test_make_uv_installs_the_pin_with_the_distributions_python(tmp_path):
    """/usr/bin/python3.11 first on PATH, no uv anywhere on it: `make uv` puts the pinned uv in .uv/ of the project
    (about 18 MB from the package index) and installs nothing into that Python."""
    for name in ("Makefile", "tools"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "HTTP", "HTTPS", "NO_PROXY", "SSL_"))}
    env.update(PATH=SYSTEM_PATH, HOME=str(tmp_path), LANG="C.UTF-8")
    assert shutil.which("uv", path=SYSTEM_PATH) is None
    no_uv = "import importlib.util, sys; sys.exit(importlib.util.find_spec('uv') is not None)"
    assert subprocess.run([str(SYSTEM_PYTHON), "-c", no_uv]).returncode == 0
    pin = make_in(tmp_path, "print-uv-version", env=env).stdout.strip()

    first = make_in(tmp_path, "uv", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip() == f"uv {pin} installed in {tmp_path}/.uv/bin/uv"
    uv = make_in(tmp_path, "print-uv", env=env).stdout.strip()
    assert uv == f"{tmp_path}/.uv/bin/uv"
    assert subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split()[:2] == ["uv", pin]
    assert subprocess.run([str(SYSTEM_PYTHON), "-c", no_uv]).returncode == 0  # the system Python has no uv
    again = make_in(tmp_path, "uv", env=env)  # installed: nothing to do
    assert again.returncode == 0 and again.stdout == ""


def test_install_uv_names_what_to_install_when_the_python_has_neither_pip_nor_venv(tmp_path):
    python = tmp_path / "python3.11"
    python.write_text("#!/bin/sh\nexit 1\n")  # every `python -m ...` fails, as without pip and venv
    python.chmod(0o755)
    proc = subprocess.run([str(REPO / "tools/install_uv.sh"), str(python), "0.13.9", str(tmp_path / ".uv")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "" and not (tmp_path / ".uv").exists()
    assert proc.stderr.count("\n") == 1 and "sudo apt-get install python3-pip" in proc.stderr


def fake_system(tmp_path: Path, root: bool, sudo: bool, compiler: bool) -> dict:
    """A PATH of stand-ins: apt-get (records its arguments), id, sudo, g++ as asked; the shell's own tools."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "env", "cat", "dirname"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    scripts = {"apt-get": f'#!/bin/bash\necho "$@" >> {tmp_path}/apt.log\n',
               "id": f"#!/bin/bash\necho {0 if root else 1000}\n"}
    if sudo:
        scripts["sudo"] = '#!/bin/bash\n[ "$1" = -n ] && [ "$2" = true ] && exit 0\nexec "$@"\n'
    if compiler:
        scripts["g++"] = "#!/bin/bash\n"
    for name, text in scripts.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return {"PATH": str(bin_), "FASHION_DIR": str(tmp_path / "fashion-mnist")}


def system_packages(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(REPO / "tools/system_packages.sh"), *args], env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("root,sudo", [(True, False), (False, True)])
def test_make_test_installs_what_is_missing_with_apt(tmp_path, root, sudo):
    env = fake_system(tmp_path, root=root, sudo=sudo, compiler=False)
    proc = system_packages(env, "test")
    assert proc.returncode == 0
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends dataset-fashion-mnist g++"]


def test_make_test_says_in_one_line_what_it_cannot_install(tmp_path):
    env = fake_system(tmp_path, root=False, sudo=False, compiler=True)
    proc = system_packages(env, "test")
    assert proc.returncode == 0 and not (tmp_path / "apt.log").exists()
    assert proc.stdout.count("\n") == 1 and "Fix: sudo apt-get install dataset-fashion-mnist" in proc.stdout
    (tmp_path / "fashion-mnist").mkdir()  # everything there: silent
    assert system_packages(env, "test").stdout == ""
    assert system_packages(env, "data").stdout.startswith("Fashion-MNIST is installed in")


def test_make_test_runs_the_setup_before_the_suite():
    plan = subprocess.run(["make", "-n", "--no-print-directory", "unit"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    assert plan.index("tools/system_packages.sh test") < plan.index("-m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert "dataset-fashion-mnist" not in ci and "g++" not in ci  # make test does it, not CI
