"""The summary the seeded benchmarks write: RMSE per lead averaged over seeds, and whether each deep
run beats every baseline at every lead (``forecaster_testbed.py``, ``demo_transfer.py``)."""

from __future__ import annotations

import numpy as np


def seed_summary(per_lead: dict, runs: list, baselines: tuple[str, ...]) -> dict:
    """From ``per_lead`` (``"<model>/<variant>/seed<s>"`` and each baseline -> RMSE per lead) and the
    ``runs`` (dicts with ``model``, ``variant``, ``seed``, ``rmse``): the means over seeds, the mean
    over leads of each, and whether each mean and each run is below every baseline at every lead."""
    groups: dict[str, list] = {}
    for r in runs:
        groups.setdefault(f"{r['model']}/{r['variant']}", []).append(r["rmse"])
    means = {k: [round(float(v), 4) for v in np.mean(rows, axis=0)] for k, rows in groups.items()}
    best_baseline = np.min([per_lead[b] for b in baselines], axis=0)
    return {
        "rmse_per_lead": per_lead,
        "rmse_mean_of_seeds": means,
        "mean_over_leads": {
            k: round(float(np.mean(v)), 4)
            for k, v in {**means, **{b: per_lead[b] for b in baselines}}.items()
        },
        "beats_every_baseline_at_every_lead": {
            k: bool((np.array(v) < best_baseline).all()) for k, v in means.items()
        },
        "each_seed_beats_every_baseline_at_every_lead": {
            f"{r['model']}/{r['variant']}/seed{r['seed']}": bool(
                (np.array(r["rmse"]) < best_baseline).all()
            )
            for r in runs
        },
    }
