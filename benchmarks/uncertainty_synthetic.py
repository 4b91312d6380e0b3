"""Probabilistic forecasts from images: the shipped synthetic sample, split-conformal intervals of the
fine-tuned ConvGRU against two probabilistic baselines (issue 24, item 5: one run).

Run: ``python benchmarks/uncertainty_synthetic.py [--seed 0] [--minutes 1.2]``; writes
``benchmarks/results/uncertainty_synthetic.json`` and prints a markdown table.

Protocol: the demo's. The packaged pretrained ConvGRU is fine-tuned on the sample's images with the
vehicle points (``fit(images, vehicles=points, init=pretrained("convgru"))``, the estimator's split:
the last 15 % of the frames for test, the 15 % before for validation), calibrated (split conformal,
per lead, plain and level-scaled) on the validation windows, and scored on every origin whose
targets lie in the test part, against the true counts per 64 m cell. The baselines learn from the
true counts of the frames before the test part: ``climatology`` (empirical quantiles of the slot of
the day) and ``persistence_quantiles`` (the last frame plus the empirical quantiles of the change).
Reported as in ``uncertainty_nyc_bike.py``: coverage and width of the central 80 % and 95 %
intervals per lead and pooled, CRPS, pinball, and the coverage on cells above 10 vehicles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _demo_fit import fine_tuned  # benchmarks/_demo_fit.py
from _machine import machine  # benchmarks/_machine.py
from uncertainty_nyc_bike import LEVELS, interval_scores, print_table, rmse_per_lead

from trafficrnn.estimation.quantile_eval import (
    climatology_quantiles,
    model_quantiles,
    persistence_quantiles,
)
from trafficrnn.metrics import align_truth

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "uncertainty_synthetic.json"
THRESHOLD = 10.0


def main(argv=None) -> dict:

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=1.2, help="fine-tuning time")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    fit = fine_tuned(args.sample, "convgru", args.seed, args.minutes)
    images, est, target, issues = fit.images, fit.est, fit.target, fit.issues
    times = images.indexes["time"]
    horizon, cadence = est.horizon, times[1] - times[0]
    first_test = fit.first_test
    valid = times.values[issues][:, None] + np.arange(1, horizon + 1) * cadence
    fc = est.predict_many(images, issues)
    point = np.asarray(fc.values, dtype=np.float64)
    truth = np.asarray(align_truth(fc, target).values, dtype=np.float64)
    methods: dict[str, dict] = {}
    for name, adaptive in ((est.model, None), (f"{est.model}-level", "level")):
        began = time.perf_counter()
        est.calibrate(images, target, adaptive=adaptive)
        cal = est.calibration_
        methods[name] = {
            "method": "split-conformal (per lead, validation frames)"
            + (", radii scaled by the square root of the forecast" if adaptive else ""),
            "fit_seconds": round(fit.fit_seconds, 2),
            "calibrate_seconds": round(time.perf_counter() - began, 2),
            "calibration_windows": cal.windows,
            "rmse_point": rmse_per_lead(point, truth),
            **interval_scores(
                model_quantiles(point, cal, list(est.bands_)), truth, horizon, THRESHOLD
            ),
        }
    fit_on = slice(0, first_test)
    methods["climatology"] = {
        "method": "empirical quantiles of the slot of the day, true counts before the test part",
        **interval_scores(
            climatology_quantiles(target, fit_on, valid, None, cadence), truth, horizon, THRESHOLD
        ),
    }
    methods["persistence_quantiles"] = {
        "method": "last frame + empirical quantiles of the change, true counts before the test part",
        **interval_scores(
            persistence_quantiles(target, fit_on, issues, horizon, cadence),
            truth,
            horizon,
            THRESHOLD,
        ),
    }
    report = {
        "command": "python benchmarks/uncertainty_synthetic.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "protocol": {
            "sample": str(args.sample),
            "frames": int(len(times)),
            "split": est.training_summary_["split"],
            "test_origins": int(len(issues)),
            "levels": list(LEVELS),
            "high_count_threshold": THRESHOLD,
            "training": {
                k: est.training_summary_[k] for k in ("epochs", "train_seconds", "wall_seconds")
            },
        },
        "methods": methods,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(methods, THRESHOLD)
    return report


if __name__ == "__main__":
    main()
