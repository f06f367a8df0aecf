"""No stale result looks current: metrics.json records a dirty flag and the library's source hash, and the report
warns when its rows come from different or dirty sources."""
from __future__ import annotations

import hashlib
import json
import subprocess

from conftest import REPO
from prunelab.provenance import provenance_warnings
from prunelab.records import METRICS_KEYS, git_state, source_hash, tree_hash


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_flags_uncommitted_changes(tmp_path):
    assert git_state(tmp_path) == "unknown"  # not a repository
    git(tmp_path, "init", "-q")
    assert git_state(tmp_path) == "unknown"  # no commit yet
    (tmp_path / "m.py").write_text("x = 1\n")
    git(tmp_path, "add", "m.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git(tmp_path, "rev-parse", "HEAD")[:12]
    assert git_state(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("ignored")  # untracked files do not change what ran
    assert git_state(tmp_path) == head
    (tmp_path / "m.py").write_text("x = 2\n")
    assert git_state(tmp_path) == head + "-dirty"


def test_tree_hash_is_sha256_over_paths_and_bytes(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("b = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not source")
    ref = hashlib.sha256(b"a.py\0a = 1\n\0" + b"sub/b.py\0b = 2\n\0").hexdigest()[:12]
    before = tree_hash(tmp_path / "pkg")
    assert before == ref
    (tmp_path / "pkg" / "notes.txt").write_text("changed")
    assert tree_hash(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "sub" / "b.py").write_text("b = 3\n")
    assert tree_hash(tmp_path / "pkg") != before
    assert source_hash() == tree_hash(REPO / "src" / "prunelab")
    assert "source_hash" in METRICS_KEYS and "git_commit" in METRICS_KEYS


ROW = {"git_commit": "aaaaaaaaaaaa", "source_hash": "111111111111"}


def test_provenance_one_clean_source_is_quiet():
    assert provenance_warnings([dict(ROW), dict(ROW)]) == []


def test_provenance_warns_on_mixed_dirty_or_unrecorded_sources(caplog):
    other = {"git_commit": "bbbbbbbbbbbb-dirty", "source_hash": "222222222222"}
    with caplog.at_level("WARNING", logger="prunelab"):
        warnings = provenance_warnings([dict(ROW), dict(ROW), other])
    assert len(warnings) == 3 and caplog.messages == [f"report: {w}" for w in warnings]
    assert "2 different commits: aaaaaaaaaaaa (2 rows), bbbbbbbbbbbb (1 rows)" in warnings[0]
    assert "2 different library source hashes: 111111111111 (2 rows), 222222222222 (1 rows)" in warnings[1]
    assert warnings[2].startswith("1 of 3 rows were computed with uncommitted changes")
    # a dirty tree with one source hash: no mix, but still flagged
    assert len(provenance_warnings([{"git_commit": "a-dirty", "source_hash": "1"}] * 2)) == 1
    old = provenance_warnings([dict(ROW), {"git_commit": "aaaaaaaaaaaa", "source_hash": float("nan")}])
    assert old == ["1 of 2 rows record no source_hash (made by an older version): they may be stale"]


def test_report_summary_carries_the_warning(tmp_path):
    from prunelab.records import empty_record
    from prunelab.report import build_report

    files = []
    for seed, commit in ((0, "aaaaaaaaaaaa"), (1, "cccccccccccc")):
        rec = empty_record(experiment="e", dataset="digits", arch="mlp", regime="standard", seed=seed,
                           stage="baseline", top1_val=90.0, top1_test=89.0, params_total=10, params_nonzero=10,
                           git_commit=commit, source_hash="111111111111", config_hash="h", device="cpu")
        path = tmp_path / f"m{seed}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(rec))
        files.append(path)
    build_report(files, tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "tables" / "summary.md").read_text()
    assert "**Warning:** rows come from 2 different commits: aaaaaaaaaaaa (1 rows), cccccccccccc (1 rows)" in md
