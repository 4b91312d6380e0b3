"""Long fuzzing run of the readers: mutated GeoTIFF / GeoPackage bytes must give a result or a TrafficRNNError.

    python benchmarks/fuzz_readers.py --seconds 600 [--seed 0] [--out crashes/]

Each case runs in this process with a per-case time limit (a hang is reported). Inputs that
raise anything else are saved under ``--out`` with the traceback; the exit status is 1 then.
The bounded version runs in ``make test`` (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trafficrnn import Grid  # noqa: E402
from trafficrnn.errors import TrafficRNNError  # noqa: E402
from trafficrnn.io import rasterize_points, read_stack, read_vectors, to_geotiff  # noqa: E402

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))


def make_seeds(folder: Path) -> dict[str, list[bytes]]:
    import rasterio

    da = GRID.attach(
        xr.DataArray(
            np.arange(40, dtype="float32").reshape(2, 1, 4, 5),
            dims=("time", "band", "y", "x"),
            coords={
                "time": pd.date_range("2024-05-01", periods=2, freq="15min"),
                "band": ["density"],
            },
        )
    )
    tifs = [to_geotiff(da, folder / "cog.tif").read_bytes()]
    with rasterio.open(
        folder / "frame.tif",
        "w",
        driver="GTiff",
        width=12,
        height=8,
        count=3,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(0.001, 0, 16.3, 0, -0.001, 48.2),
        nodata=-1,
    ) as dst:
        dst.write(np.random.default_rng(0).random((3, 8, 12), dtype="float32"))
        dst.update_tags(TIFFTAG_DATETIME="2024:05:01 08:00:00")
        dst.update_tags(1, time="2024-05-01T08:00:00")
    tifs.append((folder / "frame.tif").read_bytes())
    pts = gpd.GeoDataFrame(
        {"time": pd.date_range("2024-05-01", periods=5, freq="min"), "v": range(5)},
        geometry=gpd.points_from_xy(np.arange(5) * 100 + 500050, [4999950] * 5),
        crs="EPSG:32633",
    )
    pts.to_file(folder / "points.gpkg", engine="pyogrio")
    lines = gpd.GeoDataFrame(
        {"lanes": [1, 2]},
        geometry=gpd.GeoSeries.from_wkt(
            [
                "LINESTRING (500000 4999950, 500500 4999950)",
                "LINESTRING (500250 5000000, 500250 4999600)",
            ]
        ),
        crs=32633,
    )
    lines.to_file(folder / "roads.gpkg", engine="pyogrio")
    return {
        "tif": tifs,
        "gpkg": [(folder / "points.gpkg").read_bytes(), (folder / "roads.gpkg").read_bytes()],
    }


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    nonzero = [i for i in range(0, len(b), 7) if b[i]] or [0]
    for _ in range(rng.randint(1, 8)):
        if not b:
            break
        r = rng.random()
        i = rng.choice(nonzero) % len(b) if rng.random() < 0.6 else rng.randrange(len(b))
        if r < 0.55:
            b[i] = rng.randrange(256)
        elif r < 0.8:
            b[i : i + 4] = rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x100, 0x100000]).to_bytes(
                4, "little"
            )
        elif r < 0.9:
            del b[rng.randrange(len(b)) :]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def run_case(kind: str, path: Path, chunks) -> None:
    if kind == "tif":
        np.asarray(read_stack(path, chunks=chunks, allow_gaps=True).values)
    else:
        gdf = read_vectors(path)
        if set(gdf.geom_type) == {"Point"} and "time" in gdf.columns:
            rasterize_points(gdf, GRID, freq="1min")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("case ran past the time limit")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total fuzzing time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--case-limit", type=int, default=10, help="seconds before a case counts as a hang"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("fuzz-crashes"), help="where failing inputs are saved"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)  # GDAL chatter about the broken files
    sys.unraisablehook = lambda unraisable: (
        None
    )  # rasterio's log handler failing on non-UTF-8 messages
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _alarm)
    counts = {"result": 0, "TrafficRNNError": 0, "failure": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seeds = make_seeds(folder)
        deadline = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < deadline:
            kind = rng.choice(["tif", "gpkg"])
            data = mutate(rng, rng.choice(seeds[kind]))
            path = folder / ("m_20240501_0800.tif" if kind == "tif" else "m.gpkg")
            path.write_bytes(data)
            chunks = rng.choice([None, "auto"]) if kind == "tif" else None
            n += 1
            signal.alarm(args.case_limit)
            try:
                run_case(kind, path, chunks)
                counts["result"] += 1
            except TrafficRNNError:
                counts["TrafficRNNError"] += 1
            except BaseException as exc:  # noqa: BLE001 - anything else is a finding
                if isinstance(exc, KeyboardInterrupt):
                    raise
                counts["failure"] += 1
                args.out.mkdir(parents=True, exist_ok=True)
                stem = args.out / f"case{n}-{type(exc).__name__}"
                stem.with_suffix("." + kind).write_bytes(data)
                stem.with_suffix(".txt").write_text(f"chunks={chunks}\n" + traceback.format_exc())
                sys.stderr.write(
                    f"case {n}: {type(exc).__name__}: {str(exc)[:200]} -> {stem}.{kind}\n"
                )
            finally:
                signal.alarm(0)
    sys.stdout.write(f"{n} cases in {args.seconds:g} s: {counts}\n")
    return 1 if counts["failure"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
