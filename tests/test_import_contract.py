"""tools/import_contract.py (run by `make lint`): the real tree passes; a bad import in a copy fails it."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

TOOL = REPO / "tools" / "import_contract.py"


def contract(src) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(src)], capture_output=True, text=True, timeout=120)


def test_the_package_keeps_the_contract():
    run = contract(REPO / "src")
    assert run.returncode == 0, run.stdout
    assert "no upward import, no cycle, no private import" in run.stdout


@pytest.mark.parametrize("module,line,needle", [
    # a model module reaching up into the job layer
    ("models/mlp.py", "from prunelab.jobs.pruning import prune_finetune_job", "imports prunelab.jobs.pruning from the layer above"),
    # same layer, but a cycle (stats.lrp -> stats.lrp_rules -> stats.lrp), even inside a function
    ("stats/lrp_rules.py", "def _late():\n    from prunelab.stats.lrp import relevance\n", "import cycle: "),
    # a private helper borrowed from another module
    ("pruning/removal.py", "from prunelab.pruning.selection import _check_scope",
     "imports private name(s) ['_check_scope']"),
])
def test_a_bad_import_fails_the_contract(tmp_path, module, line, needle):
    shutil.copytree(REPO / "src" / "prunelab", tmp_path / "prunelab", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "prunelab" / module
    target.write_text(target.read_text() + "\n" + line + "\n")
    run = contract(tmp_path)
    assert run.returncode == 1 and needle in run.stdout, run.stdout
