"""Floating-point modes of the CPU that the training and prediction of the networks run under."""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator

import torch

__all__ = ["flush_denormals", "flushing_denormals"]


def flushing_denormals() -> bool:
    """Whether the CPU treats denormal floats as zero in this thread now."""
    # a float32 denormal: the smallest normal float32 is 1.2e-38
    tiny = torch.tensor([2e-39], dtype=torch.float32)
    return float((tiny * 1.0)[0]) == 0.0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats (magnitudes below 1.2e-38 in float32) as zero on the CPU inside the
    block, in this thread and in the threads of torch's OpenMP pool that run its operations, then
    restore the mode found.

    Values that small arise while training recurrent networks (gates near zero multiply states and
    gradients again and again), and each CPU operation on one is dozens of times slower than on a
    normal float: a ConvLSTM's backward pass ran an order of magnitude slower with them. As zeros
    they change results by less than 1e-38. Where the CPU has no such mode, nothing changes.
    """
    before = flushing_denormals()
    _set_everywhere(True)
    try:
        yield
    finally:
        _set_everywhere(before)


def _set_everywhere(on: bool) -> None:
    """Set the mode in this thread and in each thread of this thread's OpenMP pool.

    The mode is a register of each thread, and ``torch.set_flush_denormal`` sets the calling
    thread's only: the pool's other threads, which compute their share of each parallel
    operation, would go on with denormals. One parallel region of the OpenMP runtime torch loaded
    (``GOMP_parallel``, as many threads as torch uses) sets it in each of them. Without such a
    runtime (torch built with another thread pool), the calling thread only."""
    torch.set_flush_denormal(on)
    threads = torch.get_num_threads()
    runtime = _openmp_runtime()
    if runtime is None or threads < 2:
        return

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def each_thread(_data: int | None) -> None:  # run by every thread of the region
        torch.set_flush_denormal(on)

    runtime.GOMP_parallel(each_thread, None, ctypes.c_uint(threads), ctypes.c_uint(0))


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's operations run on (GNU's, or Intel's with its GNU entry points),
    or ``None``. Looked up from torch's CPU library, whose own dependencies come first: other
    packages may load another copy (scikit-learn ships its own libgomp), whose pool torch never
    uses. Linux: the library is found among the process's mapped files."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libtorch_cpu" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            runtime = ctypes.CDLL(path)  # already loaded: the same handle
            parallel = runtime.GOMP_parallel
        except (OSError, AttributeError):
            continue
        parallel.restype = None
        return runtime
    return None
