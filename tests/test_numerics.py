"""Portable numerics (prunelab.numerics): the kernel caps reach torch before it loads, and run.json's machine record.

That the caps take effect inside every job of a real run (and make the stored tiny run equal in every digit) is
checked on the tiny run in tests/test_workflow.py."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from prunelab import numerics
from prunelab.numerics import PORTABLE_ENV, machine_info, pin_kernels


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


def capability_in_child(pin: bool) -> str:
    """ATen's capability in a fresh process whose environment has no caps, pin_kernels(pin) run before torch loads."""
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    code = (f"from prunelab.numerics import pin_kernels\npin_kernels({pin})\n"
            "import torch\nprint(torch.backends.cpu.get_cpu_capability())")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_pin_sets_the_caps_on_x86_64_and_nothing_else(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = {"ATEN_CPU_CAPABILITY": "avx512", "OTHER": "1"}
    assert pin_kernels(True, env) == PORTABLE_ENV
    assert env == {**PORTABLE_ENV, "OTHER": "1"}  # the config wins over what the shell had set
    off = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_kernels(False, off) == {} and off == {"ATEN_CPU_CAPABILITY": "avx512"}  # off: left as it was
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    arm = {}
    assert pin_kernels(True, arm) == {} and arm == {}  # no AVX2 to pin on another architecture


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in cpu_flags(),
                    reason="pinning to AVX2 needs an x86-64 CPU with AVX2")
def test_a_pinned_process_dispatches_avx2_and_an_unpinned_one_what_the_cpu_has():
    native = "AVX512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags() else "AVX2"
    assert capability_in_child(True) == "AVX2"
    assert capability_in_child(False) == native


def test_library_versions_are_read_from_torchs_build_description():
    sample = ("  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64\n"
              "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)\n")
    assert numerics._library_versions(sample) == {"onednn": "3.12.0", "mkl": "2024.2"}
    assert numerics._library_versions("  - GCC 13.3\n") == {"onednn": None, "mkl": None}


def test_machine_info_describes_this_process():
    info = machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["threads"] == torch.get_num_threads() and info["interop_threads"] >= 1
    assert info["machine"] == platform.machine() and set(info["kernel_caps"]) == set(PORTABLE_ENV)
    if torch.backends.mkldnn.is_available():
        assert info["onednn"] and info["onednn"][0].isdigit()
    if os.path.exists("/proc/cpuinfo") and platform.machine().lower() in ("x86_64", "amd64"):
        with open("/proc/cpuinfo") as fh:
            assert f"model name\t: {info['cpu_model']}\n" in fh.read()
