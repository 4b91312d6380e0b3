"""Does a counting encoder generalise from one day to the next, and does learning from several
synthetic cities help? The tile encoder's density head alone, outside the estimator.

Run: ``python benchmarks/counting_cities.py [--size 512] [--seconds 240] [--cities 1 4]``; writes
``benchmarks/results/counting_cities.json`` (``--out``) with the command, the machine and the numbers.

City 0 (seed 7) is simulated for two days: the encoder learns from its first day (Monday) and is
scored on every third frame of the second (Tuesday), which it never sees. ``--cities N`` adds the
first day of N - 1 other cities (seeds 8, 9, ...: other road layouts, buildings and traffic) to the
frames it learns from. Each setting trains the same encoder (the estimator's default for 64 px tiles:
no stem, strides 4, 2, 2, 2, 2; density read at 8 px) for the same wall time with Adam and a cosine
learning-rate decay, on random 128 px crops (whole cells), against the point counts of 8 px
sub-cells smoothed as in :mod:`trafficrnn.counting`. Scores on Tuesday, against the true counts per
64 m cell: MAE / mean count of the occupied cells, and the mean relative error of the scene total,
over all scored frames and over the daylight ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import cpu  # benchmarks/_machine.py

ROOT = Path(__file__).resolve().parent.parent
TILE, UNIT, CROP = 64, 8, 128


def city(seed: int, size: int, days: int):
    """Raw images (T, 3, H, W) float32, fine counts (T, 1, H/8, W/8), true cell counts (T, 1, h, w)."""
    from trafficrnn.counting import fine_target
    from trafficrnn.grid import Grid
    from trafficrnn.synth import simulate

    r = simulate(
        size, days=days, step="15min", seed=seed, tile_size=TILE, gsd=1.0, start="2024-06-03"
    )
    fine, _ = fine_target(r.images, Grid.from_image(r.images, TILE), UNIT, vehicles=r.vehicles)
    return (
        np.asarray(r.images.values, dtype="float32"),
        fine,
        np.asarray(r.density.values, dtype="float32"),
    )


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    occupied = truth[truth > 0].mean()
    totals = np.abs(pred.sum(axis=(1, 2, 3)) - truth.sum(axis=(1, 2, 3))) / truth.sum(
        axis=(1, 2, 3)
    )
    return {
        "mae_over_mean_occupied": round(float(np.abs(pred - truth).mean() / occupied), 4),
        "total_rel_error": round(float(totals.mean()), 4),
        "frames": int(len(truth)),
    }


def train_and_score(
    x_train, fine_train, x_test, truth, daylight, seconds: float, lr: float, seed: int
) -> dict:
    from trafficrnn.counting import smooth
    from trafficrnn.models.encoder import TileEncoder

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = TileEncoder(3, TILE, width=16, depth=1, stem=False, strides=[4, 2, 2, 2, 2])
    head = torch.nn.Conv2d(enc.stage_channels(1), 1, 1)
    torch.nn.init.constant_(head.bias, -0.5)

    def density(xb):
        return F.softplus(8 * head(enc.forward_with_stage(xb[:, None], 1)[1])) / 8

    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr)
    x, target = torch.from_numpy(x_train), smooth(torch.from_numpy(fine_train))
    k, span = TILE // UNIT, x_train.shape[-1] - CROP
    started, steps = time.perf_counter(), 0
    while (spent := time.perf_counter() - started) < seconds:
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * spent / seconds)))
        idx = rng.choice(len(x), 8)
        r0, c0 = (int(v) * TILE for v in rng.integers(0, span // TILE + 1, 2))
        d = density(x[idx, :, r0 : r0 + CROP, c0 : c0 + CROP])
        y = target[idx, :, r0 // UNIT : (r0 + CROP) // UNIT, c0 // UNIT : (c0 + CROP) // UNIT]
        loss = ((d - y) ** 2).mean() * k * k + ((F.avg_pool2d(d - y, k) * k * k) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    with torch.inference_mode():
        pred = torch.cat(
            [density(torch.from_numpy(x_test[i : i + 4])) for i in range(0, len(x_test), 4)]
        ).numpy()
    t, _, h, w = truth.shape
    cells = pred.reshape(t, 1, h, k, w, k).sum(axis=(3, 5))
    return {
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "tuesday": scores(cells, truth),
        "tuesday_daylight": scores(cells[daylight], truth[daylight]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--seconds", type=float, default=240, help="Training wall time of each setting."
    )
    parser.add_argument("--cities", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "counting_cities.json")
    )
    args = parser.parse_args()

    per_day = 96
    img0, fine0, dens0 = city(7, args.size, 2)
    others = [city(7 + i, args.size, 1) for i in range(1, max(args.cities))]
    test = np.arange(per_day + 1, 2 * per_day, 3)
    raw_test, truth = img0[test], dens0[test]
    daylight = (
        raw_test.mean(axis=(1, 2, 3)) > 45
    )  # mean brightness of the uint8 frame: the sun is up
    runs = {}
    for n in args.cities:
        raw = np.concatenate([img0[:per_day]] + [o[0] for o in others[: n - 1]])
        fine = np.concatenate([fine0[:per_day]] + [o[1] for o in others[: n - 1]])
        mean, std = raw.mean(axis=(0, 2, 3), keepdims=True), raw.std(axis=(0, 2, 3), keepdims=True)
        runs[f"{n}_cities"] = {
            "frames": int(len(raw)),
            **train_and_score(
                ((raw - mean) / std).astype("float32"),
                fine,
                ((raw_test - mean) / std).astype("float32"),
                truth,
                daylight,
                args.seconds,
                args.lr,
                seed=0,
            ),
        }
        print(n, json.dumps(runs[f"{n}_cities"]), flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "setting": {
            "size_px": args.size,
            "gsd_m": 1.0,
            "tile_size": TILE,
            "sub_cell_px": UNIT,
            "crop_px": CROP,
            "seconds": args.seconds,
            "lr": args.lr,
            "test_frames": int(len(test)),
            "daylight_frames": int(daylight.sum()),
        },
        "goals": {"mae_over_mean_occupied": 0.10, "total_rel_error": 0.03},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
