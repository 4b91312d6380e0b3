"""Shared fixtures: tiny GeoTIFFs written with rasterio itself, with a known CRS and transform."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

os.environ.setdefault("MPLBACKEND", "Agg")

# pytest-xdist: its workers share the cores, and torch's default of one thread per core in each of
# them oversubscribes them: OpenMP threads waiting on each other made the small fits of the tests
# ten times slower. Each worker gets its share of the cores (before torch is imported; subprocesses
# inherit it) unless the caller set the thread count.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (_CORES or 1) // _WORKERS)))

# a 0.5 m image grid in UTM 33N (Vienna), and a 0.001° grid in WGS 84
UTM_CRS = "EPSG:32633"
UTM_TRANSFORM = Affine(0.5, 0.0, 601000.0, 0.0, -0.5, 5340000.0)
WGS_CRS = "EPSG:4326"
WGS_TRANSFORM = Affine(0.001, 0.0, 16.36, 0.0, -0.001, 48.21)


def write_tif(
    path,
    data,
    *,
    crs=UTM_CRS,
    transform=UTM_TRANSFORM,
    nodata=None,
    datetime=None,
    descriptions=None,
    band_tags=None,
    dtype=None,
):
    """Write ``data`` (bands, rows, cols) as a GeoTIFF with rasterio directly (independent of trafficrnn)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    dtype = dtype or data.dtype
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=dtype,
        transform=transform,
        nodata=nodata,
    )
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
        if datetime:
            dst.update_tags(TIFFTAG_DATETIME=datetime)
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
        for i, tags in enumerate(band_tags or [], start=1):
            dst.update_tags(i, **tags)
    return Path(path)


def frame_values(t: int, bands: int = 3, height: int = 8, width: int = 12) -> np.ndarray:
    """Distinct, exactly representable values for frame ``t``: 1000 t + 100 b + 10 row + col / 10."""
    b, r, c = np.meshgrid(np.arange(bands), np.arange(height), np.arange(width), indexing="ij")
    return (1000 * t + 100 * b + 10 * r + c / 10).astype("float32")


@pytest.fixture
def utm_stack(tmp_path) -> Path:
    """Three 3-band frames, 8 × 12 px, every 5 minutes, times in the file names."""
    folder = tmp_path / "stack"
    folder.mkdir()
    for t in range(3):
        write_tif(folder / f"frame_2024-05-01T08-{5 * t:02d}.tif", frame_values(t))
    return folder
