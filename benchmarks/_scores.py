"""What the seeded benchmarks share: a fit scored per lead next to the baselines (``demo_transfer.py``,
``demo_counts.py``), and the summary they write: RMSE per lead averaged over seeds, and whether each
deep run beats every baseline at every lead (``forecaster_testbed.py``, ``demo_transfer.py``)."""

from __future__ import annotations

import time

import numpy as np


def settings_from(base: dict, seed: int, overrides: dict | None = None) -> dict:
    """The flat settings of a fit: ``base`` (e.g. a fitted model's ``get_params()``: its
    architecture and fine-tuning settings) without its model name, ``overrides``, then ``seed``,
    32-bit precision and no progress bar."""
    settings = {k: v for k, v in base.items() if k not in ("model", "progress")}
    settings.update(overrides or {})
    settings.update(seed=seed, precision="32-true", progress=False)
    return settings


def fit_scored(est, images, target, points, init, key: str, per_lead: dict, baselines) -> float:
    """Fit ``est`` on the stack (``vehicles=points``, starting from ``init``), evaluate it as it
    evaluates itself (with ``baselines`` too while ``per_lead`` has none of them) and store each
    model's RMSE per lead in ``per_lead``, the fitted model under ``key``. Returns the fit's wall
    seconds."""
    began = time.perf_counter()
    est.fit(images, target, vehicles=points, init=init)
    seconds = time.perf_counter() - began
    table = est.evaluate(images, target, baselines=baselines if not per_lead else ())
    for model, sub in table.groupby(level="model"):
        per_lead[model if model in baselines else key] = [
            round(float(v), 4) for v in sub["rmse"].values
        ]
    return seconds


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
