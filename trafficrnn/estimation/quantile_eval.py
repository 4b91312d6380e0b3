"""The probabilistic part of ``evaluate(..., quantiles=...)``: the model's quantiles (its
calibration's, or its quantile head's) and two probabilistic baselines, scored per lead by
:func:`trafficrnn.probabilistic.score_quantiles`.

The baselines learn from the frames before the scored part, as the point baselines do:

* ``climatology``: the empirical quantiles of each cell and band over the earlier frames of the same
  slot of the local day (one cadence step; :class:`~trafficrnn.models.baselines.HistoricalAverage`'s
  day slots), ignoring the recent past (the cell's overall quantiles for a slot never seen);
* ``persistence_quantiles``: the last observed frame plus the empirical quantiles, per lead and band
  (pooled over cells), of the change ``y[t + h] - y[t]`` over the earlier frames.

Both are clipped at 0, as the model's. Their MAE / RMSE / MAPE are those of their median.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.metrics import mae, mape, rmse
from trafficrnn.probabilistic import DENSE_LEVELS, score_quantiles

__all__ = ["PROBABILISTIC_BASELINES", "probabilistic_tables", "model_quantiles"]

#: the probabilistic baselines scored beside the model (when any baseline is asked for)
PROBABILISTIC_BASELINES = ("climatology", "persistence_quantiles")


def model_quantiles(point: np.ndarray, calibration, bands: Sequence[str], spread=None):
    """``quantiles_of(taus)`` of a calibrated model: the point forecasts ``(issued, lead, band, y, x)``
    plus the calibration's offsets (times ``spread``, shaped like ``point``, for one scaled by the
    members' spread; times the square root of the level for one scaled by it), clipped at 0."""
    scale = 1.0 if spread is None else np.asarray(spread, dtype=np.float64)[None]
    if calibration.scale == "level":
        from trafficrnn.estimation.adaptive import level_scale

        scale = level_scale(point, calibration.floor)[None]

    def quantiles_of(taus: Sequence[float]) -> np.ndarray:
        off = calibration.offsets(list(taus), point.shape[1], bands)
        return np.clip(point[None] + off[:, None, :, :, None, None] * scale, 0, None)

    return quantiles_of


def _sorted_quantiles(sorted_block: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """Linear-interpolation quantiles along axis 0 of values sorted with NaN last: ``(len(taus), ...)``;
    NaN where no value is finite."""
    n = np.isfinite(sorted_block).sum(axis=0)
    out = np.full((len(taus), *sorted_block.shape[1:]), np.nan)
    has = n > 0
    for i, t in enumerate(taus):
        pos = t * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a = np.take_along_axis(sorted_block, lo[None], 0)[0]
        b = np.take_along_axis(sorted_block, hi[None], 0)[0]
        out[i] = np.where(has, a + (b - a) * (pos - lo), np.nan)
    return out


def climatology_quantiles(
    history: xr.DataArray, fit_on: slice, valid: np.ndarray, timezone: str | None, cadence
):
    """``quantiles_of(taus)`` of the slot climatology for valid times ``(issued, lead)``."""
    from trafficrnn.timeaxis import wall_clock

    train = history.isel(time=fit_on)
    step = max(int(pd.Timedelta(cadence).total_seconds()), 1)
    zone = history.attrs.get("timezone")

    def slots_of(
        times: Any,
    ) -> np.ndarray:  # the cadence step of the local day, as the HA's day slots
        local = wall_clock(pd.DatetimeIndex(times), timezone=timezone, naive_zone=zone)
        seconds = np.asarray(local.hour * 3600 + local.minute * 60 + local.second, dtype=np.int64)
        return seconds // step if step < 86400 else np.zeros_like(seconds)

    values = np.asarray(train.values, dtype=np.float64)
    slots = slots_of(train.time.values)
    blocks = {int(s): np.sort(values[slots == s], axis=0) for s in np.unique(slots)}
    overall = np.sort(values, axis=0)
    wanted = slots_of(valid.ravel()).reshape(valid.shape)

    def quantiles_of(taus: Sequence[float]) -> np.ndarray:
        fallback = _sorted_quantiles(overall, taus)
        table = {s: _sorted_quantiles(b, taus) for s, b in blocks.items()}
        out = np.empty((len(taus), *valid.shape, *values.shape[1:]))
        for (n, h), s in np.ndenumerate(wanted):
            q = table.get(int(s), fallback)
            out[:, n, h] = np.where(np.isfinite(q), q, fallback)
        return np.clip(out, 0, None)

    return quantiles_of


def persistence_quantiles(
    history: xr.DataArray, fit_on: slice, issues: np.ndarray, horizon: int, cadence
):
    """``quantiles_of(taus)`` of persistence plus the empirical quantiles of the earlier changes."""
    values = np.asarray(history.values, dtype=np.float64)
    ns = pd.DatetimeIndex(history.time.values).as_unit("ns").asi8
    train = np.arange(fit_on.start or 0, min(fit_on.stop, len(values)))
    changes = []
    for h in range(1, horizon + 1):
        t = train[train + h < (fit_on.stop or len(values))]
        t = t[ns[t + h] - ns[t] == h * pd.Timedelta(cadence).value]
        d = values[t + h] - values[t]  # (n, B, y, x)
        changes.append(np.moveaxis(d, 1, 0).reshape(values.shape[1], -1))  # (B, n * cells)
    last = values[issues]  # (N, B, y, x)

    def quantiles_of(taus: Sequence[float]) -> np.ndarray:
        off = np.full((len(taus), horizon, values.shape[1]), np.nan)
        for h, per_band in enumerate(changes):
            for b, d in enumerate(per_band):
                d = d[np.isfinite(d)]
                if d.size:
                    off[:, h, b] = np.quantile(d, list(taus))
        return np.clip(last[None, :, None] + off[:, None, :, :, None, None], 0, None)

    return quantiles_of


def _point_scores(median: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    rows = [
        {"mae": mae(median[:, h], truth[:, h]), "rmse": rmse(median[:, h], truth[:, h]),
         "mape": mape(median[:, h], truth[:, h])}
        for h in range(truth.shape[1])
    ]  # fmt: skip
    return pd.DataFrame(rows, index=pd.Index(np.arange(1, truth.shape[1] + 1), name="lead"))


def probabilistic_tables(
    est,
    fc: xr.DataArray,
    truth: xr.DataArray,
    history: xr.DataArray,
    fit_on: slice,
    issues: np.ndarray,
    quantiles: Sequence[float],
    *,
    baselines: bool = True,
    dense: Sequence[float] = DENSE_LEVELS,
    spread: np.ndarray | None = None,
    head: tuple[Sequence[float], np.ndarray] | None = None,
) -> dict[str, pd.DataFrame]:
    """Per-lead probabilistic scores of the model (its calibration around the forecasts ``fc``, or
    its quantile head's forecasts ``head``) and, with ``baselines``, of
    :data:`PROBABILISTIC_BASELINES` (with the MAE / RMSE / MAPE of their median).

    Parameters
    ----------
    fc, truth : xarray.DataArray
        ``(issued, lead, band, y, x)`` forecasts of the model and the aligned truth.
    history : xarray.DataArray
        ``(time, band, y, x)`` observed targets (what the point baselines read).
    fit_on : slice
        The frames the baselines learn from; ``issues``: the issue indices into ``history``.
    spread : numpy.ndarray, optional
        ``spread + floor`` of an ensemble's members, shaped like ``fc``, for an adaptive calibration
        (:func:`trafficrnn.estimation.adaptive.spread_of`).
    head : (levels, numpy.ndarray), optional
        A model without calibration: the trained levels of its quantile head and its forecasts
        ``(level, issued, lead, band, y, x)`` (raw units, sorted). The levels scored lie within the
        trained ones (interpolated linearly between them); the CRPS's dense levels beyond the
        outermost trained levels take those levels' values (constant tails: the CRPS of a head
        with few levels is that of a distribution without tails beyond them).
    """
    from trafficrnn.estimation.calibration import require_calibration
    from trafficrnn.estimation.quantile_head import interpolate_levels

    point = np.asarray(fc.transpose("issued", "lead", "band", "y", "x").values, dtype=np.float64)
    y = np.asarray(truth.transpose(*fc.dims).values, dtype=np.float64)
    bands = [str(b) for b in fc.band.values]
    if head is not None:
        trained, values = head
        sources: dict[str, Any] = {
            est.model: lambda taus: interpolate_levels(np.asarray(values), trained, taus)
        }
    else:
        sources = {est.model: model_quantiles(point, require_calibration(est), bands, spread)}
    if baselines:
        valid = np.asarray(fc["valid_time"].transpose("issued", "lead").values)
        sources["climatology"] = climatology_quantiles(
            history, fit_on, valid, est.timezone, est.cadence_
        )
        sources["persistence_quantiles"] = persistence_quantiles(
            history, fit_on, issues, point.shape[1], est.cadence_
        )
    tables = {}
    for name, quantiles_of in sources.items():
        table = score_quantiles(quantiles_of, y, quantiles, dense=dense)
        if name != est.model:
            table = _point_scores(quantiles_of([0.5])[0], y).join(table)
        tables[name] = table
    return tables
