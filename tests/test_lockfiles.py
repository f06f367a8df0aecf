"""The pip/conda path installs exactly uv.lock's set: requirements.lock is uv.lock exported, environment.yml uses it.

requirements.lock is compared with `uv export` by meaning, not text: per requirement its name, version, hash set
and environment marker. uv versions write the same marker in different forms (`(a and c) or (b and c)` vs
`(a or b) and c`), so markers are compared by their truth table over every environment that tells them apart.
"""
import itertools
import re
import shutil
import subprocess

import pytest
import yaml
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from conftest import REPO

VERSION_VARS = {"python_version", "python_full_version", "implementation_version"}
_CLAUSE = re.compile(r'(\w+) (===|==|!=|<=|>=|~=|<|>|not in|in) "([^"]*)"|"([^"]*)" (not in|in) (\w+)')


def parse_requirements(text: str) -> dict:
    """{canonical name: (version, frozenset of hashes, Marker or None)} of a hashed requirements.txt."""
    entries, current = {}, ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        if not line:
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            spec, *hashes = current.split(" --hash=")
            req = Requirement(spec.strip())
            pins = [s.version for s in req.specifier if s.operator == "=="]
            assert len(pins) == 1, f"requirement '{spec.strip()}' is not pinned with =="
            entries[canonicalize_name(req.name)] = (pins[0], frozenset(h.strip() for h in hashes), req.marker)
            current = ""
    assert not current.strip(), f"requirements text ends inside a continued line: {current!r}"
    return entries


def _candidates(markers) -> dict:
    """{variable: values} that tell the markers apart: each literal, a value between/after each version
    literal, and one value equal to none of them."""
    literals: dict[str, set] = {}
    for marker in markers:
        for m in _CLAUSE.finditer(str(marker)):
            var, value = (m[1], m[3]) if m[1] else (m[6], m[4])
            literals.setdefault(var, set()).add(value)
    grid = {}
    for var, values in literals.items():
        cands = set(values) | {"\x00none-of-these"}
        if var in VERSION_VARS:
            cands = set(values) | {"0"} | {v + ".1" for v in values}
            try:
                cands |= {f"{Version(v).major + 1}" for v in values}
            except InvalidVersion:
                pass
        grid[var] = sorted(cands)
    return grid


def markers_equivalent(a: Marker | None, b: Marker | None) -> bool:
    """True when both markers take the same value in every environment built from their literals."""
    if a is None or b is None:
        return a is None and b is None or str(a or b) == ""
    grid = _candidates([a, b])
    names = sorted(grid)
    base = default_environment()
    for values in itertools.product(*(grid[n] for n in names)):
        env = {**base, **dict(zip(names, values))}
        if a.evaluate(env) != b.evaluate(env):
            return False
    return True


def lock_differences(lock_text: str, export_text: str) -> list[str]:
    """Human-readable differences in meaning between two hashed requirements files (empty: same set)."""
    lock, export = parse_requirements(lock_text), parse_requirements(export_text)
    diffs = [f"{n}: only in requirements.lock" for n in sorted(lock.keys() - export.keys())]
    diffs += [f"{n}: only in uv export" for n in sorted(export.keys() - lock.keys())]
    for name in sorted(lock.keys() & export.keys()):
        (v1, h1, m1), (v2, h2, m2) = lock[name], export[name]
        if v1 != v2:
            diffs.append(f"{name}: version {v1} in requirements.lock, {v2} in uv export")
        if h1 != h2:
            diffs.append(f"{name}: hashes differ ({len(h1 ^ h2)} not in both)")
        if not markers_equivalent(m1, m2):
            diffs.append(f"{name}: marker '{m1}' in requirements.lock, '{m2}' in uv export")
    return diffs


def pinned_uv() -> list[str]:
    """The command that runs the Makefile's pinned uv (`make -s print-uv`; `make uv` installs it)."""
    assert shutil.which("make"), "make is needed"
    cmd = subprocess.run(["make", "-s", "--no-print-directory", "print-uv"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True).stdout
    pin = subprocess.run(["make", "-s", "--no-print-directory", "print-uv-version"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert version.split()[1:2] == [pin], f"uv {pin} (the Makefile's UV_VERSION) is needed: run `make uv`"
    return cmd


def test_requirements_lock_is_uv_lock_exported():
    out = subprocess.run([*pinned_uv(), "export", "--locked", "--no-dev", "--no-emit-project", "--format", "requirements-txt",
                          "--no-header"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    diffs = lock_differences((REPO / "requirements.lock").read_text(), out)
    assert not diffs, "requirements.lock is stale: rerun `make requirements.lock`\n" + "\n".join(diffs[:20])


SAMPLE = """\
foo==1.0 ; (platform_machine == 'aarch64' and sys_platform == 'linux') or (platform_machine == 'x86_64' and sys_platform == 'linux') \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
    # via bar
baz==2.1 ; python_full_version < '3.12' \\
    --hash=sha256:cccc
qux==3.0 \\
    --hash=sha256:dddd
"""


def test_lock_check_ignores_marker_form_and_hash_order():
    other = (SAMPLE.replace("(platform_machine == 'aarch64' and sys_platform == 'linux') or (platform_machine == "
                            "'x86_64' and sys_platform == 'linux')",
                            "(platform_machine == 'aarch64' or platform_machine == 'x86_64') and sys_platform == 'linux'")
             .replace("--hash=sha256:aaaa \\\n    --hash=sha256:bbbb", "--hash=sha256:bbbb \\\n    --hash=sha256:aaaa")
             .replace("python_full_version < '3.12'", "'3.12' > python_full_version"))
    assert other != SAMPLE
    assert lock_differences(SAMPLE, other) == []


@pytest.mark.parametrize("old, new, expected", [
    ("foo==1.0", "foo==1.1", "foo: version 1.0 in requirements.lock, 1.1 in uv export"),
    ("--hash=sha256:cccc", "--hash=sha256:cccd", "baz: hashes differ (2 not in both)"),
    ("python_full_version < '3.12'", "python_full_version <= '3.12'", "baz: marker"),
    ("and sys_platform == 'linux') or", "and sys_platform == 'darwin') or", "foo: marker"),
    ("qux==3.0 \\", "qux==3.0 ; sys_platform == 'linux' \\", "qux: marker"),
    ("qux==3.0 \\\n    --hash=sha256:dddd\n", "", "qux: only in requirements.lock"),
])
def test_lock_check_fails_on_a_changed_pin(old, new, expected):
    changed = SAMPLE.replace(old, new)
    assert changed != SAMPLE
    diffs = lock_differences(SAMPLE, changed)
    assert len(diffs) == 1 and diffs[0].startswith(expected), diffs


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


def test_uv_is_pinned_once_in_the_makefile():
    makefile, ci = (REPO / "Makefile").read_text(), (REPO / ".ci" / "run").read_text()
    assert len(re.findall(r"^UV_VERSION := \d+\.\d+\.\d+$", makefile, re.M)) == 1
    assert re.search(r"^make test$", ci, re.M) and not re.search(r"uv==|pip install[^\n]* uv", ci), (
        ".ci/run must leave uv to `make test` (the Makefile's pin)")
