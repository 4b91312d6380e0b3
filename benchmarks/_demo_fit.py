"""The demo's fit on the shipped sample, as the benchmarks that look into it repeat it
(``demo_errors.py``, ``uncertainty_synthetic.py``): the packaged pretrained model fine-tuned on the
sample's images and vehicle points, the true counts on its grid, and the test part's origins."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def fine_tuned(
    sample: Path, model: str, seed: int, minutes: float | None = None
) -> SimpleNamespace:
    """``images``, ``points``, ``est`` (``pretrained(model)`` fine-tuned with its budget, or
    ``minutes``), ``fit_seconds``, ``target`` (vehicles per cell), ``first_test`` (the index of the
    test part's first frame) and ``issues``: every origin whose targets lie in the test part."""
    import trafficrnn as tr

    images = tr.read_stack(sample / "images")
    points = tr.read_vectors(sample / "vehicles.gpkg")
    base = tr.pretrained(model) if minutes is None else tr.pretrained(model, max_time=minutes)
    est = tr.TrafficForecaster(**{**base.get_params(), "seed": seed, "progress": False})
    started = time.perf_counter()
    est.fit(images, vehicles=points, init=base)
    fit_seconds = time.perf_counter() - started
    target = tr.rasterize_points(points, est.grid_, times=images.time.values)
    times = images.indexes["time"]
    first = int(times.searchsorted(np.datetime64(est.training_summary_["split"]["test"][0])))
    return SimpleNamespace(
        images=images,
        points=points,
        est=est,
        fit_seconds=fit_seconds,
        target=target,
        first_test=first,
        issues=np.arange(first - 1, len(times) - est.horizon),
    )
