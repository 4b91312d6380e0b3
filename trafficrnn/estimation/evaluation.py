"""Per-lead evaluation of a fitted forecaster beside the baselines, on the same issue times, in one batched pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError
from trafficrnn.metrics import align_truth, per_lead, skill
from trafficrnn.models.baselines import BASELINES, get_baseline
from trafficrnn.splits import SplitChoice, evaluation_split
from trafficrnn.timeaxis import contiguous_starts

DEFAULT_BASELINES = tuple(
    BASELINES
)  # every registered baseline: persistence, historical_average, ridge


class ScoredWindows(NamedTuple):
    """What :func:`evaluation_issues` picks: the issue indices (last input frame) of the scored
    windows, the frames the baselines may learn from, and the split choice behind them (None for
    the whole stack)."""

    issues: np.ndarray
    fit_on: slice
    choice: SplitChoice | None


def evaluation_issues(est, times: pd.DatetimeIndex, split: str | None, *data: Any) -> ScoredWindows:
    """Issue indices (last input frame) of every full, gap-free window in ``split`` (or the whole stack).

    ``data``: the stack (and target) whose ``attrs["split"]`` gives the parts when the estimator's
    ``val`` / ``test`` are left ``None`` (see :mod:`trafficrnn.splits`).
    Returns the indices, the slice of frames baselines may learn from (everything before the
    split) and the split choice.
    """
    span = est.input_steps + est.horizon
    choice = None
    if split is None:
        rng, fit_on = slice(0, len(times)), slice(0, len(times))
    elif split in ("train", "val", "test"):
        parts, choice = evaluation_split(est, times, split, *data)
        rng = parts[split]
        # baselines learn from what precedes the split's first target (train + val for the test split)
        fit_on = (
            slice(0, parts["val"].start)
            if split == "train"
            else slice(0, rng.start + est.input_steps)
        )
    else:
        raise ConfigError(
            f"split={split!r} is invalid: expected 'test', 'val', 'train' or None (whole stack)"
        )
    starts = contiguous_starts(times, est.cadence_, span, rng, 1)
    if len(starts) == 0:
        raise ConfigError(
            f"no full window of {span} frames in the {split or 'whole'} stack: "
            "pass a longer stack or split=None"
        )
    return ScoredWindows(starts + est.input_steps - 1, fit_on, choice)


def baseline_history(est, truth: xr.DataArray) -> xr.DataArray:
    """The observed targets the baselines learn from and are scored on: the model's bands and units, and its
    times read as the model reads them (``attrs["timezone"]``: the training stack's zone, none for UTC)."""
    history = truth.sel(band=est.bands_)
    history.attrs["units"] = est.units_
    zone = getattr(est, "naive_zone_", None)
    if zone:
        history.attrs["timezone"] = zone
    else:
        history.attrs.pop("timezone", None)
    return history


def evaluate(
    est,
    images: xr.DataArray,
    target: xr.DataArray | None = None,
    *,
    split: str | None = "test",
    baselines: Sequence[str] = DEFAULT_BASELINES,
    horizon: int | None = None,
    static: xr.DataArray | None = None,
    covariates: pd.DataFrame | None = None,
    align: str = "exact",
    progress: bool | None = None,
    quantiles: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Score the model and baselines per lead on the same issue times, in raw units.

    The model forecasts every issue time in batches (``CHUNK`` issue times at a time, each from
    only the frames it reads), then each baseline is fitted once and forecasts every issue time
    at once; all are scored against the same observed frames.

    Parameters
    ----------
    est : TrafficForecaster or ForecastEnsemble
        Fitted.
    images : xarray.DataArray
        ``(time, band, y, x)`` stack the model reads (with CRS and transform).
    target : xarray.DataArray, optional
        ``(time, band, y, x)`` observed targets on the model's grid; ``None``: ``images`` is its
        own target (density-only models).
    split : {"test", "val", "train"} or None
        The chronological split whose windows are scored; ``None``: every window of the stack. The
        parts are the estimator's ``val`` / ``test`` where set, else the published split the stack
        carries (``attrs["split"]``: the parts it does not hold are empty, and a stack that starts
        in the scored part is refused when baselines are asked for: they would have no earlier day
        to learn from), else the fractions 0.15 / 0.15; ``attrs["split_source"]`` of the table says
        which.
    baselines : sequence of str
        Baselines fitted on the frames before the split (see :func:`trafficrnn.models.baselines.get_baseline`);
        the historical average and ridge get the model's ``timezone``, so that their slots and calendar
        features read the same local clock as the model's calendar channels.
    horizon : int, optional
        Leads scored (at most the model's).
    static, covariates : optional
        Passed to the model's ``predict_many`` (the baselines read neither).
    align : {"exact", "resample", "reproject"}
        ``"exact"`` refuses images of another pixel size (GSD); ``"resample"`` averages them onto the
        model's GSD first (same CRS and origin); ``"reproject"`` warps them onto the model's grid
        (any CRS; see :func:`trafficrnn.estimation.checks.reproject_to_grid`).
    progress : bool, optional
        Show a progress bar (forecasts made); ``None``: the model's ``progress`` setting, as ``fit``.
    quantiles : sequence of float, optional
        Probability levels, e.g. ``(0.1, 0.5, 0.9)``, of a calibrated model (``calibrate``), or of
        one with a quantile head (``model_kwargs={"quantiles": ...}``; the calibration wins where
        a model has both; see :func:`~trafficrnn.estimation.quantile_eval.probabilistic_tables`
        for the head's CRPS): the table gains the columns ``pinball``, ``coverage_<p>`` /
        ``width_<p>`` of each central interval (80 for 0.1 / 0.9) and ``crps`` (quantile form,
        99 levels), for the model and, when ``baselines`` are asked for, the rows ``climatology``
        and ``persistence_quantiles`` (see :mod:`trafficrnn.estimation.quantile_eval`); NaN for
        the point baselines.

    Returns
    -------
    pandas.DataFrame
        Rows ``(model, lead)``; columns ``mae``, ``rmse``, ``mape`` and ``skill_rmse`` (1 − RMSE /
        RMSE of persistence; NaN without a persistence row), and the probabilistic columns with
        ``quantiles``. ``attrs`` hold the issue count.

    Raises
    ------
    NotFittedError, ModelMismatchError
        Before fit; a stack the model cannot read (bands, CRS, GSD, cadence).
    ConfigError
        An unknown split, no full window in it, or a bad ``align`` / ``horizon``.
    CalibrationError
        ``quantiles`` of a model with neither calibration nor quantile head (bad levels, or levels
        beyond a head's trained ones: ConfigError).
    """
    if quantiles is not None:
        from trafficrnn.estimation.quantile_head import quantile_plan

        quantiles, _ = quantile_plan(est, quantiles)

    checked = est.check_stack(images, target, align=align, horizon=horizon)
    images_c, horizon = checked.images, checked.horizon
    truth_da = images_c if target is None else checked.target
    times = pd.DatetimeIndex(images_c.time.values)
    issues, fit_on, choice = evaluation_issues(est, times, split, images, target)
    if baselines:
        check_baseline_days(est, split, fit_on, choice)
    observed = truth_da if getattr(est, "target_inputs", False) else None
    show = _progress_of(est) if progress is None else bool(progress)
    args = (images_c, observed, issues, horizon, static, covariates)
    tables, fc = point_tables(est, args, truth_da, fit_on, baselines, show)
    if quantiles is not None:
        add_probabilistic_tables(est, tables, fc, args, truth_da, fit_on, quantiles, baselines)
    return scored_table(tables, times, issues, split, choice)


def check_baseline_days(est, split: str | None, fit_on: slice, choice: SplitChoice | None) -> None:
    """Refuse baselines on a stack that starts in the scored part of its published split."""
    if (
        choice is not None
        and choice.source == "published"
        and split != "train"
        and fit_on.stop <= est.input_steps
    ):
        raise ConfigError(
            f"the stack starts in the {split} part of its dataset's published split "
            f"({choice.published.describe()}): the baselines would have no day before it to learn "
            "from. Pass the whole stack (only the windows of that part are scored), or baselines=() "
            "to score the model alone, or split=None (CLI: --split all) for every window"
        )


def point_tables(
    est,
    args: tuple,
    truth_da: xr.DataArray,
    fit_on: slice,
    baselines: Sequence[str],
    show: bool,
) -> tuple[dict[str, pd.DataFrame], xr.DataArray]:
    """Per-lead scores of the model and of each baseline (``args``: the model's forecast inputs),
    and the model's forecasts."""
    from tqdm.auto import tqdm

    issues, horizon = args[2], args[3]
    tables = {}
    with tqdm(
        total=len(issues) * (1 + len(baselines)),
        desc=f"evaluate {est.model}",
        unit="forecast",
        disable=not show,
    ) as bar:
        fc = model_forecasts(est, *args, bar.update)
        tables[est.model] = per_lead(fc, align_truth(fc, truth_da))
        history = baseline_history(est, truth_da)
        for name in baselines:
            bar.set_description(f"evaluate {name}")
            base = get_baseline(name, horizon=horizon, timezone=est.timezone).fit(
                history.isel(time=fit_on)
            )
            ok = issues >= base.min_history - 1
            bfc = base.predict_many(history, issues[ok], horizon)
            tables[name] = per_lead(bfc, align_truth(bfc, history))
            bar.update(len(issues))
        if baselines:
            bar.set_description(f"evaluate {est.model} and {len(baselines)} baselines")
    return tables, fc


def add_probabilistic_tables(
    est,
    tables: dict[str, pd.DataFrame],
    fc: xr.DataArray,
    args: tuple,
    truth_da: xr.DataArray,
    fit_on: slice,
    quantiles: Sequence[float],
    baselines: Sequence[str],
) -> None:
    """Join the model's probabilistic scores to its table; add the probabilistic baselines' rows.

    A calibrated model's quantiles are its calibration's around ``fc``; else those of its quantile
    head, forecast at its trained levels (a second pass over the issue times; plus their conformal
    shifts for a calibration with ``adaptive="head"``)."""
    from trafficrnn.estimation.adaptive import spread_of
    from trafficrnn.estimation.quantile_eval import probabilistic_tables
    from trafficrnn.estimation.quantile_head import HEAD_METHODS, head_levels, quantile_method

    head = None
    if quantile_method(est) in HEAD_METHODS:
        trained = head_levels(est)
        found = model_forecasts(est, *args, lambda n: None, quantiles=trained)
        head = (trained, found.transpose("quantile", *fc.dims).values)
    found = probabilistic_tables(
        est,
        fc,
        align_truth(fc, truth_da),
        baseline_history(est, truth_da),
        fit_on,
        args[2],
        quantiles,
        baselines=bool(baselines),
        spread=spread_of(est, getattr(est, "calibration_", None), *args),
        head=head,
    )
    tables[est.model] = tables[est.model].join(found.pop(est.model))
    tables.update(found)


def scored_table(
    tables: dict[str, pd.DataFrame],
    times: pd.DatetimeIndex,
    issues: np.ndarray,
    split: str | None,
    choice: SplitChoice | None,
) -> pd.DataFrame:
    """The tables in one, with the skill over persistence and the issue times in ``attrs``."""
    table = pd.concat(tables, names=["model", "lead"])
    if "persistence" in tables:
        ref = tables["persistence"]["rmse"]
        table["skill_rmse"] = [skill(r, ref.loc[lead]) for (_, lead), r in table["rmse"].items()]
    else:
        table["skill_rmse"] = np.nan
    table.attrs.update(
        issues=int(len(issues)),
        split=split or "all",
        split_source=choice.describe() if choice is not None else "every window of the stack",
        first_issue=str(times[issues[0]]),
        last_issue=str(times[issues[-1]]),
    )
    return table


#: issue times the model forecasts per call in :func:`evaluate` (a multiple of predict_many's batch of 32,
#: so that the batches, and the numbers, are those of one predict_many over every issue time)
CHUNK = 128


def model_forecasts(
    est,
    images: xr.DataArray,
    observed: xr.DataArray | None,
    issues: np.ndarray,
    horizon: int,
    static,
    covariates,
    done: Callable[[int], object],
    quantiles: Sequence[float] | None = None,
) -> xr.DataArray:
    """``est.predict_many(images, issues, ...)``, ``CHUNK`` issue times at a time, each call given only the
    frames its forecasts read (``history_needed`` before the first issue time, through the last one's
    targets), so that nothing is normalised twice; ``done(n)`` after each call. ``quantiles``: passed
    on (the forecasts gain a leading ``quantile`` dimension)."""
    extra = {} if quantiles is None else {"quantiles": quantiles}
    back = est.history_needed
    parts = []
    for i in range(0, len(issues), CHUNK):
        ends = issues[i : i + CHUNK]
        frames = slice(
            max(int(ends[0]) - back + 1, 0), min(int(ends[-1]) + horizon + 1, images.sizes["time"])
        )
        parts.append(
            est.predict_many(
                images.isel(time=frames),
                ends - frames.start,
                horizon=horizon,
                static=static,
                target=None if observed is None else observed.isel(time=frames),
                covariates=covariates,
                **extra,
            )
        )
        done(len(ends))
    return (
        parts[0]
        if len(parts) == 1
        else xr.concat(
            parts, dim="issued", coords="different", compat="equals", combine_attrs="override"
        )
    )


_model_forecasts = model_forecasts  # its earlier, private name


def _progress_of(est) -> bool:
    """The ``progress`` setting of a model, or of an ensemble's first member."""
    if hasattr(est, "progress"):
        return bool(est.progress)
    members = getattr(est, "estimators_", None)
    return bool(getattr(members[0], "progress", True)) if members else True
