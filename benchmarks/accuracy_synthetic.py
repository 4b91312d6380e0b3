"""Accuracy on the shipped synthetic sample (image path): ConvLSTM and ConvGRU vs every baseline, per lead.

Run: ``python benchmarks/accuracy_synthetic.py [--minutes 4] [--max-epochs N] [--variants images detections]
[--precision 32-true bf16-mixed] [--seed 0] [--members 2]``; writes
``benchmarks/results/accuracy_synthetic.json`` with the command, the machine and the numbers. Each
model learns from the training and validation frames of ``data/sample`` (what the baselines learn
from) for at most ``--max-epochs`` epochs or ``--minutes`` of CPU time, whichever ends first: the
epoch limit makes a fast machine train what a slow one does, not more. All are scored on the same
test issue times (raw vehicles per cell).

``--score-on val`` is the tuning protocol: the test frames (the last 15 %) are dropped before
anything is fitted, the rest is split the same way (the frames to learn from, then a held-out last
15 %), and models and baselines are scored on that held-out part (targets in frames 347-407 of 480,
never a test frame). ``MAX_EPOCHS`` and the settings were chosen so
(``benchmarks/results/accuracy_synthetic_val.json``).

Variants: ``images`` — the model sees the images only and must count the vehicles itself, while
the baselines read the true past counts; ``counting`` — the same, with the sample's vehicle points
supervising the encoder's counting (``fit(images, target, vehicles=points)``); ``counts`` — the model
reads the true counts (the density-only path, no images); ``detections`` — the model reads the
images and the observed counts of its input frames (``target_inputs=True``). bf16-mixed runs for
the first variant only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from _machine import cpu  # benchmarks/_machine.py

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
#: settings of every deep model (besides model, precision, seed and the limits); recorded in the results.
#: val=0: the deep models learn from every frame before the scored ones, as the baselines do (train +
#: validation), for MAX_EPOCHS epochs or the time limit; the epoch of lowest training loss is kept
SETTINGS = dict(
    val=0,
    input_steps=8,
    horizon=6,
    hidden=(32, 32),
    context=("ha",),
    cell_mean=True,
    residual=True,
    feedback=False,
    count_head=True,
    context_inputs=True,
    patience=12,
    batch_size=8,
    lr=3e-3,
)
#: epoch limit of every deep model (default of --max-epochs), and feedback=False above, chosen with --score-on val
#: (results/accuracy_synthetic_val.json; detections variant, ensembles of 2, mean RMSE of leads 1-6; Ridge 0.417):
#: ConvLSTM 3 / 4 / 6 / 10 epochs 0.451 / 0.428 / 0.431 / 0.461 (seeds 0-1), 4 / 6 epochs 0.424 / 0.431 (seeds 2-3),
#: no limit (16-17 epochs in 4 min) 0.506; ConvGRU with prediction feedback 6 / 10 epochs 0.426 / 0.455, no limit
#: 0.509, without 3 / 4 / 6 epochs 0.419 / 0.414 / 0.422 (seeds 0-1)
MAX_EPOCHS = 4
#: per-model changes to SETTINGS: none (the ConvLSTM's peephole connections, now removed, did not help: 0.4238 with,
#: 0.4235 without, detections variant, 4 epochs, seeds 2-3)
MODEL_SETTINGS: dict[str, dict] = {"convlstm": {}}
VARIANTS = {"images": {}, "detections": {"target_inputs": True}, "counting": {}, "counts": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    parser.add_argument("--minutes", type=float, default=4.0, help="training time limit per model")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=MAX_EPOCHS,
        help=f"epoch limit per model (default {MAX_EPOCHS}); training stops at this or at --minutes, "
        "whichever comes first; a max_epochs in MODEL_SETTINGS or --set takes precedence",
    )
    parser.add_argument(
        "--score-on",
        choices=("test", "val"),
        default="test",
        help="val: drop the test frames, fit on the rest and score on its last 15 %% (tuning)",
    )
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--models", nargs="+", default=["convlstm", "convgru"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", nargs="+", default=["detections", "images"], choices=list(VARIANTS)
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="override a model setting, e.g. --set hidden=[48,48] residual_base='\"seasonal\"'",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="train each model as a ForecastEnsemble of this many seeds, side by side (one process each)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="result file (default accuracy_synthetic.json, or accuracy_synthetic_val.json with "
        "--score-on val)",
    )
    args = parser.parse_args()
    if args.out is None:
        name = (
            "accuracy_synthetic_val.json" if args.score_on == "val" else "accuracy_synthetic.json"
        )
        args.out = str(ROOT / "benchmarks" / "results" / name)

    from trafficrnn import ForecastEnsemble, TrafficForecaster, read_stack, read_vectors

    images = read_stack(Path(args.sample) / "images", allow_gaps=True)
    target = read_stack(Path(args.sample) / "density", allow_gaps=True)
    tile = images.sizes["y"] // target.sizes["y"]
    frames = images.sizes["time"]
    if (
        args.score_on == "val"
    ):  # the test frames are never seen: the estimator's default test share, 15 %
        keep = frames - round(0.15 * frames)
        images, target = images.isel(time=slice(0, keep)), target.isel(time=slice(0, keep))
    points = None
    if "counting" in args.variants:
        points = read_vectors(Path(args.sample) / "vehicles.gpkg")
        points = points[points["time"] <= images.time.values[-1]]  # none of the dropped test frames
    settings, overrides = {**SETTINGS, "max_epochs": args.max_epochs}, {}
    for item in args.set:  # applies to every model, over MODEL_SETTINGS
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
        if isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    settings.update(overrides)
    runs, tables = [], {}
    for v, variant in enumerate(args.variants):
        for precision in args.precision if v == 0 else args.precision[:1]:
            for name in args.models:
                own = {**settings, **MODEL_SETTINGS.get(name, {}), **overrides}
                inputs = target if variant == "counts" else images
                est = TrafficForecaster(
                    name,
                    tile_size=None if variant == "counts" else tile,
                    max_time=args.minutes,
                    seed=args.seed,
                    progress=False,
                    **grouped(own, VARIANTS[variant], dict(precision=precision)),
                )
                if args.members > 1:
                    est = ForecastEnsemble(est, members=args.members, n_jobs=args.members)
                started = time.perf_counter()
                if variant == "counts":
                    est.fit(target)
                else:
                    est.fit(
                        images, target, **({"vehicles": points} if variant == "counting" else {})
                    )
                train_s = time.perf_counter() - started
                table = est.evaluate(
                    inputs,
                    target,
                    baselines=() if tables else ("persistence", "historical_average", "ridge"),
                )
                key = f"{name}/{variant}/{precision}"
                tables[key] = table
                t0 = time.perf_counter()
                est.predict(inputs, **({"target": target} if est.target_inputs else {}))
                runs.append(
                    {
                        "model": name,
                        "variant": variant,
                        "precision": precision,
                        "parameters": est.training_summary_["parameters"],
                        "train_seconds": round(train_s, 1),
                        # epochs run (the Trainer's current_epoch after fit; a partial last one counts)
                        "epochs": est.training_summary_["epochs"],
                        "best_val_loss": (
                            est.training_summary_["best_val_loss"]
                            if args.members == 1
                            else [r["best_val_loss"] for r in est.training_summary_["runs"]]
                        ),
                        "predict_seconds": round(time.perf_counter() - t0, 3),
                    }
                )
                print(key, runs[-1], flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
        },
        "protocol": {
            "scored_on": args.score_on,
            "frames_used": images.sizes["time"],
            "max_minutes": args.minutes,
            "max_epochs": settings["max_epochs"],
        },
        "sample": {
            "frames": frames,
            "image_px": [images.sizes["y"], images.sizes["x"]],
            "grid": [target.sizes["y"], target.sizes["x"]],
            "tile_size": tile,
            "mean_vehicles_per_cell": round(float(target.mean()), 4),
        },
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "model_settings": {
            m: {k: v for k, v in MODEL_SETTINGS.get(m, {}).items() if k not in overrides}
            for m in args.models
        },
        "variants": {k: VARIANTS[k] for k in args.variants},
        "members": args.members,
        "issues": int(next(iter(tables.values())).attrs["issues"]),
        "runs": runs,
        "per_lead": {},
    }
    for key, table in tables.items():
        for model, sub in table.groupby(level="model"):
            label = model if model in ("persistence", "historical_average", "ridge") else key
            result["per_lead"][label] = {
                m: [round(float(v), 4) for v in sub[m].values] for m in ("rmse", "mae")
            }
    deep = [k for k in result["per_lead"] if "/" in k]
    base = [k for k in result["per_lead"] if "/" not in k]
    result["beats_every_baseline_at_every_lead"] = {
        k: all(
            result["per_lead"][k]["rmse"][i] < min(result["per_lead"][b]["rmse"][i] for b in base)
            for i in range(len(result["per_lead"][k]["rmse"]))
        )
        for k in deep
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v["rmse"] for k, v in result["per_lead"].items()}, indent=1))
    print("beats every baseline at every lead:", result["beats_every_baseline_at_every_lead"])


if __name__ == "__main__":
    main()
