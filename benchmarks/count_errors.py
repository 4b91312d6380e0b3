"""Where the packaged count front miscounts: its per-cell errors on a synthetic city it never saw,
by light (sun elevation) and by how many vehicles a cell holds, beside the vehicles whose bodies
overlap another's in the rendered frame (where no counter can separate them).

Run: ``python benchmarks/count_errors.py [--city 201] [--size 512] [--days 3] [--dihedral]``;
writes ``benchmarks/results/count_errors.json`` (``--out``) with the command, the machine and the
numbers.

The city (seed ``--city``, 15 min, 1 m, 64 px cells, no clouds) is read as the written stack stores
it (JPEG, ``trafficrnn.io.as_stored``) and counted by the packaged front without fine-tuning, on the
front's own input and target scales. With ``--dihedral`` each frame is also counted in the eight
orientations of the square (turned by multiples of 90 degrees, and mirrored), each count turned
back onto the grid: the scores of each orientation and of their mean, beside the single pass (what
averaging the front's orientation-dependent errors would buy, at eight times the encoding). A
vehicle *overlaps* when its body (the kind's length and
width, along its heading) intersects that of a vehicle on the same link within two lanes of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from count_front import (  # benchmarks/count_front.py
    cell_counts,
    city_arrays,
    front_net,
    front_normalizer,
)
from counting import scores  # benchmarks/counting.py

ROOT = Path(__file__).resolve().parent.parent
#: sun elevation (degrees) limits of the light classes: daylight, dusk (lamps lit), night
LIGHT = {"day": (12.0, 91.0), "dusk": (-6.0, 12.0), "night": (-91.0, -6.0)}
#: true vehicles per cell: the bins of the error table
BINS = ((0, 0.5), (0.5, 3), (3, 8), (8, 15), (15, 30), (30, 1e9))


def overlapping(vehicles) -> np.ndarray:
    """Whether each vehicle's body intersects that of another on its link (bool, one per row).

    Bodies are rectangles of the kind's length and width along the heading; two vehicles of one
    link and frame are compared along the link and across it. Vehicles of a link in a frame are
    sorted along it, and each is compared with the next four (lanes are filled in turn, so a
    vehicle's neighbour in its lane is at most that many places further on a road of four lanes).
    """
    from trafficrnn.synth.vehicles import KINDS

    v = vehicles
    h = np.radians(v["heading"].to_numpy())
    ux, uy = np.sin(h), np.cos(h)
    x, y = v.geometry.x.to_numpy(), v.geometry.y.to_numpy()
    length = v["kind"].map({k: d["length"] for k, d in KINDS.items()}).to_numpy()
    width = v["kind"].map({k: d["width"] for k, d in KINDS.items()}).to_numpy()
    along, across = x * ux + y * uy, x * uy - y * ux
    group = (
        v["time"].astype("int64").to_numpy() // 10**9 * 100_000 + v["link"].to_numpy()
    )  # frame and link
    order = np.lexsort((along, group))
    g, a, c, ln, w = (q[order] for q in (group, along, across, length, width))
    hit = np.zeros(len(v), bool)
    for k in range(1, 5):
        same = g[k:] == g[:-k]
        touch = (
            same
            & (np.abs(a[k:] - a[:-k]) < (ln[k:] + ln[:-k]) / 2)
            & (np.abs(c[k:] - c[:-k]) < (w[k:] + w[:-k]) / 2)
        )
        hit[k:] |= touch
        hit[:-k] |= touch
    out = np.zeros(len(v), bool)
    out[order] = hit
    return out


def dihedral_counts(count, x: np.ndarray) -> list[np.ndarray]:
    """Cell counts of ``x`` (frames, bands, y, x; square) in the eight orientations of the square,
    each turned back onto the frames' grid: ``count`` maps such an array to (frames, 1, rows,
    columns) counts. The first is ``count(x)`` itself."""
    out = []
    for k in range(8):
        turns, mirror = k % 4, k >= 4
        xi = np.rot90(x, turns, axes=(2, 3))
        if mirror:
            xi = xi[..., ::-1]
        c = count(np.ascontiguousarray(xi))
        if mirror:
            c = c[..., ::-1]
        out.append(np.ascontiguousarray(np.rot90(c, -turns, axes=(2, 3))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", type=int, default=201)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument(
        "--dihedral", action="store_true", help="Also count in the 8 orientations and average."
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "count_errors.json"))
    args = parser.parse_args()

    from trafficrnn.io import rasterize_points
    from trafficrnn.synth import simulate
    from trafficrnn.synth.city import VIENNA
    from trafficrnn.synth.render import sun_position

    net, meta = front_net()
    unit = 64 // net.count_factor
    r = simulate(args.size, days=args.days, step="15min", seed=args.city, tile_size=64, gsd=1.0)
    scale = float(meta["target_scale"])
    x, _, _, truth = city_arrays(r, front_normalizer(meta, [r.images]), scale, unit)
    pred = cell_counts(net, x, scale)

    times = r.density.time.values
    _, elevation = sun_position(times, VIENNA["lat"], VIENNA["lon"])  # simulate's default place
    hit = overlapping(r.vehicles)
    overlaps = rasterize_points(r.vehicles[hit], r.grid, times=times).values
    err, bias = np.abs(pred - truth), pred - truth

    light = {}
    for name, (lo, hi) in LIGHT.items():
        m = (elevation >= lo) & (elevation < hi)
        if m.any():
            light[name] = {
                "frames": int(m.sum()),
                **scores(pred[m], truth[m]),
                "share_of_abs_error": round(float(err[m].sum() / err.sum()), 4),
            }
    by_count = []
    for lo, hi in BINS:
        m = (truth >= lo) & (truth < hi)
        if m.any():
            by_count.append(
                {
                    "true_count": [lo, hi if hi < 1e9 else None],
                    "cells": int(m.sum()),
                    "mean_true": round(float(truth[m].mean()), 3),
                    "mae": round(float(err[m].mean()), 3),
                    "bias": round(float(bias[m].mean()), 3),
                    "share_of_abs_error": round(float(err[m].sum() / err.sum()), 4),
                    "overlapping_vehicles_per_cell": round(float(overlaps[m].mean()), 3),
                }
            )
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {"seed": args.city, "size_px": args.size, "days": args.days, "step": "15min"},
        "front": meta.get("command"),
        "scores": scores(pred, truth),
        "by_light": light,
        "by_true_count": by_count,
        "vehicles": int(len(r.vehicles)),
        "overlapping_share": round(float(hit.mean()), 4),
    }
    if args.dihedral:
        turned = dihedral_counts(lambda a: cell_counts(net, a, scale), x)
        out["dihedral"] = {
            "orientations": [scores(c, truth) for c in turned],
            "mean_of_8": scores(np.mean(turned, axis=0), truth),
        }
    print(json.dumps(out, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
