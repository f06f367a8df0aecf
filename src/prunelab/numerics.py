"""Portable numerics: the same CPU kernels, hence the same numbers, on every x86-64 CPU; and the machine a job ran on.

torch picks its CPU kernels by what the CPU offers: ATen's vectorised kernels (AVX2 or AVX-512) and oneDNN's
convolutions (avx2 or avx512_core code). Their reductions add in another order, results drift in the 7th digit and
then apart through training (a published FNN baseline moved by 0.03 pp, pruned models by up to 9 pp). The config's
`portable_numerics` (schema default: on) caps both at AVX2, which every current x86-64 CPU has, through the
environment variables of PORTABLE_ENV. They are read once, when torch first dispatches, so the workflow sets them in
the Snakemake process before torch loads (workflow/rules/common.smk) and every job process inherits them; on a
cluster the job's own Snakemake re-parses the workflow and sets them again.

Measured on an AMD EPYC with AVX-512 against a run made on an AVX2 machine (docs/numerics.md): ATEN_CPU_CAPABILITY
and ONEDNN_MAX_CPU_ISA together make the tiny run equal in every digit, each alone does not. MKL_CBWR=AVX2 is not
used: on AMD CPUs MKL maps it to its run-to-run reproducibility mode, which changes small matrix products. MKL is
capped with MKL_ENABLE_INSTRUCTIONS=AVX2 instead, a no-op on AMD CPUs (measured: the same bits) and the documented
cap of the instruction set MKL dispatches on Intel CPUs, which would otherwise run AVX-512 matrix products.

No torch import at module level: `pin_kernels` must run before torch loads.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import MutableMapping

# The instruction-set caps of portable numerics: ATen, oneDNN, MKL.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
X86_64 = ("x86_64", "amd64")


def pin_kernels(enabled: bool, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """With `enabled`, set PORTABLE_ENV in `environ` (on x86-64 only; other CPUs have no AVX2 to pin) and return
    what was set; otherwise leave `environ` alone and return {} (kernels then follow the CPU, or the variables the
    user set). Must run before torch loads in the process whose kernels it is meant to pin."""
    if not enabled or platform.machine().lower() not in X86_64:
        return {}
    environ.update(PORTABLE_ENV)
    return dict(PORTABLE_ENV)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform's guess; '' when unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def _library_versions(config: str) -> dict[str, str | None]:
    """oneDNN and MKL versions from `torch.__config__.show()` (None when torch is built without them)."""
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v([\d.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    return {"onednn": onednn.group(1) if onednn else None, "mkl": mkl.group(1) if mkl else None}


def machine_info() -> dict:
    """What decides a job's numbers besides code and config: CPU model, the ATen capability torch dispatched
    (torch.backends.cpu.get_cpu_capability()), the pinning variables in effect, torch / oneDNN / MKL / CUDA
    versions and threads (recorded in every run.json)."""
    import torch

    return {"cpu_model": cpu_model(), "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_caps": {var: os.environ.get(var) for var in PORTABLE_ENV},
            "torch": torch.__version__, **_library_versions(torch.__config__.show()),
            "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads()}
