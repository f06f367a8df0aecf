"""A failed job explains itself in the rule's log file (the file Snakemake points to): traceback, then as the last
line the one-line cause."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

# Runs a workflow script as Snakemake's `script:` does (a fresh interpreter, a global `snakemake` object).
RUNNER = textwrap.dedent("""
    import runpy, sys
    from types import SimpleNamespace as NS

    class Files(list):
        def __init__(self, **named):
            super().__init__(named.values())
            self.__dict__.update(named)

    stats, model, log, out = sys.argv[1:5]
    smk = NS(input=Files(model=model, stats=stats), output=Files(scores=out), log=Files(log=log),
             params=NS(method_config={}), wildcards=NS(method="magnitude"), threads=1, rule="score")
    runpy.run_path(sys.argv[5], init_globals={"snakemake": smk}, run_name="__main__")
""")


def run_score(tmp_path, stats_bytes: bytes):
    """Run scripts/score.py on a tiny MLP and the given stats.pt bytes → (process, lines of the rule's log)."""
    from prunelab.io import save_model
    from prunelab.models import build_model

    arch = {"name": "mlp", "options": {"hidden": [4]}, "in_shape": [1, 4, 4], "num_classes": 3}
    model_path = tmp_path / "results/e/baseline/mlp/standard/0/model.pt"
    save_model(model_path, build_model(arch), arch)
    stats = tmp_path / "results/e/stats/mlp/standard/0/stats.pt"
    stats.parent.mkdir(parents=True)
    stats.write_bytes(stats_bytes)
    log = tmp_path / "score.log"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(stats), str(model_path), str(log),
                           str(tmp_path / "scores.pt"), str(REPO / "scripts/score.py")],
                          capture_output=True, text=True, timeout=120)
    return proc, log.read_text().splitlines()


def test_truncated_statistics_leave_their_cause_in_the_score_log(tmp_path):
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"layers": {"fc1": torch.ones(100)}, "needs": []}, buf)
    proc, lines = run_score(tmp_path, buf.getvalue()[:200])
    assert proc.returncode != 0
    assert "score started" in lines[0]
    assert "Traceback (most recent call last):" in lines
    assert any("load_statistics" in line for line in lines)  # the traceback names where it failed
    last = lines[-1]
    assert last.startswith("ERROR RuntimeError: statistics file ") and "stats.pt is missing, truncated" in last
    assert last.endswith("regenerate with snakemake --forcerun collect_stats")
    assert "Traceback" in proc.stderr  # the console still shows it


def test_failure_line_is_one_line():
    from prunelab.jobs import failure_line

    assert failure_line(ValueError("a\n  b\tc ")) == "ERROR ValueError: a b c"
    assert failure_line(KeyError("k")) == "ERROR KeyError: 'k'"
    assert failure_line(MemoryError()) == "ERROR MemoryError"
