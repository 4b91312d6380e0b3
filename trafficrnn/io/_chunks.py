"""Guard for lazy reads: how many dask chunks a file would be split into, refused above a limit (a corrupt or hostile
header can declare a raster of billions of pixels, whose dask graph alone would take minutes to build).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trafficrnn.errors import ConfigError

__all__ = ["MAX_CHUNKS_PER_FILE", "check_chunk_count"]

# dask takes ~10 µs per chunk to build a graph: a million chunks is ~10 s, and a (corrupt) header can declare far more
MAX_CHUNKS_PER_FILE = 1_000_000


def _chunk_count(frame: Any, chunks) -> tuple[int, bool] | None:
    """Dask chunks ``rioxarray.open_rasterio(..., chunks=chunks)`` would make of one file, without making them.

    Returns ``(count, exact)``; ``exact`` is False for a lower bound, enough to refuse an absurd
    header without building its chunk tuples. "auto" mixed with explicit sizes is estimated as
    dask sizes it on the file's blocks. ``None`` for forms of ``chunks`` left to dask to judge.
    """
    shape = (frame.count, *frame.shape)
    if isinstance(chunks, bool) or (isinstance(chunks, str) and chunks == "auto"):
        spec = (1, "auto", "auto")  # what rioxarray asks dask for
    elif isinstance(chunks, dict):
        spec = tuple(chunks.get(dim, -1) for dim in ("band", "y", "x"))
    elif isinstance(chunks, (int, np.integer)):
        spec = (int(chunks),) * 3
    else:
        return None

    def explicit(n: int, c) -> int:  # chunks along one dim of n; "auto", -1 and None count 1 here
        if isinstance(c, (tuple, list)):
            return len(c)
        return (
            math.ceil(n / c)
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0
            else 1
        )

    # explicit sizes first: their product alone may already be too large to build the "auto" ones
    count = math.prod(explicit(n, c) for n, c in zip(shape, spec))
    if count > MAX_CHUNKS_PER_FILE or not any(isinstance(c, str) and c == "auto" for c in spec):
        return count, True
    import dask
    from dask.array.core import normalize_chunks
    from dask.utils import parse_bytes

    try:
        dtype = np.dtype(frame.dtype)
        if spec == (1, "auto", "auto"):  # chunks of at most a few times dask's array.chunk-size
            limit = 4 * parse_bytes(dask.config.get("array.chunk-size"))
            bound = frame.count * math.ceil(
                frame.shape[0] * frame.shape[1] * dtype.itemsize / limit
            )
            if bound > MAX_CHUNKS_PER_FILE:
                return bound, False
        sizes = normalize_chunks(spec, shape, dtype=dtype, previous_chunks=(1, *frame.block_shape))
    except (TypeError, ValueError):
        return None
    return math.prod(len(c) for c in sizes), True


def check_chunk_count(frame: Any, chunks) -> None:
    """Refuse a lazy read that would split one file into more than ``MAX_CHUNKS_PER_FILE`` dask chunks."""
    found = _chunk_count(frame, chunks)
    if found is None or found[0] <= MAX_CHUNKS_PER_FILE:
        return
    count, exact = found
    height, width = frame.shape
    side = 256
    while math.ceil(height / side) * math.ceil(width / side) > MAX_CHUNKS_PER_FILE and side < max(
        height, width
    ):
        side *= 2
    raise ConfigError(
        f"{frame.path}: reading its {height} × {width} px × {frame.count} band(s) lazily with chunks={chunks!r} "
        f"would make {'' if exact else 'at least '}{count:,} dask chunks, more than the {MAX_CHUNKS_PER_FILE:,} "
        f"allowed per file (building the graph alone takes ~10 s per million chunks); pass larger chunks, e.g. "
        f"chunks={{'y': {side}, 'x': {side}}}, or check the file if it should not be that large"
    )
