"""Files the workflow writes get the permissions the user's umask gives, as open() would."""
import os
import stat

import pytest

from prunelab.io import save_json, save_torch


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        save_json({"a": 1}, tmp_path / "m.json")
        save_torch({"x": [1, 2]}, tmp_path / "s.pt")
        with open(tmp_path / "plain.txt", "w") as fh:  # the reference: what a plain open() creates
            fh.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~mask
    for name in ("m.json", "s.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
