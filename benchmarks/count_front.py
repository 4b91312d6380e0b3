"""Train the packaged count front (``trafficrnn/weights/count_front_1m.safetensors``) on several
synthetic cities at 1 m, and score it on a city it never saw.

The count front is the tile encoder's full-resolution stem, its stages up to the 4 px count stage
and the count head: what turns pixels into vehicles per sub-cell. ``TrafficForecaster.fit`` with
vehicle points starts from it where it fits (RGB, about 1 m, the default encoder width) and
fine-tunes it on the user's frames (stage A), so that a short training still counts.

Run: ``python benchmarks/count_front.py [--cities 4] [--size 512] [--days 1] [--minutes 15]
[--init FRONT] [--lr 3e-3] [--score-cities 7] [--width 16] [--gsd 1.0] [--score-size PX]
[--out-weights trafficrnn/weights/count_front_1m.safetensors]``; writes
``benchmarks/results/count_front.json`` (``--out``) with the command, the machine, the cities and
the scores.

``--gsd`` simulates every city at that many metres per pixel, with cells of 64 m (64 / ``gsd``
pixels); the count stage stays at 4 px. The simulator lays out a city and its traffic in metres, so
a seed gives the same vehicles at every GSD: ``--gsd 0.5 --score-size 1024`` scores the same cities,
area and counts as ``--gsd 1 --size 512``, rendered at twice the resolution.

``--init`` starts from a saved front, with its input and target scaling, and scores it as it is
before the first epoch (kept unless an epoch beats it on the validation frames); the scored cities
then get the starting front's scores too, side by side.

Training cities: seeds 101, 102, ..., each starting on another date (other sun paths, weekdays and
weekends), with light clouds. Validation (early stopping): the last 15 % of each city's frames.
Scored cities (``--score-cities``, default 7, the city of ``benchmarks/counting.py``): each over 3
days from 2024-06-03 at 15 min, never trained on: per-cell MAE and RMSE against the simulator's true
counts, the MAE relative to the mean count of occupied cells, and the relative error of the city
total (``scores`` of ``benchmarks/counting.py``).
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
from counting import scores  # benchmarks/counting.py

ROOT = Path(__file__).resolve().parent.parent
#: start dates of the training cities: spring to winter, weekdays and weekends
STARTS = ("2024-03-04", "2024-07-13", "2024-09-18", "2024-12-08", "2024-05-21", "2024-10-26")


def city_arrays(r, norm, scale: float, unit: int):
    """Images normalised by ``norm``, cell targets and smoothed fine targets divided by ``scale``
    (as ``fit`` prepares them), and the raw cell counts of one simulated city."""
    from trafficrnn.counting import fine_target, prepare_fine
    from trafficrnn.io.export import as_stored
    from trafficrnn.windows import pixel_values

    images = as_stored(r.images)  # as the written stack reads them: JPEG in YCbCr
    x = norm.transform(pixel_values(images), band_axis=1).astype("float32")  # clouds (0): NaN
    counts = np.asarray(r.density.values, dtype="float32")
    fine, _ = fine_target(images, r.grid, unit, vehicles=r.vehicles)
    return x, counts / scale, prepare_fine(fine, np.array([scale], "float32")), counts


def front_network(width: int = 16, tile: int = 64) -> torch.nn.Module:
    """The counting encoder of ``tile`` px cells that carries a count front (seeded: the same start
    each run); ``width``: the channels of its stem and first stage (16, the default
    ``encoder_width``, is the one ``fit`` can start from)."""
    from trafficrnn.counting import COUNT_STRIDE_PX
    from trafficrnn.estimation.fitting import encoder_config
    from trafficrnn.models import get_model
    from trafficrnn.models.forecaster import count_stage_for

    torch.manual_seed(0)
    encoder = encoder_config(tile, width, 1, counting=True)
    return get_model(
        "convgru",
        in_channels=3,
        out_channels=1,
        hidden_channels=[16],
        encoder=encoder,
        count_head=True,
        count_stage=count_stage_for(encoder["strides"], COUNT_STRIDE_PX),
        density_per_cell=True,
    )


def front_net(path: Path | None = None, width: int = 16, tile: int = 64):
    """A counting network of ``tile`` px cells carrying the saved front of ``path`` (default: the
    packaged one), and that front's metadata."""
    from trafficrnn.counting import load_front, read_front

    saved = read_front(path)
    if saved is None:
        sys.exit(f"{path}: no count front there")
    net = front_network(width, tile)
    load_front(net, saved[0])
    return net, saved[1]


def front_normalizer(meta: dict, stacks: list):
    """A standard input normaliser on a front's per-band scales (``meta``), once the radiometry of
    ``stacks`` (uint8 image stacks, 0 = cloud; every 8th frame of each) is found alike; exits
    otherwise."""
    from trafficrnn.counting import use_front_scaling
    from trafficrnn.windows import Normalizer

    frames = [s[::8] for s in stacks]
    norm = Normalizer("standard").fit(
        np.concatenate([f.where(f > 0).values for f in frames]), band_axis=1
    )
    if not use_front_scaling(norm, meta):
        sys.exit("the images' radiometry is not the count front's")
    return norm


def cell_counts(net, x: np.ndarray, scale: float) -> np.ndarray:
    """Vehicles per cell of every frame, raw units."""
    out = []
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(x), 8):
            out.append(net.nowcast(torch.from_numpy(x[i : i + 8])[None])[0].numpy())
    return np.clip(np.concatenate(out) * scale, 0, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--minutes", type=float, default=15.0, help="Training time limit.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="Peak learning rate (cosine).")
    parser.add_argument("--init", help="Start from this count front (its scaling kept).")
    parser.add_argument("--score-cities", type=int, nargs="+", default=[7])
    parser.add_argument("--width", type=int, default=16, help="Encoder width (encoder_width).")
    parser.add_argument("--gsd", type=float, default=1.0, help="Metres per pixel (64 m cells).")
    parser.add_argument("--score-size", type=int, help="Scored cities' side in px (--size).")
    parser.add_argument(
        "--out-weights", default=str(ROOT / "trafficrnn" / "weights" / "count_front_1m.safetensors")
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "count_front.json"))
    args = parser.parse_args()

    from trafficrnn.counting import pretrain_encoder, save_front
    from trafficrnn.synth import simulate
    from trafficrnn.windows import Normalizer

    tile = int(round(64 / args.gsd))  # 64 m cells
    start = None  # a saved front to go on from: its network and metadata
    if args.init:
        start = front_net(Path(args.init), args.width, tile)
        if abs(start[1]["gsd"] - args.gsd) > 1e-6:
            sys.exit(f"{args.init}: a front of {start[1]['gsd']} m, not of --gsd {args.gsd}")
    net = front_network(args.width, tile) if start is None else start[0]
    unit = tile // net.count_factor

    t0 = time.perf_counter()
    seeds = [101 + i for i in range(args.cities)]
    cities = [
        simulate(
            args.size,
            days=args.days,
            step="15min",
            seed=seed,
            tile_size=tile,
            gsd=args.gsd,
            start=STARTS[i % len(STARTS)],
            clouds=True,
            cloud_cover=0.05,
        )
        for i, seed in enumerate(seeds)
    ]
    sim_s = time.perf_counter() - t0
    # one input and one target scaling for all cities, recorded with the weights: the front reads
    # pixels and writes counts on these scales whatever the hours or the place of a user's stack
    # (going on from a front: its own scales)
    if start is None:
        norm = Normalizer("standard").fit(  # every 4th frame: the moments, in bounded memory
            np.concatenate([f.where(f > 0).values for f in (r.images[::4] for r in cities)]),
            band_axis=1,
        )
        scale = float(
            np.sqrt(np.mean(np.concatenate([r.density.values.ravel() for r in cities]) ** 2))
        )
    else:
        norm = front_normalizer(start[1], [r.images for r in cities])
        scale = float(start[1]["target_scale"])
    parts = []
    for seed, r in zip(seeds, cities):
        parts.append(city_arrays(r, norm, scale, unit)[:3])
        print(
            f"city {seed}: {r.images.sizes['time']} frames, {int(r.density.sum())} vehicle sightings",
            flush=True,
        )
    del cities
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    fine = np.concatenate([p[2] for p in parts])
    train, val, offset = [], [], 0
    for p in parts:
        n = len(p[0])
        cut = n - int(round(0.15 * n))
        train.append(np.arange(offset, offset + cut))
        val.append(np.arange(offset + cut, offset + n))
        offset += n
    del parts
    t0 = time.perf_counter()
    summary = pretrain_encoder(
        net,
        x,
        y,
        fine,
        np.concatenate(train),
        np.concatenate(val),
        unit=unit,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=1e-4,
        max_epochs=1000,
        max_seconds=args.minutes * 60,
        patience=6,
        seed=0,
        initial=start is not None,
    )
    train_s = time.perf_counter() - t0
    print("trained", json.dumps(summary), flush=True)
    del x, y, fine

    before = None if start is None else front_net(Path(args.init), args.width, tile)[0]  # as it was
    scored, scored_start = {}, {}
    score_size = args.score_size or args.size
    for seed in args.score_cities:
        r = simulate(score_size, days=3, step="15min", seed=seed, tile_size=tile, gsd=args.gsd)
        x_s, _, _, truth = city_arrays(r, norm, scale, unit)
        scored[str(seed)] = scores(cell_counts(net, x_s, scale), truth)
        print(f"scored city {seed}", json.dumps(scored[str(seed)]), flush=True)
        if before is not None:
            scored_start[str(seed)] = scores(cell_counts(before, x_s, scale), truth)
            print(f"the starting front on city {seed}", json.dumps(scored_start[str(seed)]))

    command = " ".join([Path(sys.executable).name, *sys.argv])
    meta = {
        "gsd": args.gsd,
        "bands": ["red", "green", "blue"],
        "target_scale": scale,
        "input_mean": [float(v) for v in np.ravel(norm.mean_)],
        "input_scale": [float(v) for v in np.ravel(norm.scale_)],
        "command": command,
        "cities": seeds,
        "size_px": args.size,
        "days": args.days,
        "train_seconds": round(train_s, 1),
        **({"init": start[1]["command"]} if start is not None else {}),
    }
    save_front(net, Path(args.out_weights), meta)
    out = {
        "command": command,
        "machine": machine(),
        "training": {
            "cities": seeds,
            "starts": [STARTS[i % len(STARTS)] for i in range(args.cities)],
            "size_px": args.size,
            "gsd_m": args.gsd,
            "days": args.days,
            "step": "15min",
            "clouds": 0.05,
            "simulate_seconds": round(sim_s, 1),
            "batch_size": args.batch_size,
            "target_scale": scale,
            **summary,
        },
        "scored": {"days": 3, "size_px": score_size, "start": "2024-06-03", "cities": scored},
        **({"init": args.init, "scored_start": scored_start} if start is not None else {}),
        "weights": str(Path(args.out_weights).relative_to(ROOT))
        if Path(args.out_weights).is_relative_to(ROOT)
        else args.out_weights,
        "weights_bytes": Path(args.out_weights).stat().st_size,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
