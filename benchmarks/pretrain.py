"""Pretrain the packaged image models: a ConvGRU and a ConvLSTM that read 1 m RGB images with 64 px
tiles, trained on a month of a synthetic city that the demo never shows.

``make demo`` starts each model from these weights and fine-tunes it on the shipped sample
(``TrafficForecaster.fit(..., init=...)``): two days of images are too few to teach a recurrent
forecaster the daily cycle, queues and incidents from scratch, a month of another city is enough.

Run: ``python benchmarks/pretrain.py [--days 28] [--city-seed 1] [--models convgru convlstm]
[--minutes 30] [--count-share 0.25]``; writes the models to ``trafficrnn/weights/<model>_1m64/``
(``--out-dir``; weights stored in float16, read back as float32) and ``benchmarks/results/pretrain_<models>.json`` (``--out``) with
the command, the machine, the city and each model's training summary.

The city: ``simulate(512, days=28, step="15min", seed=1, start="2024-05-06", clouds=True,
cloud_cover=0.05)``, the four weeks before the sample's first day, with other roads, buildings,
incidents and weather (the sample is seed 0), its frames JPEG-compressed as ``write_simulation``
stores them (``trafficrnn.io.as_stored``). Settings: those of ``forecaster_testbed.py``'s image
variant (``accuracy_synthetic.SETTINGS``, ``linear_lags=3``, early stopping on the last 15 % of the
frames, ``patience=6``, at most 20 epochs, ``max_time`` minutes of which the count fine-tuning takes
at most ``--count-share`` (:data:`COUNT_SHARE`, a quarter; fit's own share,
``trafficrnn.counting.FINETUNE_SHARE``, is sized for the minutes of a fine-tuning, and over 30
minutes it left the forecaster too little). Both packaged models were made with the defaults; run
it on an idle machine. No frame is held out for a test: the pretrained models are scored where they
are used, on the sample (``benchmarks/demo_transfer.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

from _machine import machine  # benchmarks/_machine.py
from accuracy_synthetic import MODEL_SETTINGS, SETTINGS

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
CITY = dict(step="15min", start="2024-05-06", clouds=True, cloud_cover=0.05)
PROTOCOL = {"val": 0.15, "test": 0.0, "patience": 6, "max_epochs": 20}
IMAGES = {"linear_lags": 3, "tile_size": 64}
#: share of the pretraining's minutes the count fine-tuning may take (both packaged models)
COUNT_SHARE = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--city-seed", type=int, default=1)
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
    # fit reads its share from here when it fine-tunes the count front
    import trafficrnn.estimation.fitting as fitting

    fitting.FINETUNE_SHARE = args.count_share
    started = time.perf_counter()
    sim = simulate(args.size, days=args.days, seed=args.city_seed, **CITY)
    sim_s = time.perf_counter() - started
    # as the written stack reads them back (JPEG in YCbCr, clouds nodata), like the sample the
    # models are fine-tuned and scored on: frames of another codec are other pixels to a counter
    images, target, points = as_stored(sim.images), sim.density, sim.vehicles
    del sim
    runs = []
    for name in args.models:
        settings = {**SETTINGS, **MODEL_SETTINGS.get(name, {}), **PROTOCOL, **IMAGES}
        est = TrafficForecaster(
            name,
            max_time=args.minutes,
            seed=args.seed,
            progress=False,
            **grouped(settings, dict(precision="32-true")),
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


def write_result(args, images, target, sim_s: float, runs: list) -> None:
    """Write the results JSON: the command, the machine, the city and the runs so far."""
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {
            "size": args.size,
            "days": args.days,
            "seed": args.city_seed,
            **CITY,
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
