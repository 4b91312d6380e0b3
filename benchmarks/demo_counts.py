"""Where the demo's lead-1 error comes from, on the sample's validation frames (or a test part): the
fine-tuned encoder's counts against the true counts, and the same fine-tuning with the true counts
in place of the encoder's in its count channel (stage B and scoring), the other image features kept.

Run: ``python benchmarks/demo_counts.py [--sample FOLDER] [--score-on val|test] [--models convgru
convlstm] [--seeds 0]``; writes ``benchmarks/results/demo_counts_val.json`` (``--out``) with the
command, the machine and the numbers.

With ``--score-on val`` the protocol is ``demo_transfer.py --score-on val``: the sample's last 15 % of
frames (the demo's test part) are dropped; each model is fine-tuned from the packaged pretrained one
as the demo does (``trafficrnn.zoo.FINE_TUNE``, 1.2 minutes), and the last 15 % of the rest is
scored. ``--score-on test`` scores the test part as the demo does (for another city made as the
sample is, e.g. one simulated for ``demo_transfer.py --score-on cities``). Counts are scored per
cell and frame on the training frames and on the scored ones (the last 15 %), split by whether a
cloud touches the cell (``clouds/``). The ``true counts`` variant is a diagnostic, not a model: it tells
whether better counts would lower the forecast's error. Run it on an idle machine (wall-time
budgets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from _scores import fit_scored, settings_from  # benchmarks/_scores.py

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("persistence", "ridge")


def count_scores(pred: np.ndarray, truth: np.ndarray, cloudy: np.ndarray) -> dict:
    """RMSE and bias of per-cell counts, on every cell, clear cells and cloud-touched cells."""
    out = {}
    for name, where in (("all", np.ones_like(cloudy)), ("clear", ~cloudy), ("cloudy", cloudy)):
        err = (pred - truth)[where & np.isfinite(truth)]
        out[name] = {
            "share": round(float(where.mean()), 4),
            "rmse": round(float(np.sqrt(np.mean(err**2))), 3),
            "bias": round(float(np.mean(err)), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--score-on", choices=("val", "test"), default="val")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "demo_counts_val.json")
    )
    args = parser.parse_args()

    import trafficrnn.estimation.fitting as fitting
    import trafficrnn.estimator as estimator
    from trafficrnn import TrafficForecaster
    from trafficrnn.io import read_stack, read_vectors
    from trafficrnn.windows import pixel_values
    from trafficrnn.zoo import pretrained

    folder = Path(args.sample)
    images = read_stack(folder / "images", allow_gaps=True)
    target = read_stack(folder / "density", allow_gaps=True)
    clouds = read_stack(folder / "clouds", allow_gaps=True)
    points = read_vectors(folder / "vehicles.gpkg")
    if args.score_on == "val":  # the demo's test part is never seen
        keep = slice(0, images.sizes["time"] - round(0.15 * images.sizes["time"]))
        images, target, clouds = (a.isel(time=keep) for a in (images, target, clouds))
        points = points[points["time"] <= images.time.values[-1]]
    n, rows, cols = target.sizes["time"], target.sizes["y"], target.sizes["x"]
    tile = images.sizes["y"] // rows
    mask = np.asarray(clouds.values[:, 0]) > 0
    cloudy = mask.reshape(n, rows, tile, cols, tile).any(axis=(2, 4))
    truth = np.asarray(target.values[:, 0], dtype="float64")
    n_val = round(0.15 * n)
    parts = {"train": slice(0, n - 2 * n_val), args.score_on: slice(n - n_val, n)}

    original = estimator.encode_frames
    oracle = {"on": False, "table": {}, "counts": None}

    def fingerprint(frame: np.ndarray) -> str:
        return hashlib.md5(np.ascontiguousarray(frame).tobytes()).hexdigest()

    def encode(net, x, batch=8):
        """The encoder's features; with the oracle on, the true counts in the count channel."""
        feats = original(net, x, batch)
        if oracle["on"]:
            feats[:, -1:] = oracle["counts"][[oracle["table"][fingerprint(f)] for f in x]]
        return feats

    estimator.encode_frames = fitting.encode_frames = encode
    runs, per_lead = [], {}
    for name in args.models:
        base = pretrained(name)
        state = base.state_
        x = state.input_normalizer.transform(pixel_values(images), band_axis=1).astype("float32")
        oracle["table"] = {fingerprint(x[i]): i for i in range(n)}
        oracle["counts"] = state.target_normalizer.transform(
            np.asarray(target.values, dtype="float32"), band_axis=1
        )
        for seed in args.seeds:
            for variant in ("encoder counts", "true counts"):
                oracle["on"] = variant == "true counts"
                est = TrafficForecaster(name, **grouped(settings_from(base.get_params(), seed)))
                key = f"{name}/{variant}/seed{seed}"
                train_s = fit_scored(est, images, target, points, base, key, per_lead, BASELINES)
                run = {
                    "model": name,
                    "variant": variant,
                    "seed": seed,
                    "train_seconds": round(train_s, 1),
                    "stage_a": est.training_summary_["counting"]["stage_a"],
                    "rmse": per_lead[f"{name}/{variant}/seed{seed}"],
                }
                if not oracle["on"]:
                    feats = original(est.model_, x)
                    counts = est.target_normalizer_.inverse_transform(feats[:, -1:], band_axis=1)[
                        :, 0
                    ]
                    run["counts"] = {
                        part: count_scores(counts[sl], truth[sl], cloudy[sl])
                        for part, sl in parts.items()
                    }
                runs.append(run)
                print(json.dumps(run), flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "sample": str(folder),
        "frames_used": n,
        "scored_on": args.score_on,
        "runs": runs,
        **{b: per_lead.get(b) for b in BASELINES},
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
