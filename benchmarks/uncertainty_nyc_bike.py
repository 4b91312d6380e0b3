"""Probabilistic forecasts on real data: NYC Citi Bike flows, split-conformal intervals against two baselines.

Run: ``python benchmarks/uncertainty_nyc_bike.py [--models convgru] [--members 1] [--minutes 10]``
(``--quick`` for a smoke run: 1 epoch, 12 test origins; each model is scored with plain and with
level-scaled calibration, ``--members 2``: an ensemble, also with spread-scaled calibration; unless
``--no-head``, also its quantile head as trained and conformalised, ``calibrate(adaptive="head")``); writes
``benchmarks/results/uncertainty_nyc_bike.json`` and prints a markdown table.

Protocol (that of ``real_nyc_bike.py`` for inputs, horizon, test origins and raw-count scoring, with one
change: calibration needs held-out frames before the test days). The deep model trains on the training
days only (before 2016-09-28), is calibrated (split conformal, per lead and channel) on the validation
days (2016-09-28..10-11), never trained on, and is scored on every origin whose 6 targets lie in the
test days (2016-10-12..10-29). The baselines learn from all the days before the test days:
``climatology`` (the empirical quantiles of each cell and channel in the same half-hour slot of the
local day) and ``persistence_quantiles`` (the last slot plus the empirical quantiles of the change over
the earlier days, per lead and channel). Reported per method: coverage and mean width of the central 80 %
and 95 % intervals per lead and pooled over leads, CRPS (quantile form, 99 levels), the pinball loss of
the 5 levels, and the coverage on high-flow targets (true > 10 trips) separately.
Re-executes itself with the glibc malloc tunables of DESIGN.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _machine import reexec_with_tunables  # noqa: E402  (benchmarks/_machine.py)

if __name__ == "__main__":
    reexec_with_tunables()

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402  (benchmarks/_machine.py)
from real_nyc_bike import DEEP as REAL_DEEP  # noqa: E402  (benchmarks/real_nyc_bike.py)
from real_nyc_bike import HORIZON, INPUT_STEPS, THRESHOLD  # noqa: E402

from trafficrnn.datasets import nyc_bike  # noqa: E402
from trafficrnn.datasets.nyc_bike import SPLITS, TIMEZONE  # noqa: E402
from trafficrnn.estimation.quantile_eval import (  # noqa: E402
    climatology_quantiles,
    model_quantiles,
    persistence_quantiles,
)
from trafficrnn.estimation.quantile_head import interpolate_levels  # noqa: E402
from trafficrnn.metrics import align_truth  # noqa: E402
from trafficrnn.params import grouped
from trafficrnn.probabilistic import coverage, interval_width, score_quantiles  # noqa: E402

LEVELS = (0.025, 0.1, 0.5, 0.9, 0.975)
#: the levels of the quantile head (``model_kwargs={"quantiles": ...}``): LEVELS and the deciles between
HEAD_LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)
INTERVALS = {"80": (0.1, 0.9), "95": (0.025, 0.975)}
RESULTS = Path(__file__).resolve().parent / "results" / "uncertainty_nyc_bike.json"
#: the calibration variants beside the plain one (``calibrate(adaptive=...)``)
SCALED = {
    "level": ", radii scaled by the square root of the forecast",
    "spread": ", radii scaled by the members' spread",
}
#: the deep model's settings: those of real_nyc_bike.py's DEEP, but trained on the training days only
DEEP = {**REAL_DEEP, "val": SPLITS["val"][0], "test": SPLITS["test"][0]}


def interval_scores(
    quantiles_of, truth: np.ndarray, horizon: int = HORIZON, threshold: float = THRESHOLD
) -> dict:
    """Coverage / width per lead and pooled for each interval, on all targets and on those above
    ``threshold``; CRPS, pinball and the RMSE of the median per lead (and their mean)."""
    table = score_quantiles(quantiles_of, truth, LEVELS)
    asked = quantiles_of(list(LEVELS))
    high = np.where(truth > threshold, truth, np.nan)
    out = {
        "crps": [round(float(v), 4) for v in table["crps"]],
        "crps_mean": round(float(table["crps"].mean()), 4),
        "pinball": [round(float(v), 4) for v in table["pinball"]],
        "rmse_median": rmse_per_lead(asked[LEVELS.index(0.5)], truth),
    }
    for name, (lo, hi) in INTERVALS.items():
        lower, upper = asked[LEVELS.index(lo)], asked[LEVELS.index(hi)]
        for label, y in (("", truth), (f"_target_gt_{threshold:g}", high)):
            per = [coverage(lower[:, h], upper[:, h], y[:, h]) for h in range(horizon)]
            out[f"coverage_{name}{label}"] = [round(v, 4) for v in per]
            out[f"coverage_{name}{label}_pooled"] = round(coverage(lower, upper, y), 4)
        out[f"width_{name}"] = [
            round(interval_width(lower[:, h], upper[:, h], truth[:, h]), 4) for h in range(horizon)
        ]
        out[f"width_{name}_pooled"] = round(interval_width(lower, upper, truth), 4)
    return out


def rmse_per_lead(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """RMSE of ``pred`` against ``truth`` (``(issued, lead, ...)``) per lead, NaN targets left out."""
    return [
        round(float(np.sqrt(np.nanmean((pred[:, h] - truth[:, h]) ** 2))), 4)
        for h in range(truth.shape[1])
    ]


def head_conformal(est, grids, issues, truth, point, fit_seconds: float) -> dict:
    """The scores of the quantile head conformalised on the validation days
    (``calibrate(adaptive="head")``: per lead, channel and level, a conformal shift)."""
    started = time.perf_counter()
    est.calibrate(grids, adaptive="head")  # the validation days
    seconds = time.perf_counter() - started
    values = np.asarray(est.predict_many(grids, issues, quantiles=HEAD_LEVELS).values)
    return {
        "method": "conformalised quantile head (per lead, channel and level, a conformal shift "
        "of the head's quantile on the validation days; sorted, clipped at 0)",
        "fit_seconds": round(fit_seconds, 2),
        "calibrate_seconds": round(seconds, 2),
        "calibration_windows": est.calibration_.windows,
        "rmse_point": rmse_per_lead(np.clip(point, 0, None), truth),
        **interval_scores(lambda taus, v=values: interpolate_levels(v, HEAD_LEVELS, taus), truth),
    }


def main(argv=None) -> dict:
    from trafficrnn import ForecastEnsemble, TrafficForecaster

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["convgru"])
    parser.add_argument("--members", type=int, default=1, help="ensemble members per model")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per model")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 12 test origins")
    parser.add_argument(
        "--no-head", action="store_true", help="train without the quantile head (HEAD_LEVELS)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    grids = nyc_bike()
    times = grids.indexes["time"]
    first_test = int(times.searchsorted(np.datetime64(SPLITS["test"][0])))
    issues = np.arange(first_test - 1, len(times) - HORIZON)
    if args.quick:
        issues = issues[:12]
    valid = times.values[issues][:, None] + np.arange(1, HORIZON + 1) * (times[1] - times[0])
    methods: dict[str, dict] = {}
    cadence = times[1] - times[0]
    truth = None
    for model in args.models:
        est = TrafficForecaster(
            model,
            max_time=0.5 if args.quick else args.minutes,
            seed=args.seed,
            progress=False,
            **grouped(
                DEEP,
                dict(max_epochs=1 if args.quick else args.max_epochs),
                {} if args.no_head else {"quantiles": HEAD_LEVELS},
            ),
        )
        if args.members > 1:
            est = ForecastEnsemble(est, members=args.members, n_jobs=args.members)
        started = time.perf_counter()
        est.fit(grids)
        fit_seconds = time.perf_counter() - started
        if args.members > 1:
            every = est.predict_many(grids, issues, members=True)
            fc = every.mean("member", keep_attrs=True).drop_vars("seed", errors="ignore")
            spread = np.asarray(every.std("member").values, dtype=np.float64)
        else:
            fc, spread = est.predict_many(grids, issues), None
        truth = np.asarray(align_truth(fc, grids).values, dtype=np.float64)
        point = np.asarray(fc.values, dtype=np.float64)
        if not args.no_head:  # before any calibration: a calibrated model gives its calibration's
            head = np.asarray(est.predict_many(grids, issues, quantiles=HEAD_LEVELS).values)
            methods[f"{est.model}-head"] = {
                "method": "quantile head (pinball loss on the training days; "
                f"{len(HEAD_LEVELS)} levels, linear between them, constant beyond)"
                + (", the members' quantiles averaged" if args.members > 1 else ""),
                "fit_seconds": round(fit_seconds, 2),
                "rmse_point": rmse_per_lead(np.clip(point, 0, None), truth),
                **interval_scores(
                    lambda taus, v=head: interpolate_levels(v, HEAD_LEVELS, taus), truth
                ),
            }
            # before the other calibrations: each est.calibrate(...) replaces the previous one
            methods[f"{est.model}-head-conformal"] = head_conformal(
                est, grids, issues, truth, point, fit_seconds
            )
        variants = [(est.model, None), (f"{est.model}-level", "level")]
        if args.members > 1:
            variants.append((f"{est.model}-spread", "spread"))
        for name, adaptive in variants:
            started = time.perf_counter()
            est.calibrate(grids, adaptive=adaptive)  # the validation days
            cal = est.calibration_
            scale = spread + cal.floor if adaptive == "spread" else None  # "level": from the point
            methods[name] = {
                "method": "split-conformal (per lead and channel, validation days)"
                + SCALED.get(adaptive, ""),
                "fit_seconds": round(fit_seconds, 2),
                "calibrate_seconds": round(time.perf_counter() - started, 2),
                "calibration_windows": cal.windows,
                "rmse_point": rmse_per_lead(np.clip(point, 0, None), truth),
                **interval_scores(model_quantiles(point, cal, list(est.bands_), scale), truth),
            }
    fit_on = slice(0, first_test)
    methods["climatology"] = {
        "method": "empirical quantiles of the slot of the day, days before the test",
        **interval_scores(climatology_quantiles(grids, fit_on, valid, TIMEZONE, cadence), truth),
    }
    methods["persistence_quantiles"] = {
        "method": "last slot + empirical quantiles of the change, days before the test",
        **interval_scores(persistence_quantiles(grids, fit_on, issues, HORIZON, cadence), truth),
    }
    report = {
        "command": "python benchmarks/uncertainty_nyc_bike.py "
        + " ".join(a for a in sys.argv[1:] if a != "--no-reexec"),
        "machine": machine(),
        "protocol": {
            "input_steps": INPUT_STEPS,
            "horizon": HORIZON,
            "train": f"before {SPLITS['val'][0]}",
            "calibration": f"{SPLITS['val'][0]} until {SPLITS['test'][0]} (validation days)",
            "test_origins": int(len(issues)),
            "levels": list(LEVELS),
            "high_flow_threshold": THRESHOLD,
            "quick": bool(args.quick),
        },
        "methods": methods,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(methods, THRESHOLD)
    return report


def print_table(methods: dict, threshold: float) -> None:
    """The pooled figures of each method as a markdown table."""
    print(f"| method | cov 80 | width 80 | cov 95 | width 95 | cov 80 (>{threshold:g}) | CRPS |")
    print("|---|---|---|---|---|---|---|")
    for name, m in methods.items():
        print(
            f"| {name} | {m['coverage_80_pooled']:.3f} | {m['width_80_pooled']:.2f} | "
            f"{m['coverage_95_pooled']:.3f} | {m['width_95_pooled']:.2f} | "
            f"{m[f'coverage_80_target_gt_{threshold:g}_pooled']:.3f} | {m['crps_mean']:.3f} |"
        )


if __name__ == "__main__":
    main()
