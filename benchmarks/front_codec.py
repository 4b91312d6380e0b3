"""Count fronts against the codec of the frames: each front's counts of a city it never saw, on the
frames as simulated (lossless) and as the written stack stores them (JPEG in YCbCr,
``trafficrnn.io.as_stored``), and on the shipped sample's frames as read from disk.

Run: ``python benchmarks/front_codec.py [--front NAME=WEIGHTS ...]``; writes
``benchmarks/results/front_codec.json`` (``--out``) with the command, the machine and the scores.
Default fronts: the packaged one (``trafficrnn/weights/count_front_1m.safetensors``). Scores
(``benchmarks/counting.py``'s ``scores``), on cells that no cloud covers in part: city 7 over 3 days
(512 px, 15 min, the scored city of ``count_front.py``), and the sample's frames before its test part
(the last 15 %), against the true counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from count_front import cell_counts, front_net  # benchmarks/count_front.py
from counting import scores  # benchmarks/counting.py

ROOT = Path(__file__).resolve().parent.parent


def counted(net, meta: dict, frames: np.ndarray, truth: np.ndarray, tile: int = 64) -> dict:
    """Scores of the front's counts of ``frames`` (float, NaN = cloud) on the cells no cloud touches."""
    mean = np.array(meta["input_mean"], "float32")[None, :, None, None]
    scale = np.array(meta["input_scale"], "float32")[None, :, None, None]
    counts = cell_counts(net, ((frames - mean) / scale).astype("float32"), meta["target_scale"])
    t, _, h, w = frames.shape
    cloud = np.isnan(frames[:, 0]).reshape(t, h // tile, tile, w // tile, tile).any((2, 4))
    return scores(counts, np.where(cloud[:, None], np.nan, truth))


def main() -> None:
    import trafficrnn as tr
    from trafficrnn.io import as_stored
    from trafficrnn.synth import simulate
    from trafficrnn.windows import pixel_values

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--front", nargs="+", default=["packaged=trafficrnn/weights/count_front_1m.safetensors"]
    )
    parser.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/front_codec.json")
    args = parser.parse_args()

    city = simulate(512, days=3, step="15min", seed=7, tile_size=64, gsd=1.0)
    raw = city.images
    views = {
        "city7_lossless": pixel_values(raw),  # clouds (nodata 0): NaN
        "city7_jpeg": pixel_values(as_stored(raw)),
    }
    truths = {"city7_lossless": city.density.values, "city7_jpeg": city.density.values}
    sample = tr.read_stack(args.sample / "images")
    first_test = sample.sizes["time"] - int(round(0.15 * sample.sizes["time"]))
    views["sample_disk_before_test"] = sample.values[:first_test].astype("float32")
    truths["sample_disk_before_test"] = tr.read_stack(args.sample / "density").values[:first_test]
    fronts = dict(item.split("=", 1) for item in args.front)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": None}
    result["fronts"] = {}
    for name, path in fronts.items():
        net, meta = front_net(ROOT / path)
        result["fronts"][name] = {
            "weights": path,
            "trained_by": meta.get("command"),
            **{view: counted(net, meta, frames, truths[view]) for view, frames in views.items()},
        }
        print(name, json.dumps(result["fronts"][name]), flush=True)
    result["machine"] = machine()
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
