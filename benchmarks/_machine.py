"""What a benchmark records about the CPU it ran on: fixed-time results (the NYC and synthetic accuracy
runs train for so many minutes) depend on it, and machines here differ several-fold in speed, mainly by
whether they have AVX-512 (bf16 convolutions run at fp32 speed or below without it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the glibc malloc tunables of DESIGN.md: big conv buffers are not handed back to the OS on every call
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def reexec_with_tunables(tunables: str = TUNABLES) -> None:
    """Re-execute the running script with ``GLIBC_TUNABLES=tunables`` (once: not where the variable is
    set already, nor with ``--no-reexec`` on the command line). Call it first, under
    ``if __name__ == "__main__":``, before the heavy imports."""
    if os.environ.get("GLIBC_TUNABLES") is None and "--no-reexec" not in sys.argv:
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": tunables}
        )


#: the instruction-set flags of /proc/cpuinfo that move PyTorch's CPU speed
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu() -> dict:
    """CPU model name, the ISA flags above that it has, and PyTorch's detected CPU capability."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    out = {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}
    try:
        import torch

        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        pass
    return out


def machine() -> dict:
    """What a result records about the machine: platform, CPU (see :func:`cpu`), cores, torch and its
    threads, and the load average when the run ended (other work sharing the cores)."""
    import os
    import platform

    import torch

    return {
        "platform": platform.platform(),
        "cpu": cpu(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
    }
