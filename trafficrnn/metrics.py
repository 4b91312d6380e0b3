"""Masked forecast scores (MAE, RMSE, MAPE) per lead time, skill against a reference, truth alignment.

Every metric has the signature ``metric(pred, truth, mask=None) -> float`` and ignores cells where
``pred`` or ``truth`` is NaN or ``mask`` is False; scores are computed in raw (de-normalised) units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, TimestampError
from trafficrnn.grid import Grid
from trafficrnn.registry import Registry

__all__ = ["mae", "rmse", "mape", "skill", "per_lead", "align_truth", "METRICS", "get_metric"]


def _pairs(pred: Any, truth: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The finite, unmasked ``(pred, truth)`` values as two flat float64 arrays."""
    if (
        isinstance(pred, xr.DataArray)
        and isinstance(truth, xr.DataArray)
        and set(pred.dims) == set(truth.dims)
    ):
        truth = truth.transpose(*pred.dims)
    if isinstance(pred, xr.DataArray) and isinstance(mask, xr.DataArray):
        mask = mask.broadcast_like(pred).transpose(*pred.dims)
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    try:
        p, t = np.broadcast_arrays(p, t)
        ok = np.isfinite(p) & np.isfinite(t)
        if mask is not None:
            ok &= np.broadcast_to(np.asarray(mask, dtype=bool), ok.shape)
    except ValueError as exc:
        raise GridError(
            f"forecast of shape {np.shape(pred)}, truth of shape {np.shape(truth)} and mask of "
            f"shape {np.shape(mask)} do not broadcast: compare arrays on the same grid and times "
            "(see align_truth)"
        ) from exc
    return p[ok], t[ok]


def mae(pred: Any, truth: Any, mask: Any = None) -> float:
    """Mean absolute error over finite, unmasked cells; NaN when there is none.

    Parameters
    ----------
    pred, truth : array-like or xarray.DataArray of the same (broadcastable) shape
    mask : array-like of bool, optional
        True where the cell counts.

    Raises
    ------
    GridError
        If the shapes do not broadcast.
    """
    p, t = _pairs(pred, truth, mask)
    return float(np.abs(p - t).mean()) if p.size else float("nan")


def rmse(pred: Any, truth: Any, mask: Any = None) -> float:
    """Root mean squared error over finite, unmasked cells; NaN when there is none (see :func:`mae`).

    Raises
    ------
    GridError
        If the shapes do not broadcast.
    """
    p, t = _pairs(pred, truth, mask)
    return float(np.sqrt(((p - t) ** 2).mean())) if p.size else float("nan")


def mape(pred: Any, truth: Any, mask: Any = None, threshold: float = 0.0) -> float:
    """Mean absolute percentage error in percent, on cells with ``|truth| > threshold``.

    Cells whose truth is zero (or at most ``threshold``) are left out, since their relative
    error is undefined; NaN when no cell is left.

    Raises
    ------
    ConfigError
        If ``threshold`` is negative.
    GridError
        If the shapes do not broadcast.
    """
    if not threshold >= 0:
        raise ConfigError(
            f"threshold={threshold!r} is invalid: expected a number >= 0 (e.g. 1 vehicle)"
        )
    p, t = _pairs(pred, truth, mask)
    keep = np.abs(t) > threshold
    p, t = p[keep], t[keep]
    return float(100.0 * (np.abs(p - t) / np.abs(t)).mean()) if p.size else float("nan")


def skill(score_model: Any, score_reference: Any) -> Any:
    """Skill score ``1 - model / reference`` (1 perfect, 0 no better than the reference, < 0 worse).

    Works element-wise on floats, numpy arrays, pandas Series and DataFrames (e.g. two
    :func:`per_lead` tables). A zero reference score gives ``-inf``, ``0/0`` gives NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - score_model / score_reference


#: metric name -> function ``f(pred, truth, mask=None) -> float``
METRICS: Registry[Callable[..., float]] = Registry(
    "metric", {"mae": mae, "rmse": rmse, "mape": mape}
)


def get_metric(name: str) -> Callable[..., float]:
    """The metric function registered as ``name`` (case-insensitive).

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (a ``ConfigError``, hence a ``ValueError``); the message lists
        the valid names.
    """
    return METRICS.get(name)


def _check_grid(forecast: xr.DataArray, target: xr.DataArray) -> None:
    if forecast.rio.crs is None or target.rio.crs is None:
        same = (forecast.sizes.get("y"), forecast.sizes.get("x")) == (
            target.sizes.get("y"),
            target.sizes.get("x"),
        )
    else:
        same = Grid.from_dataarray(forecast).matches(Grid.from_dataarray(target))
    if not same:
        raise GridError(
            f"forecast grid ({forecast.sizes.get('y')} x {forecast.sizes.get('x')}, "
            f"{forecast.rio.crs}) differs from target grid ({target.sizes.get('y')} x "
            f"{target.sizes.get('x')}, {target.rio.crs}): evaluate on the grid the model predicts"
        )


def align_truth(forecast: xr.DataArray, target: xr.DataArray) -> xr.DataArray:
    """The observed values at each ``valid_time`` of a forecast, shaped like the forecast.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(issued, lead, band, y, x)`` (or single ``(lead, band, y, x)``) with a ``valid_time`` coord.
    target : xarray.DataArray
        ``(time, band, y, x)`` observations on the same grid, holding the forecast's bands.

    Returns
    -------
    xarray.DataArray
        Same dims and coords as ``forecast``; NaN where ``valid_time`` is not in ``target.time``;
        ``attrs["units"]`` of the target.

    Raises
    ------
    ConfigError
        If ``forecast`` has no ``valid_time`` or ``target`` lacks a dim.
    ModelMismatchError
        If a forecast band is missing from the target.
    GridError
        If the grids differ.
    TimestampError
        If target times repeat.
    """
    if "valid_time" not in forecast.coords:
        raise ConfigError(
            f"forecast with coords {list(forecast.coords)} has no 'valid_time': build it with "
            "trafficrnn.timeaxis.make_forecast"
        )
    missing_dims = {"time", "band", "y", "x"} - set(target.dims)
    if missing_dims:
        raise ConfigError(
            f"target dims {target.dims} lack {sorted(missing_dims)}: expected (time, band, y, x)"
        )
    bands = [str(b) for b in forecast["band"].values]
    known = [str(b) for b in target["band"].values]
    absent = [b for b in bands if b not in known]
    if absent:
        raise ModelMismatchError(
            f"forecast bands {absent} are not in the target bands {known}: "
            "evaluate against a target holding the forecast bands"
        )
    _check_grid(forecast, target)
    if not target.indexes["time"].is_unique:
        raise TimestampError("target times repeat: drop duplicate frames before aligning truth")
    valid = forecast["valid_time"]
    sub = target.sel(band=bands).transpose("time", "band", "y", "x")
    picked = sub.reindex(time=valid.values.ravel()).values
    values = picked.reshape(valid.shape + picked.shape[1:])
    order = valid.dims + ("band", "y", "x")
    values = np.transpose(values, [order.index(d) for d in forecast.dims])
    out = forecast.copy(data=values.astype(forecast.dtype, copy=False))
    out.attrs = {k: v for k, v in target.attrs.items() if k in ("units", "timezone", "tile_size")}
    return out


def per_lead(
    forecast: xr.DataArray,
    truth: Any,
    metrics: Sequence[str] | Mapping[str, Callable[..., float]] = ("mae", "rmse", "mape"),
    mask: Any = None,
) -> pd.DataFrame:
    """Scores per lead time, pooled over issue times, bands and cells.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(lead, band, y, x)`` or ``(issued, lead, band, y, x)``, in raw units.
    truth : xarray.DataArray or numpy.ndarray
        Shaped like ``forecast`` (see :func:`align_truth`), or the target ``(time, band, y, x)``,
        which is aligned on ``valid_time`` here.
    metrics : sequence of names or mapping name -> callable
        Registry names (see :func:`get_metric`), or custom ``f(pred, truth, mask=None)``.
    mask : array-like or DataArray of bool, optional
        True where cells count, broadcast against the forecast (e.g. a road mask ``(y, x)``).

    Returns
    -------
    pandas.DataFrame
        Index ``lead`` = 1..H (steps of the cadence), one column per metric.

    Raises
    ------
    ConfigError
        If ``forecast`` has no ``lead`` dim or forecast and truth carry different units.
    ValueError
        For an unknown metric name.
    GridError
        If truth or mask do not match the forecast shape.
    """
    if not isinstance(forecast, xr.DataArray) or "lead" not in forecast.dims:
        raise ConfigError(
            f"forecast with dims {getattr(forecast, 'dims', None)} has no 'lead' dim: expected "
            "(lead, band, y, x) or (issued, lead, band, y, x) from make_forecast"
        )
    if isinstance(truth, xr.DataArray) and "time" in truth.dims and "lead" not in truth.dims:
        truth = align_truth(forecast, truth)
    units = (forecast.attrs.get("units"), getattr(truth, "attrs", {}).get("units"))
    if None not in units and units[0] != units[1]:
        raise ConfigError(
            f"forecast units {units[0]!r} differ from truth units {units[1]!r}: de-normalise "
            "the forecast (Normalizer.inverse_transform) before scoring"
        )
    funcs = (
        dict(metrics)
        if isinstance(metrics, Mapping)
        else {str(m).lower(): get_metric(m) for m in metrics}
    )
    if isinstance(truth, xr.DataArray):
        truth = truth.transpose(*forecast.dims)
    if isinstance(mask, xr.DataArray):
        mask = mask.broadcast_like(forecast).transpose(*forecast.dims)
    axis = forecast.get_axis_num("lead")
    pred = np.moveaxis(forecast.values, axis, 0)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != forecast.shape:
        raise GridError(
            f"truth of shape {truth.shape} does not match forecast {forecast.shape} "
            f"{forecast.dims}: align it with align_truth(forecast, target)"
        )
    truth = np.moveaxis(truth, axis, 0)
    if mask is not None:
        try:
            mask = np.moveaxis(
                np.broadcast_to(np.asarray(mask, dtype=bool), forecast.shape), axis, 0
            )
        except ValueError as exc:
            raise GridError(
                f"mask of shape {np.shape(mask)} does not broadcast to the forecast "
                f"{forecast.shape} {forecast.dims}: give a (y, x) or full-shape mask"
            ) from exc
    rows = [
        {
            name: f(pred[k], truth[k], mask=None if mask is None else mask[k])
            for name, f in funcs.items()
        }
        for k in range(pred.shape[0])
    ]
    return pd.DataFrame(
        rows, index=pd.Index(np.arange(1, pred.shape[0] + 1), name="lead"), columns=list(funcs)
    )
