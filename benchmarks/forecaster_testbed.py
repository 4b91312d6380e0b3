"""The forecaster on the synthetic testbed: deep models reading the true counts, or the images alone,
of a city of several weeks, against persistence, historical average and Ridge on the true counts.

Run: ``python benchmarks/forecaster_testbed.py [--days 10] [--size 512] [--city-seed 0] [--seeds 0 1]
[--models convgru] [--variants base linear images rain] [--score-on val|test]``; writes
``benchmarks/results/forecaster_testbed.json`` (or ``--out``) with the command, the machine and the
numbers.

The city is ``trafficrnn.synth.simulate(size, days=days, step="15min", seed=city_seed)``, rendered only when
a variant reads images. ``--score-on val`` (tuning): the last 15 % of the frames (the test part) are
dropped before anything is fitted; the rest is split by the estimator (train, then the validation
part used for early stopping, then the last 15 % that is scored). ``--score-on test`` (the proof):
nothing is dropped, the estimator's split is train / validation / test (15 % each for the last two)
and the test part is scored; no setting was chosen on it. The baselines learn from the frames
before the scored ones. The settings are those of ``accuracy_synthetic.py`` with early stopping on
the validation part (``val=0.15``, ``patience=6``, ``max_epochs=20``, no time limit). Variants:
``base`` — those settings on the true counts; ``linear`` — plus the per-lead linear term on the
last 3 frames (``linear_lags=3``, LSTNet's autoregressive component); ``images`` — ``linear``
reading the images only (64 px tiles at 1 m), the tile encoder starting from the packaged count
front and fine-tuned on the vehicle points of the training frames (``fit(images, target,
vehicles=points)``, ``max_time=30`` minutes, of which the fine-tuning takes at most a quarter: run
it on an idle machine, since that share is wall time); ``rain`` — ``linear`` with the simulator's
rain spells as a known-in-advance covariate (``covariates=``, 1 while it rains), as a weather
forecast would give them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from _scores import seed_summary  # benchmarks/_scores.py
from accuracy_synthetic import MODEL_SETTINGS, SETTINGS

from trafficrnn.params import grouped

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "base": {},
    "linear": {"linear_lags": 3},
    "images": {"linear_lags": 3, "tile_size": 64, "max_time": 30},
    "rain": {"linear_lags": 3},
}
#: early stopping on the validation part; no time limit (the epochs bound training, so that a busy or
#: slow machine trains what a fast one does), except for the image variant's own below
PROTOCOL = {"val": 0.15, "patience": 6, "max_epochs": 20, "max_time": None}
BASELINES = ("persistence", "historical_average", "ridge")


def rain_table(events, times, horizon: int):
    """The simulator's rain spells as a covariate table at the frames' cadence (1 while it rains),
    covering the frames and the lead times after the last one."""
    import pandas as pd

    times = pd.DatetimeIndex(times)
    step = times[1] - times[0]
    index = pd.date_range(times[0], times[-1] + horizon * step, freq=step)
    wet = np.zeros(len(index))
    for spell in events[events["kind"] == "rain"].itertuples():
        wet[(index >= pd.Timestamp(spell.start)) & (index < pd.Timestamp(spell.end))] = 1.0
    return pd.DataFrame({"rain": wet}, index=index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--city-seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["convgru"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--score-on", choices=("val", "test"), default="val")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "forecaster_testbed.json")
    )
    args = parser.parse_args()
    images_needed = "images" in args.variants

    from trafficrnn import TrafficForecaster
    from trafficrnn.synth import simulate

    started = time.perf_counter()
    sim = simulate(
        args.size, days=args.days, step="15min", seed=args.city_seed, render=images_needed
    )
    sim_s = time.perf_counter() - started
    target, images, points = sim.density, sim.images, sim.vehicles
    rain = rain_table(sim.events, target.time.values, horizon=SETTINGS["horizon"])
    del sim
    frames = target.sizes["time"]
    if args.score_on == "val":  # the test part is never seen
        keep = slice(0, frames - round(0.15 * frames))
        target = target.isel(time=keep)
        if images_needed:
            images = images.isel(time=keep)
            points = points[points["time"] <= images.time.values[-1]]
    runs, per_lead = [], {}
    for name in args.models:
        for variant in args.variants:
            for seed in args.seeds:
                settings = {
                    **SETTINGS,
                    **MODEL_SETTINGS.get(name, {}),
                    **PROTOCOL,
                    **VARIANTS[variant],
                }
                est = TrafficForecaster(
                    name, seed=seed, progress=False, **grouped(settings, dict(precision="32-true"))
                )
                cov = rain if variant == "rain" else None
                t0 = time.perf_counter()
                if variant == "images":
                    # the points of the training frames supervise the counting (fit drops the rest)
                    est.fit(images, target, vehicles=points)
                else:
                    est.fit(target, covariates=cov)
                train_s = time.perf_counter() - t0
                inputs = images if variant == "images" else target
                baselines = BASELINES if not per_lead else ()
                table = est.evaluate(inputs, target, baselines=baselines, covariates=cov)
                for model, sub in table.groupby(level="model"):
                    key = model if model in BASELINES else f"{name}/{variant}/seed{seed}"
                    per_lead[key] = [round(float(v), 4) for v in sub["rmse"].values]
                runs.append(
                    {
                        "model": name,
                        "variant": variant,
                        "seed": seed,
                        "epochs": est.training_summary_["epochs"],
                        "train_seconds": round(train_s, 1),
                        "counting": est.training_summary_.get("counting"),
                        "rmse": per_lead[f"{name}/{variant}/seed{seed}"],
                    }
                )
                print(runs[-1], flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {
            "size": args.size,
            "days": args.days,
            "step": "15min",
            "seed": args.city_seed,
            "frames": frames,
            "rain_share": round(float(rain["rain"].iloc[: target.sizes["time"]].mean()), 4),
            "frames_used": target.sizes["time"],
            "grid": [target.sizes["y"], target.sizes["x"]],
            "mean_vehicles_per_cell": round(float(target.mean()), 4),
            "simulate_seconds": round(sim_s, 1),
        },
        "protocol": {**PROTOCOL, "scored_on": args.score_on},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
        "variants": VARIANTS,
        "runs": runs,
        **seed_summary(per_lead, runs, BASELINES),
    }
    means = result["rmse_mean_of_seeds"]
    for name in args.models:  # images-only against the same model on the true counts, per lead
        if f"{name}/images" in means and f"{name}/linear" in means:
            ratio = np.array(means[f"{name}/images"]) / np.array(means[f"{name}/linear"])
            result.setdefault("images_over_counts_per_lead", {})[name] = [
                round(float(v), 4) for v in ratio
            ]
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["mean_over_leads"], indent=1))


if __name__ == "__main__":
    main()
