"""The forecaster alone on the synthetic testbed: deep models reading the TRUE counts of a 10-day city
against persistence, historical average and Ridge, scored on validation frames only.

Run: ``python benchmarks/forecaster_testbed.py [--days 10] [--size 512] [--seeds 0 1] [--models convgru]
[--variants base linear]``; writes ``benchmarks/results/forecaster_testbed.json`` with the command, the
machine and the numbers.

The city is ``trafficrnn.synth.simulate(size, days=days, step="15min", seed=0, render=False)`` (traffic
only, no images: this separates the forecaster from the counting). The last 15 % of the frames (the
test part) are dropped before anything is fitted; the rest is split by the estimator (train, then the
validation part used for early stopping, then the last 15 % that is scored). The baselines learn from
the train and validation parts. The settings are those of ``accuracy_synthetic.py`` with early
stopping on the validation part (``val=0.15``, ``patience=6``, ``max_epochs=20``). Variants:
``base`` — those settings; ``linear`` — plus the per-lead linear term on the last 3 frames
(``linear_lags=3``, LSTNet's autoregressive component).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/_machine.py
from accuracy_synthetic import MODEL_SETTINGS, SETTINGS

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"base": {}, "linear": {"linear_lags": 3}}
PROTOCOL = {"val": 0.15, "patience": 6, "max_epochs": 20}
BASELINES = ("persistence", "historical_average", "ridge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["convgru"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "forecaster_testbed.json")
    )
    args = parser.parse_args()

    from trafficrnn import TrafficForecaster
    from trafficrnn.synth import simulate

    started = time.perf_counter()
    target = simulate(args.size, days=args.days, step="15min", seed=0, render=False).density
    sim_s = time.perf_counter() - started
    frames = target.sizes["time"]
    target = target.isel(
        time=slice(0, frames - round(0.15 * frames))
    )  # the test part is never seen
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
                    name, **settings, seed=seed, precision="32-true", progress=False
                )
                t0 = time.perf_counter()
                est.fit(target)
                train_s = time.perf_counter() - t0
                table = est.evaluate(target, target, baselines=BASELINES if not per_lead else ())
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
                        "rmse": per_lead[f"{name}/{variant}/seed{seed}"],
                    }
                )
                print(runs[-1], flush=True)
    means = {}
    for name in args.models:
        for variant in args.variants:
            rows = np.array([per_lead[f"{name}/{variant}/seed{s}"] for s in args.seeds])
            means[f"{name}/{variant}"] = [round(float(v), 4) for v in rows.mean(0)]
    best_baseline = np.min([per_lead[b] for b in BASELINES], axis=0)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "city": {
            "size": args.size,
            "days": args.days,
            "step": "15min",
            "seed": 0,
            "frames": frames,
            "frames_used": target.sizes["time"],
            "grid": [target.sizes["y"], target.sizes["x"]],
            "mean_vehicles_per_cell": round(float(target.mean()), 4),
            "simulate_seconds": round(sim_s, 1),
        },
        "protocol": PROTOCOL,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
        "variants": VARIANTS,
        "runs": runs,
        "rmse_per_lead": per_lead,
        "rmse_mean_of_seeds": means,
        "mean_over_leads": {
            k: round(float(np.mean(v)), 4)
            for k, v in {**means, **{b: per_lead[b] for b in BASELINES}}.items()
        },
        "beats_every_baseline_at_every_lead": {
            k: bool((np.array(v) < best_baseline).all()) for k, v in means.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["mean_over_leads"], indent=1))


if __name__ == "__main__":
    main()
