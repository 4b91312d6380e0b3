"""Large-area tiled inference: wall time, throughput and peak RSS for three area sizes (4x apart), and the
speed-up from 1 to 2 dask workers; writes benchmarks/results/large_area.json.

Run: ``python benchmarks/large_area.py [--size 8192] [--keep]``. A 12-frame RGB stack of
``size × size`` px is generated procedurally, written strip by strip with rasterio (never held in
memory) in a temporary folder, and deleted afterwards. The model is a tiny image-path model
trained for one epoch on a small separate stack: the benchmark measures memory and throughput,
not forecast skill. Each area runs in a fresh process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from trafficrnn.params import grouped

# GDAL's block cache defaults to 5 % of RAM and would count in the peak RSS; a fixed small cache
# (set before GDAL starts, inherited by dask workers) keeps the memory a function of the window.
os.environ.setdefault("GDAL_CACHEMAX", "64")
# glibc keeps freed buffers of a few MB (dask chunks) in a fragmented heap; a fixed 1 MB mmap threshold
# hands them back to the OS, so that the peak RSS measures what a window needs, not heap history.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import rasterio  # noqa: E402
from _machine import cpu  # noqa: E402  (benchmarks/_machine.py)
from affine import Affine  # noqa: E402

CRS = "EPSG:32633"
ORIGIN = Affine(1.0, 0.0, 600000.0, 0.0, -1.0, 5350000.0)  # 1 m pixels in UTM 33N
TIMES = pd.date_range("2024-06-05T08:00", periods=12, freq="5min")
TILE, WINDOW = 16, 64  # px per cell; window core in cells (1024 px)
MODEL = dict(
    tile_size=TILE,
    input_steps=6,
    horizon=3,
    hidden=(8,),
    encoder_width=8,
    encoder_depth=0,
    max_epochs=1,
    batch_size=8,
    progress=False,
    time_features=False,
)


def texture(t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A cheap random-looking RGB uint8 texture with moving 'vehicles': (3, len(rows), len(cols))."""
    y, x = rows[:, None].astype(np.uint32), cols[None, :].astype(np.uint32)
    h = (x * 73856093) ^ (y * 19349663) ^ np.uint32(t * 83492791)
    base = ((x // 7 + y // 11) % 64 + 96).astype(np.uint8)
    cars = (((x + 3 * t) // 5 + y // 5) % 23 == 0).astype(np.uint8) * 90
    noise = (h >> 24).astype(np.uint8) // 8
    return np.stack([base + noise + cars, base + noise // 2, base + cars // 2 + noise // 3])


def write_stack(folder: Path, size: int, strip: int = 512) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, when in enumerate(TIMES):
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=3,
            dtype="uint8",
            crs=CRS,
            transform=ORIGIN,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            BIGTIFF="IF_SAFER",
        )
        with rasterio.open(folder / f"frame_{when:%Y%m%dT%H%M%S}.tif", "w", **profile) as dst:
            dst.update_tags(TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"))
            for r0 in range(0, size, strip):
                rows = np.arange(r0, min(size, r0 + strip))
                dst.write(
                    texture(t, rows, np.arange(size)),
                    window=rasterio.windows.Window(0, r0, size, len(rows)),
                )


def train(folder: Path) -> None:
    """A tiny image-path model, one epoch on a 256 × 256 px stack of 30 frames with a density target."""
    import xarray as xr

    from trafficrnn import Grid, TrafficForecaster

    times = pd.date_range("2024-06-04T08:00", periods=30, freq="5min")
    idx = np.arange(256)
    images = np.stack([texture(t, idx, idx) for t in range(30)]).astype("float32")
    pixels = Grid(CRS, ORIGIN, (256, 256))
    images = pixels.attach(
        xr.DataArray(
            images,
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["red", "green", "blue"]},
        )
    )
    cells = Grid(CRS, ORIGIN @ Affine.scale(TILE), (256 // TILE, 256 // TILE))
    density = images.isel(band=[0]).coarsen(y=TILE, x=TILE).mean().values / 50.0
    target = cells.attach(
        xr.DataArray(
            density.astype("float32"),
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
        )
    )
    TrafficForecaster("convgru", **grouped(MODEL)).fit(images, target).save(folder, overwrite=True)


def child(args: argparse.Namespace) -> None:
    """One forecast in this fresh process; prints a JSON line with wall time and peak RSS."""
    import torch

    from trafficrnn import TrafficForecaster
    from trafficrnn.inference import connect, forecast_large
    from trafficrnn.io import read_stack

    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    model = TrafficForecaster.load(args.model)
    stack = read_stack(args.stack, chunks={"y": 512, "x": 512})
    area = stack.isel(y=slice(0, args.area), x=slice(0, args.area))
    client = (
        connect(
            None,
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        if args.workers
        else None
    )
    started = time.perf_counter()
    forecast_large(model, area, Path(args.out), window=WINDOW, client=client, overwrite=True)
    wall = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = []
    if client is not None:
        workers = sorted(
            client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values()
        )
        client.close()
    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss, "worker_peak_rss_mb": workers}))


def run(script: Path, model: Path, stack: Path, out: Path, area: int, workers: int = 0) -> dict:
    cmd = [
        sys.executable,
        str(script),
        "--child",
        "--model",
        str(model),
        "--stack",
        str(stack),
        "--out",
        str(out),
        "--area",
        str(area),
        "--workers",
        str(workers),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mpx = area * area / 1e6
    result.update(
        area_px=area,
        area_cells=area // TILE,
        km2=mpx,
        megapixels_per_frame=mpx,
        km2_per_s=round(mpx / result["wall_s"], 3),
        windows=(-(-(area // TILE) // WINDOW)) ** 2,
    )
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size", type=int, default=8192, help="side of the largest area in px (>= 8192)"
    )
    parser.add_argument(
        "--dask-area", type=int, default=4096, help="area side for the 1 vs 2 workers runs"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated stack")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--model", "--stack", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--area", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    script = Path(__file__).resolve()
    work = Path(tempfile.mkdtemp(prefix="trafficrnn-large-", dir=script.parent))
    try:
        started = time.perf_counter()
        write_stack(work / "stack", args.size)
        generate_s = time.perf_counter() - started
        train(work / "model")
        out = work / "forecast.tif"
        sizes = [args.size // 4, args.size // 2, args.size]
        areas = [run(script, work / "model", work / "stack", out, s) for s in sizes]
        dask = {
            n: run(script, work / "model", work / "stack", out, args.dask_area, workers=n)
            for n in (1, 2)
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rss = [a["peak_rss_mb"] for a in areas]
    times = [a["wall_s"] for a in areas]
    result = {
        "command": "python benchmarks/large_area.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "note": (
            "memory and throughput benchmark: a tiny image-path ConvGRU (tile 16 px, hidden 8, width 8) trained "
            "for one epoch on a separate 256 px stack; forecast skill is not measured. Input: 12 RGB uint8 "
            f"frames of {args.size} px (1 m, EPSG:32633), generated procedurally, written strip by strip, "
            f"read lazily with 512 px dask chunks; windows of {WINDOW} cells ({WINDOW * TILE} px) plus the "
            "receptive-field halo; areas are the top-left squares of the stack; each run in a fresh process"
        ),
        "model": MODEL,
        "window_cells": WINDOW,
        "generate_stack_s": round(generate_s, 1),
        "areas": areas,
        "rss_ratio_largest_to_smallest": round(rss[-1] / rss[0], 3),
        "time_ratio_per_4x_area": [round(b / a, 2) for a, b in zip(times, times[1:])],
        "dask": {
            "area_px": args.dask_area,
            "one_worker": dask[1],
            "two_workers": dask[2],
            "speedup_1_to_2_workers": round(dask[1]["wall_s"] / dask[2]["wall_s"], 2),
            "note": "LocalCluster(processes=True, threads_per_worker=1); each worker's torch uses 1 thread "
            "(the nanny sets OMP_NUM_THREADS=1); the model ships once per worker by a WorkerPlugin",
        },
    }
    path = script.parent / "results" / "large_area.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
