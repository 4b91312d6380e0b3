"""Per-lead evaluation of a fitted forecaster beside the baselines, on the same issue times."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.data import chronological_split
from trafficrnn.errors import ConfigError
from trafficrnn.metrics import align_truth, per_lead, skill
from trafficrnn.models.baselines import get_baseline

DEFAULT_BASELINES = ("persistence", "historical_average", "ridge")


def evaluation_issues(est, times: pd.DatetimeIndex, split: str | None) -> tuple[np.ndarray, slice]:
    """Issue indices (last input frame) of every full, gap-free window in ``split`` (or the whole stack).

    Returns the indices and the slice of frames baselines may learn from (everything before the split).
    """
    from trafficrnn.estimator import _contiguous_starts

    span = est.input_steps + est.horizon
    if split is None:
        rng, fit_on = slice(0, len(times)), slice(0, len(times))
    elif split in ("train", "val", "test"):
        parts = chronological_split(times, val=est.val, test=est.test, input_steps=est.input_steps,
                                    horizon=est.horizon)
        rng = parts[split]
        # baselines learn from what precedes the split's first target (train + val for the test split)
        fit_on = slice(0, parts["val"].start) if split == "train" else slice(0, rng.start + est.input_steps)
    else:
        raise ConfigError(f"split={split!r} is invalid: expected 'test', 'val', 'train' or None (whole stack)")
    starts = _contiguous_starts(times, est.cadence_, span, rng, 1)
    if len(starts) == 0:
        raise ConfigError(f"no full window of {span} frames in the {split or 'whole'} stack: "
                          "pass a longer stack or split=None")
    return starts + est.input_steps - 1, fit_on


def evaluate(est, images: xr.DataArray, target: xr.DataArray | None = None, *, split: str | None = "test",
             baselines: Sequence[str] = DEFAULT_BASELINES, horizon: int | None = None,
             static: xr.DataArray | None = None, covariates: pd.DataFrame | None = None,
             align: str = "exact") -> pd.DataFrame:
    """Score the model and baselines per lead on the same issue times, in raw units.

    ``align="resample"`` averages images of another pixel size onto the model's first.

    ``static`` and ``covariates`` are passed to the model's ``predict_many`` (the baselines read
    neither).

    Returns
    -------
    pandas.DataFrame
        Rows ``(model, lead)``; columns ``mae``, ``rmse``, ``mape`` and ``skill_rmse`` (1 − RMSE /
        RMSE of persistence; NaN without a persistence row). ``attrs`` hold the issue count.
    """
    est._check_fitted()
    images_c, grid = est._prepare(images, align)
    truth_da = images_c if target is None else est._align_target(images_c, target, grid)
    times = pd.DatetimeIndex(images_c.time.values)
    issues, fit_on = evaluation_issues(est, times, split)
    horizon = est._check_horizon(horizon)
    tables = {}
    observed = truth_da if getattr(est, "target_inputs", False) else None
    fc = est.predict_many(images_c, issues, horizon=horizon, static=static, target=observed, covariates=covariates)
    truth = align_truth(fc, truth_da)
    tables[est.model] = per_lead(fc, truth)
    history = truth_da.sel(band=est.bands_)
    history.attrs["units"] = est.units_
    for name in baselines:
        kwargs = {"horizon": horizon} if name == "ridge" else {}
        base = get_baseline(name, **kwargs).fit(history.isel(time=fit_on))
        ok = issues >= base.min_history - 1
        bfc = base.predict_many(history, issues[ok], horizon)
        tables[name] = per_lead(bfc, align_truth(bfc, history))
    table = pd.concat(tables, names=["model", "lead"])
    if "persistence" in tables:
        ref = tables["persistence"]["rmse"]
        table["skill_rmse"] = [skill(r, ref.loc[lead]) for (_, lead), r in table["rmse"].items()]
    else:
        table["skill_rmse"] = np.nan
    table.attrs.update(issues=int(len(issues)), split=split or "all",
                       first_issue=str(times[issues[0]]), last_issue=str(times[issues[-1]]))
    return table
