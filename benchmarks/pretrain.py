"""Pretrain the packaged image models: a ConvGRU and a ConvLSTM that read 1 m RGB images with 64 px
tiles, trained on synthetic cities that the demo never shows.

``make demo`` starts each model from these weights and fine-tunes it on the shipped sample
(``TrafficForecaster.fit(..., init=...)``): two days of images are too few to teach a recurrent
forecaster the daily cycle, queues and incidents from scratch.

Run: ``python benchmarks/pretrain.py [--models convgru convlstm] [--city-seeds 21 22 23 24]
[--days 7] [--start 2024-05-27] [--minutes 30] [--count-share 0.25]``; writes the models to
``trafficrnn/weights/<model>_1m64/`` (``--out-dir``; weights stored in float16, read back as
float32) and ``benchmarks/results/pretrain_<models>.json`` (``--out``) with the command, the
machine, the cities and each model's training summary.

The cities: ``simulate(512, days=7, step="15min", seed=s, start="2024-05-27", clouds=True,
cloud_cover=0.05)`` for the seeds 21-24 (the sample is seed 0), the week before the sample's first
day, laid out 2 x 2 side by side as one 1,024 px scene (:func:`side_by_side`: 16 x 16 cells of four
cities' streets, traffic, incidents and weather), their frames JPEG-compressed as
``write_simulation`` stores them (``trafficrnn.io.as_stored``). One city alone is
``--city-seeds 1``; the packaged ConvGRU is four weeks of one city, ``--models convgru --city-seeds 1
--days 28 --start 2024-05-06`` (on the demo's protocol the four cities made it worse, see
``benchmarks/README.md``); the packaged ConvLSTM was made with the defaults (nine cities of three
days, 3 x 3, were worse for both models there). Settings: those of
``forecaster_testbed.py``'s image variant (``accuracy_synthetic.SETTINGS``, ``linear_lags=3``,
early stopping on the last 15 % of the frames, ``patience=6``, at most 20 epochs, ``max_time``
minutes of which the count fine-tuning takes at most ``--count-share`` (:data:`COUNT_SHARE`, a
quarter, as ``trainer_kwargs["count_share"]``; fit's default from the count front,
``trafficrnn.counting.FINETUNE_SHARE``, is sized for the minutes of a fine-tuning, and over 30
minutes it left the forecaster too little; a fine-tuning from the packaged models gets the default
again, ``trafficrnn.zoo.FINE_TUNE``). Run it on an idle machine, one model per process (the
cities take about 19 GB). No frame is held out for a test: the pretrained models are scored where
they are used, on the sample and on other cities made as it is (``benchmarks/demo_transfer.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine  # benchmarks/_machine.py
from accuracy_synthetic import MODEL_SETTINGS, SETTINGS

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
CITY = dict(step="15min", clouds=True, cloud_cover=0.05)
PROTOCOL = {"val": 0.15, "test": 0.0, "patience": 6, "max_epochs": 20}
IMAGES = {"linear_lags": 3, "tile_size": 64}
#: share of the pretraining's minutes the count fine-tuning may take (both packaged models)
COUNT_SHARE = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--city-seeds",
        type=int,
        nargs="+",
        default=[21, 22, 23, 24],
        help="one city, or a square number of cities laid side by side (2 x 2 for 4)",
    )
    parser.add_argument("--start", default="2024-05-27", help="first day of the cities")
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--minutes", type=float, default=30.0, help="max_time of each fit")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--count-share",
        type=float,
        default=COUNT_SHARE,
        help="share of --minutes the count fine-tuning (stage A) may take",
    )
    parser.add_argument("--out-dir", default=str(ROOT / "trafficrnn" / "weights"))
    parser.add_argument("--out", default=None, help="default: results/pretrain_<models>.json")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / f"pretrain_{'_'.join(args.models)}.json")

    from trafficrnn import TrafficForecaster
    from trafficrnn.io import as_stored
    from trafficrnn.synth import simulate

    Path(args.out_dir).mkdir(parents=True, exist_ok=True)  # before the hours of training
    started = time.perf_counter()
    side = math.isqrt(len(args.city_seeds))
    if side * side != len(args.city_seeds):
        parser.error(f"--city-seeds: expected 1, 4, 9, ... cities, got {len(args.city_seeds)}")
    cities = []
    for seed in args.city_seeds:
        sim = simulate(args.size, days=args.days, seed=seed, start=args.start, **CITY)
        # as the written stack reads them back (JPEG in YCbCr, clouds nodata), like the sample the
        # models are fine-tuned and scored on: frames of another codec are other pixels to a counter
        cities.append((as_stored(sim.images), sim.density, sim.vehicles))
        del sim
    images, target, points = side_by_side(cities, side)
    del cities
    sim_s = time.perf_counter() - started
    runs = []
    for name in args.models:
        settings = {**SETTINGS, **MODEL_SETTINGS.get(name, {}), **PROTOCOL, **IMAGES}
        est = TrafficForecaster(
            name,
            max_time=args.minutes,
            seed=args.seed,
            progress=False,
            **grouped(settings, dict(precision="32-true", count_share=args.count_share)),
        )
        t0 = time.perf_counter()
        est.fit(images, target, vehicles=points)
        wall = time.perf_counter() - t0
        folder = Path(args.out_dir) / f"{name}_1m64"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        est.save(tmp, half=True)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        summary = est.training_summary_
        runs.append(
            {
                "model": name,
                "folder": str(folder.relative_to(ROOT))
                if folder.is_relative_to(ROOT)
                else str(folder),
                "parameters": summary.get("parameters"),
                "epochs": summary.get("epochs"),
                "counting": summary.get("counting"),
                "val_loss": summary.get("best_val_loss"),
                "wall_seconds": round(wall, 1),
                "bytes": sum(p.stat().st_size for p in folder.iterdir()),
            }
        )
        print(runs[-1], flush=True)
        del est  # the next model's fit must not share memory with this one's (28 days of images)
        gc.collect()
        write_result(args, images, target, sim_s, runs)  # after each model: a later crash keeps it


def side_by_side(cities: list, side: int) -> tuple:
    """Lay ``side`` x ``side`` cities (images, density, vehicle points) of the same times, GSD and
    size out as one scene, row by row from the first city's top-left corner (the scene's grids are
    the first city's, widened; points shifted): one stack whose cells hold several cities' streets
    and traffic."""
    import xarray as xr

    from trafficrnn import Grid

    if side == 1:
        return cities[0]
    times = cities[0][0].time.values
    if any(not np.array_equal(images.time.values, times) for images, *_ in cities):
        raise ValueError("the cities laid side by side must share their times")
    stacks = []
    for part in (0, 1):  # images, density
        first = cities[0][part]
        # np.block joins the inner lists along x and the outer list along y
        values = np.block(
            [[cities[r * side + c][part].values for c in range(side)] for r in range(side)]
        )
        grid = Grid(
            first.rio.crs, first.rio.transform(), values.shape[-2:], first.attrs["tile_size"]
        )
        da = xr.DataArray(
            values,
            dims=first.dims,
            coords={"time": first.time, "band": first.band},
            attrs=first.attrs,
            name=first.name,
        )
        stacks.append(grid.attach(da))
    origin = cities[0][0].rio.transform()
    width, height = cities[0][0].sizes["x"] * origin.a, cities[0][0].sizes["y"] * -origin.e
    moved = []
    for k, (images, _, points) in enumerate(cities):
        row, col = divmod(k, side)
        own = images.rio.transform()
        dx, dy = origin.c + col * width - own.c, origin.f - row * height - own.f
        moved.append(points.set_geometry(points.translate(dx, dy)))
    return stacks[0], stacks[1], pd.concat(moved, ignore_index=True)


def write_result(args, images, target, sim_s: float, runs: list) -> None:
    """Write the results JSON: the command, the machine, the city and the runs so far."""
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {
            "size": args.size,
            "days": args.days,
            "seeds": args.city_seeds,
            **CITY,
            "start": args.start,
            "frames": images.sizes["time"],
            "grid": [target.sizes["y"], target.sizes["x"]],
            "mean_vehicles_per_cell": round(float(target.mean()), 4),
            "simulate_seconds": round(sim_s, 1),
        },
        "settings": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in {**SETTINGS, **PROTOCOL, **IMAGES}.items()
        },
        "max_time_minutes": args.minutes,
        "count_share": args.count_share,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
