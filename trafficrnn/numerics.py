"""Floating-point modes of the CPU that the training and prediction of the networks run under."""

from __future__ import annotations

import contextlib
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
    block, then restore the mode found.

    Values that small arise while training recurrent networks (gates near zero multiply states and
    gradients again and again), and each CPU operation on one is dozens of times slower than on a
    normal float: a ConvLSTM's backward pass ran an order of magnitude slower with them. As zeros
    they change results by less than 1e-38. Where the CPU has no such mode, nothing changes.
    """
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
