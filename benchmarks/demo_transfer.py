"""The demo's choice: on the shipped two-day sample, train each deep model from images from scratch,
or fine-tune the packaged pretrained one (``fit(..., init=...)``), against persistence, historical
average and Ridge on the true counts.

Run: ``python benchmarks/demo_transfer.py [--score-on val|test|cities] [--cities 2 3] [--seeds 0 1 2]
[--minutes 1.5] [--variants scratch transfer] [--set lr=0.001]``; writes
``benchmarks/results/demo_transfer.json`` (``--out``) with the command, the machine and the numbers.

``--score-on val`` (tuning): the last 15 % of the sample's frames (the demo's test part) are dropped
before anything is fitted; the rest is split by the estimator and its last 15 % are scored.
``--score-on cities`` (tuning, the demo's whole protocol): other cities made as the sample is
(``--cities``: their simulator seeds; the sample is seed 0, the pretraining city seed 1), each
simulated into a temporary folder, split as the demo splits the sample and its test part scored;
the summary averages the cities. Unlike ``val``, whose scored afternoon follows too short a history
for Ridge (its historical-average feature has no earlier slot there), every baseline is scored as
the demo scores it. ``--score-on test``: the demo's own protocol on the sample, train / validation /
test (15 % each for the last two), the test part scored. Variants: ``scratch`` — the demo's settings
before pretraining (``trafficrnn.demo.SCRATCH``), the tile encoder starting from the packaged count
front; ``transfer`` — the packaged pretrained model (``trafficrnn.zoo.pretrained``, written by
``benchmarks/pretrain.py`` on a month of another city) with its fine-tuning settings
(``trafficrnn.zoo.FINE_TUNE``), starting from its weights. Each fit has ``--minutes`` of wall time
(stage A, the count fine-tuning, takes at most three quarters of it): run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from _scores import fit_scored, seed_summary, settings_from  # benchmarks/_scores.py

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("persistence", "historical_average", "ridge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    parser.add_argument("--score-on", choices=("val", "test", "cities"), default="val")
    parser.add_argument("--cities", type=int, nargs="+", default=[2, 3], help="simulator seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--variants", nargs="+", default=["scratch", "transfer"])
    parser.add_argument("--minutes", type=float, default=None, help="max_time of each fit")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=JSON", help="override a fine-tuning setting"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "demo_transfer.json")
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    from trafficrnn.demo import SAMPLE_CITY, SCRATCH
    from trafficrnn.zoo import FINE_TUNE

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "scored_on": args.score_on,
        "scratch": {k: list(v) if isinstance(v, tuple) else v for k, v in SCRATCH.items()},
        "fine_tune": {**FINE_TUNE, **overrides},
        "minutes": args.minutes,
    }
    if args.score_on != "cities":
        result.update(sample=args.sample, **score(Path(args.sample), args, overrides))
    else:
        from trafficrnn.synth.simulate import simulate, write_simulation

        cities = {}
        for city in args.cities:
            with tempfile.TemporaryDirectory() as folder:
                began = time.perf_counter()
                write_simulation(
                    simulate(**SAMPLE_CITY, seed=city, progress=False),
                    folder,
                    overwrite=True,
                    progress=False,
                )
                made = round(time.perf_counter() - began, 1)
                cities[str(city)] = {
                    "simulate_seconds": made,
                    **score(Path(folder), args, overrides),
                }
        result.update(city=SAMPLE_CITY, cities=cities, **mean_over_cities(cities))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["mean_over_leads"], indent=1))


def score(folder: Path, args, overrides: dict) -> dict:
    """Fit every model, variant and seed on the sample-like stack in ``folder`` and score them and
    the baselines on its validation frames (``--score-on val``) or its test part."""
    from trafficrnn import TrafficForecaster
    from trafficrnn.demo import SCRATCH
    from trafficrnn.io import read_stack, read_vectors
    from trafficrnn.zoo import pretrained

    images = read_stack(folder / "images", allow_gaps=True)
    target = read_stack(folder / "density", allow_gaps=True)
    points = read_vectors(folder / "vehicles.gpkg")
    frames = images.sizes["time"]
    if args.score_on == "val":  # the demo's test part is never seen
        keep = slice(0, frames - round(0.15 * frames))
        images, target = images.isel(time=keep), target.isel(time=keep)
        points = points[points["time"] <= images.time.values[-1]]
    runs, per_lead = [], {}
    for name in args.models:
        for variant in args.variants:
            for seed in args.seeds:
                init = pretrained(name) if variant == "transfer" else None
                minutes = {} if args.minutes is None else {"max_time": args.minutes}
                if init is None:
                    settings = settings_from({**SCRATCH, "tile_size": 64}, seed, minutes)
                else:  # its architecture, FINE_TUNE's training settings
                    settings = settings_from(init.get_params(), seed, {**overrides, **minutes})
                est = TrafficForecaster(name, **grouped(settings))
                key = f"{name}/{variant}/seed{seed}"
                train_s = fit_scored(est, images, target, points, init, key, per_lead, BASELINES)
                summary = est.training_summary_
                runs.append(
                    {
                        "model": name,
                        "variant": variant,
                        "seed": seed,
                        "epochs": summary["epochs"],
                        "stage_a": (summary.get("counting") or {}).get("stage_a"),
                        "train_seconds": round(train_s, 1),
                        "rmse": per_lead[f"{name}/{variant}/seed{seed}"],
                        "mean_rmse": round(
                            float(np.mean(per_lead[f"{name}/{variant}/seed{seed}"])), 4
                        ),
                    }
                )
                print(runs[-1], flush=True)
    return {
        "frames_used": images.sizes["time"],
        "runs": runs,
        **seed_summary(per_lead, runs, BASELINES),
    }


def mean_over_cities(cities: dict) -> dict:
    """RMSE per lead of each model (mean of seeds) and baseline averaged over the cities, the mean
    over leads of each, and whether each model's average is below every baseline's at every lead."""
    names = list(next(iter(cities.values()))["rmse_mean_of_seeds"]) + list(BASELINES)

    def rows(name: str) -> np.ndarray:
        return np.array(
            [
                c["rmse_mean_of_seeds"][name] if name not in BASELINES else c["rmse_per_lead"][name]
                for c in cities.values()
            ]
        )

    mean = {k: [round(float(v), 4) for v in rows(k).mean(axis=0)] for k in names}
    best = np.min([mean[b] for b in BASELINES], axis=0)
    return {
        "rmse_mean_of_cities": mean,
        "mean_over_leads": {k: round(float(np.mean(v)), 4) for k, v in mean.items()},
        "beats_every_baseline_at_every_lead": {
            k: bool((np.array(v) < best).all()) for k, v in mean.items() if k not in BASELINES
        },
    }


if __name__ == "__main__":
    main()
