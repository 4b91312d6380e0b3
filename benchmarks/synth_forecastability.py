"""Forecastability of the synthetic city's density: is there something to forecast at the grid's scale?

Run: ``python benchmarks/synth_forecastability.py [--days 14] [--sample data/sample]``; writes
``benchmarks/results/synth_forecastability.json``. Simulates the default city of ``simulate``
(traffic only, no rendering) at 5-minute and 15-minute cadence, holds out the last 4 days, and
scores persistence, the historical average (same time of day and day type) and a small linear
blend of both with neighbours; then checks the targets:

- lead-1 persistence RMSE <= 0.6 x the standard deviation of the density (held-out frames);
- lead-6 persistence RMSE >= 1.3 x lead 1 (density changes over half an hour and more);
- p95 / p5 of the city total over each day >= 3 (a daily cycle);
- the historical average alone clearly beatable: the blend's RMSE <= 0.9 x the historical
  average's at every lead.

The shipped sample (``--sample``) is scored the same way, with its last day held out.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu  # noqa: E402

LEADS = range(1, 7)


def historical_average(x, times, train, utc_offset_h):
    """Mean of the training frames at the same local time of day and day type; (T, H, W).

    A training frame gets the mean of the *other* training days (leave-one-day-out), so that the
    blend below is fitted on the same out-of-sample kind of average it meets on the test frames.
    """
    local = pd.DatetimeIndex(times) + pd.Timedelta(hours=utc_offset_h)
    slot = (local.hour * 60 + local.minute).to_numpy()
    kind = (local.day_of_week >= 5).astype(int)
    ha = np.zeros_like(x)
    for s in np.unique(slot):
        for k in (0, 1):
            sel = (slot == s) & (kind == k)
            ref = train & sel
            if not ref.any():
                ref = train & (slot == s)
            total, count = x[ref].sum(0), ref.sum()
            for i in np.flatnonzero(sel):
                if ref[i] and count > 1:
                    ha[i] = (total - x[i]) / (count - 1)
                elif not ref[i] and count:
                    ha[i] = total / count
                else:
                    ha[i] = x[train].mean(0)
    return ha


def _features(x, ha, t, h):
    """Design matrix for origin frames ``t`` and lead ``h``: one row per (origin, cell)."""
    from scipy.ndimage import uniform_filter

    nb = uniform_filter(x[t], size=(1, 3, 3), mode="nearest")
    total = x[t].mean((1, 2), keepdims=True) * np.ones_like(x[t])
    ha_total = ha[t].mean((1, 2), keepdims=True) * np.ones_like(x[t])
    cols = [
        np.ones_like(x[t]),
        x[t],
        x[t - 1],
        ha[t + h],
        ha[t],
        nb,
        total - ha_total,
        ha[t + h] * (total - ha_total),
    ]
    return np.stack([c.ravel() for c in cols], 1)


def score(x, times, n_test, utc_offset_h=2.0):
    """RMSE per lead of persistence, historical average and a linear blend, on the last ``n_test`` frames."""
    T = len(x)
    train = np.arange(T) < T - n_test
    ha = historical_average(x, times, train, utc_offset_h)
    test_idx = np.arange(T - n_test, T)
    var = float(x[test_idx].var())
    rows = []
    for h in LEADS:
        t_tr = np.arange(1, T - n_test - h)
        t_te = np.arange(
            max(1, T - n_test - h), T - h
        )  # origins whose target lies in the test frames
        y_tr, y_te = x[t_tr + h].ravel(), x[t_te + h].ravel()
        coef, *_ = np.linalg.lstsq(_features(x, ha, t_tr, h), y_tr, rcond=None)
        pred = _features(x, ha, t_te, h) @ coef
        rmse = {
            "persistence": float(np.sqrt(np.mean((x[t_te].ravel() - y_te) ** 2))),
            "historical_average": float(np.sqrt(np.mean((ha[t_te + h].ravel() - y_te) ** 2))),
            "linear_blend": float(np.sqrt(np.mean((pred - y_te) ** 2))),
        }
        rows.append(
            {
                "lead": h,
                "rmse": {k: round(v, 4) for k, v in rmse.items()},
                "blend_skill_vs_persistence": round(
                    1 - rmse["linear_blend"] / rmse["persistence"], 3
                ),
                "blend_skill_vs_historical_average": round(
                    1 - rmse["linear_blend"] / rmse["historical_average"], 3
                ),
                "share_neither_periodic_nor_persistent": round(rmse["linear_blend"] ** 2 / var, 3),
            }
        )
    mean = float(x[test_idx].mean())
    return {
        "frames": T,
        "test_frames": n_test,
        "grid": list(x.shape[1:]),
        "mean_vehicles_per_cell": round(mean, 4),
        "test_variance": round(var, 4),
        "periodic_share_of_variance": round(
            1 - float(np.mean((ha[test_idx] - x[test_idx]) ** 2)) / var, 3
        ),
        "poisson_noise_share_of_variance": round(mean / var, 3),
        "leads": rows,
    }


def checks(x, times, n_test, per_day, utc_offset_h=2.0):
    """The scores of :func:`score` and the four targets of the module docstring, each with its figure."""
    out = score(x, times, n_test, utc_offset_h)
    test = x[len(x) - n_test :]
    std = float(test.std())
    lead = {r["lead"]: r["rmse"] for r in out["leads"]}
    totals = x.sum((1, 2))
    days = [totals[d * per_day : (d + 1) * per_day] for d in range(len(x) // per_day)]
    ratio = [float(np.percentile(t, 95) / max(np.percentile(t, 5), 1e-9)) for t in days]
    p1, p6 = lead[1]["persistence"], lead[6]["persistence"]
    blend_vs_ha = max(r["linear_blend"] / r["historical_average"] for r in lead.values())
    out["test_std"] = round(std, 4)
    out["targets"] = {
        "persistence_lead1_over_std": {
            "value": round(p1 / std, 3),
            "target": "<= 0.6",
            "met": p1 / std <= 0.6,
        },
        "persistence_lead6_over_lead1": {
            "value": round(p6 / p1, 3),
            "target": ">= 1.3",
            "met": p6 / p1 >= 1.3,
        },
        "daily_total_p95_over_p5_min": {
            "value": round(min(ratio), 2),
            "target": ">= 3",
            "met": min(ratio) >= 3,
            "per_day": [round(r, 2) for r in ratio],
        },
        "blend_over_historical_average_max": {
            "value": round(blend_vs_ha, 3),
            "target": "<= 0.9",
            "met": blend_vs_ha <= 0.9,
        },
    }
    return out


def main(argv=None):
    from trafficrnn.io import read_stack
    from trafficrnn.synth import simulate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--days", type=float, default=14, help="simulated days (the last 4 are held out)"
    )
    parser.add_argument(
        "--sample", default="data/sample", help="the shipped sample to score too ('' to skip)"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "synth_forecastability.json")
    )
    args = parser.parse_args(argv)
    out = {
        "command": "python benchmarks/synth_forecastability.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu": cpu(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
        },
        "method": "RMSE (vehicles per cell) per lead on the held-out frames (the last 4 days); historical "
        "average = mean of the training frames at the same local time of day and day type "
        "(weekday/weekend), leave-one-day-out on the training frames; linear_blend = least squares on "
        "[x_t, x_t-1, HA_t+h, HA_t, 3x3 mean of x_t, frame-mean anomaly, HA_t+h * anomaly] fitted on "
        "the training frames; std = standard deviation of the density over the held-out frames and "
        "cells; share_neither_periodic_nor_persistent = MSE(blend) / Var(test)",
        "default_city": {},
    }
    for step in ("5min", "15min"):
        began = time.perf_counter()
        sim = simulate(days=args.days, step=step, seed=0, render=False)
        x = sim.density.values[:, 0].astype(np.float64)
        per_day = int(pd.Timedelta(days=1) / pd.Timedelta(step))
        res = checks(x, sim.density["time"].values, 4 * per_day, per_day)
        res["parameters"] = sim.params
        res["cell_m"] = float(sim.grid.resolution[0])
        res["simulate_seconds"] = round(time.perf_counter() - began, 1)
        out["default_city"][step] = res
        print(step, json.dumps(res["targets"]), flush=True)
    if args.sample and (Path(args.sample) / "manifest.json").exists():
        manifest = json.loads((Path(args.sample) / "manifest.json").read_text())
        dens = read_stack(Path(args.sample) / "density")
        per_day = int(pd.Timedelta(days=1) / pd.Timedelta(manifest["time"]["step"]))
        out["sample"] = dict(
            checks(dens.values[:, 0].astype(np.float64), dens["time"].values, per_day, per_day),
            parameters=manifest["parameters"],
        )
    out["all_met"] = all(
        t["met"] for r in out["default_city"].values() for t in r["targets"].values()
    )
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    result = main()
    print(json.dumps({k: v["targets"] for k, v in result["default_city"].items()}, indent=2))
