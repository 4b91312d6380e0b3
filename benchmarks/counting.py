"""Counting accuracy of the tile encoder on held-out frames of a synthetic city: point-supervised
counting (``counting=True`` with the vehicle points) starting from the packaged count front
(trained on other cities by ``benchmarks/count_front.py``), the same from scratch (the front
hidden), and an encoder trained by the forecast loss plus the nowcast auxiliary loss on the cell
counts, in the same run.

Run: ``python benchmarks/counting.py [--size 1024] [--tile-size 64] [--days 3] [--minutes 4]
[--max-epochs 30] [--score-on test|val] [--seed 0] [--variants point_supervised ...]``; writes ``benchmarks/results/counting.json`` (``--out``)
with the command, the machine and the numbers.

Frames are split chronologically as ``TrafficForecaster`` splits them (the last 15 % test, the
15 % before validation). ``--score-on val`` is the tuning protocol: the test frames are dropped
before anything is fitted and the scores are those of the held-out last 15 % of the rest.
The frames are read as the written stack stores them (JPEG, ``trafficrnn.io.as_stored``).
Scores, per cell and frame against the simulator's true counts (``r.density``): MAE, RMSE, the MAE
relative to the mean count of the occupied cells, and the relative error of the city total (mean
over frames of ``|sum pred - sum true| / sum true``, and that of the sum over every scored frame).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine  # benchmarks/_machine.py

from trafficrnn.params import grouped
from trafficrnn.windows import pixel_values

ROOT = Path(__file__).resolve().parent.parent
#: settings shared by both encoders (the forecaster is small: the comparison is about counting)
SETTINGS = dict(
    input_steps=6, horizon=3, hidden=(16,), batch_size=8, patience=4, progress=False, seed=0
)
#: name -> (point-supervised counting, starting from the packaged count front)
VARIANTS = {
    "point_supervised": (True, True),
    "point_supervised_scratch": (True, False),
    "forecast_nowcast": (False, False),
}


def nowcast(est, images) -> np.ndarray:
    """The model's vehicle counts per cell of every frame, raw units ``(T, C, rows, cols)``."""
    images, _ = est._prepare(images)
    x = est.input_normalizer_.transform(pixel_values(images), band_axis=1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 8):
            out.append(est.model_.nowcast(torch.from_numpy(x[i : i + 8])[None])[0].numpy())
    counts = est.target_normalizer_.inverse_transform(np.concatenate(out), band_axis=1)
    return np.clip(counts, 0, None)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cell MAE / RMSE, MAE relative to the mean occupied-cell count, city-total relative errors."""
    ok = np.isfinite(truth)
    err = (pred - truth)[ok]
    occupied = truth[ok & (truth > 0)]
    totals_p = np.where(ok, pred, 0).sum(axis=(1, 2, 3))
    totals_t = np.where(ok, truth, 0).sum(axis=(1, 2, 3))
    keep = totals_t > 0
    return {
        "cell_mae": round(float(np.abs(err).mean()), 4),
        "cell_rmse": round(float(np.sqrt((err**2).mean())), 4),
        "mean_occupied_count": round(float(occupied.mean()), 4),
        "mae_over_mean_occupied": round(float(np.abs(err).mean() / occupied.mean()), 4),
        "total_rel_error_per_frame": round(
            float(np.mean(np.abs(totals_p - totals_t)[keep] / totals_t[keep])), 4
        ),
        "total_rel_error_all_frames": round(
            float(abs(totals_p.sum() - totals_t.sum()) / totals_t.sum()), 4
        ),
        "total_bias": round(float(totals_p.sum() / totals_t.sum() - 1), 4),
        "frames": int(len(truth)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument(
        "--minutes", type=float, default=4, help="Training time limit of each model."
    )
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--score-on", choices=("test", "val"), default="test")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="training seed")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "counting.json"))
    args = parser.parse_args()

    from trafficrnn import counting as counting_module
    from trafficrnn.estimator import TrafficForecaster
    from trafficrnn.io import as_stored
    from trafficrnn.synth import simulate

    t0 = time.perf_counter()
    r = simulate(args.size, days=args.days, step="15min", seed=7, tile_size=args.tile_size, gsd=1.0)
    sim_s = time.perf_counter() - t0
    # the frames as the written stack reads them back (JPEG, clouds nodata), as a user's files are
    images, density, vehicles = as_stored(r.images), r.density, r.vehicles
    n = images.sizes["time"]
    if args.score_on == "val":  # drop the test frames: nothing below sees them
        n = n - int(round(0.15 * n))
        images, density = images.isel(time=slice(0, n)), density.isel(time=slice(0, n))
        vehicles = vehicles[
            vehicles["time"]
            < images.time.values[-1] + (images.time.values[1] - images.time.values[0])
        ]
    n_scored = int(round(0.15 * n))
    scored = slice(n - n_scored, n)
    truth = np.asarray(density.isel(time=scored).values, dtype="float32")
    runs = {}
    packaged = counting_module.FRONT
    settings = {**SETTINGS, "seed": args.seed}
    for name in args.variants:
        counting, from_front = VARIANTS[name]
        front = packaged if from_front else None
        # the scratch run hides the packaged count front: the encoder learns to count from this city alone
        counting_module.FRONT = (
            front if front is not None else Path("/nonexistent/count_front.safetensors")
        )
        est = TrafficForecaster(
            "convgru",
            tile_size=args.tile_size,
            max_time=args.minutes,
            **grouped(settings, dict(max_epochs=args.max_epochs, counting=counting)),
        )
        t0 = time.perf_counter()
        if counting:
            est.fit(images, vehicles=vehicles)
        else:
            est.fit(images, density)
        counting_module.FRONT = packaged
        train_s = time.perf_counter() - t0
        pred = nowcast(est, images.isel(time=scored))
        summary = est.training_summary_
        runs[name] = {
            **scores(pred, truth),
            "train_seconds": round(train_s, 1),
            "epochs": summary["epochs"],
            "counting_stages": summary.get("counting"),
            "count_stage": est.model_.config.get("count_stage"),
            "parameters": summary["parameters"],
        }
        print(name, json.dumps(runs[name]), flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {
            "size_px": args.size,
            "gsd_m": 1.0,
            "tile_size": args.tile_size,
            "days": args.days,
            "step": "15min",
            "seed": 7,
            "frames": int(images.sizes["time"]),
            "simulate_seconds": round(sim_s, 1),
        },
        "protocol": {
            "scored_on": args.score_on,
            "scored_frames": [int(scored.start), int(scored.stop)],
            "max_minutes": args.minutes,
            "max_epochs": args.max_epochs,
        },
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "goals": {"mae_over_mean_occupied": 0.10, "total_rel_error": 0.03},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
