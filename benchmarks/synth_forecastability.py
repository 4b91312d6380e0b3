"""Forecastability of the synthetic city's density: persistence and historical average must both be beatable.

Run: ``python benchmarks/synth_forecastability.py [SAMPLE_DIR]`` (default ``data/sample``); writes
``benchmarks/results/synth_forecastability.json``. Scores the shipped sample (last day held out)
and a 14-day run of the same city (last 4 days held out) with persistence, the historical
average (same time of day and day type), and a small linear blend of both with neighbours.
"""

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

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
    cols = [np.ones_like(x[t]), x[t], x[t - 1], ha[t + h], ha[t], nb, total - ha_total,
            ha[t + h] * (total - ha_total)]
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
        t_te = np.arange(max(1, T - n_test - h), T - h)  # origins whose target lies in the test frames
        y_tr, y_te = x[t_tr + h].ravel(), x[t_te + h].ravel()
        coef, *_ = np.linalg.lstsq(_features(x, ha, t_tr, h), y_tr, rcond=None)
        pred = _features(x, ha, t_te, h) @ coef
        rmse = {
            "persistence": float(np.sqrt(np.mean((x[t_te].ravel() - y_te) ** 2))),
            "historical_average": float(np.sqrt(np.mean((ha[t_te + h].ravel() - y_te) ** 2))),
            "linear_blend": float(np.sqrt(np.mean((pred - y_te) ** 2))),
        }
        rows.append({"lead": h, "rmse": {k: round(v, 4) for k, v in rmse.items()},
                     "blend_skill_vs_persistence": round(1 - rmse["linear_blend"] / rmse["persistence"], 3),
                     "blend_skill_vs_historical_average": round(1 - rmse["linear_blend"] / rmse["historical_average"], 3),
                     "share_neither_periodic_nor_persistent": round(rmse["linear_blend"] ** 2 / var, 3)})
    mean = float(x[test_idx].mean())
    return {"frames": T, "test_frames": n_test, "grid": list(x.shape[1:]), "mean_vehicles_per_cell": round(mean, 4),
            "test_variance": round(var, 4),
            "periodic_share_of_variance": round(1 - float(np.mean((ha[test_idx] - x[test_idx]) ** 2)) / var, 3),
            "poisson_noise_share_of_variance": round(mean / var, 3),
            "leads": rows}


def main(sample="data/sample"):
    from trafficrnn.io import read_stack
    from trafficrnn.synth import simulate

    manifest = json.loads((Path(sample) / "manifest.json").read_text())
    dens = read_stack(Path(sample) / "density")
    x = dens.values[:, 0].astype(np.float64)
    times = dens["time"].values
    per_day = int(pd.Timedelta(days=1) / pd.Timedelta(manifest["time"]["step"]))
    out = {"command": "python benchmarks/synth_forecastability.py " + str(sample),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "python": sys.version.split()[0], "numpy": np.__version__},
           "method": "RMSE (vehicles per cell) per lead on held-out frames; historical average = mean of the "
                     "training frames at the same local time of day and day type (weekday/weekend), leave-one-day-out "
                     "on the training frames; "
                     "linear_blend = least squares on [x_t, x_t-1, HA_t+h, HA_t, 3x3 mean of x_t, "
                     "frame-mean anomaly, HA_t+h * anomaly] fitted on the training frames; "
                     "share_neither_periodic_nor_persistent = MSE(blend) / Var(test)",
           "sample": dict(score(x, times, per_day), parameters=manifest["parameters"])}
    p = manifest["parameters"]
    long = simulate(p["size"], days=14, step=p["step"], seed=p["seed"], tile_size=p["tile_size"], gsd=p["gsd"],
                    start="2024-06-03")
    xl = long.density.values[:, 0].astype(np.float64)
    out["same_city_14_days"] = score(xl, long.density["time"].values, 4 * per_day)
    path = Path(__file__).parent / "results" / "synth_forecastability.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:]), indent=2))
