"""Quantile forecasts of a quantile head: a model trained with ``model_kwargs={"quantiles": (...)}``.

The network's head gives, per lead, band and trained level, an offset from the point forecast,
trained with the pinball loss on the normalised scale (see
:class:`~trafficrnn.models.forecaster.EncoderForecaster` and
:class:`~trafficrnn.training.ForecastModule`). :func:`head_values` turns its outputs into raw
units: de-normalised as the point forecast, sorted across the levels in each cell (monotone
rearrangement, Chernozhukov et al., 2010) and clipped at 0 (counts are non-negative).
:func:`interpolate_levels` gives the levels asked for: the trained ones as they are, those between
two trained levels linearly interpolated; :func:`check_head_levels` refuses levels beyond the
outermost trained ones (no extrapolation).

Which way a model's quantiles come (:func:`quantile_method`): its split-conformal calibration where
it has one (``calibrate`` wins), its quantile head plus conformal shifts where it was calibrated
with ``adaptive="head"`` (:mod:`trafficrnn.estimation.conformal_head`), else its quantile head;
neither is refused naming both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from trafficrnn.errors import ConfigError

__all__ = [
    "HEAD_METHODS",
    "check_head_levels",
    "head_forecast",
    "head_levels",
    "head_values",
    "interpolate_levels",
    "quantile_method",
    "quantile_plan",
]


#: the values of :func:`quantile_method` whose quantiles come from the quantile head
HEAD_METHODS = ("head", "conformal head")


def head_levels(est: Any) -> tuple[float, ...] | None:
    """The levels the quantile head of a fitted model was trained on; for an ensemble, those of its
    members where every member has a head with the same levels; else None."""
    members = getattr(est, "estimators_", None)
    if members is not None:
        found = {head_levels(member) for member in members}
        return found.pop() if len(found) == 1 else None
    levels = getattr(getattr(est, "model_", None), "quantiles", None)
    return None if levels is None else tuple(float(q) for q in levels)


def quantile_method(est: Any) -> str:
    """``"calibration"`` for a calibrated model (the calibration wins over a quantile head),
    ``"conformal head"`` for one calibrated with ``adaptive="head"`` (conformalised quantile head:
    the head's quantiles plus conformal shifts), ``"head"`` for one with a quantile head alone.

    Raises
    ------
    CalibrationError
        Neither: the message names both ways (calibrate, or train with a quantile head).
    """
    from trafficrnn.estimation.calibration import require_calibration

    calibration = getattr(est, "calibration_", None)
    if calibration is not None:
        return "conformal head" if calibration.scale == "head" else "calibration"
    if head_levels(est) is not None:
        return "head"
    require_calibration(est)  # raises, naming both ways
    raise AssertionError("unreachable")


def quantile_plan(est: Any, quantiles: Sequence[float]) -> tuple[tuple[float, ...], str]:
    """The levels, checked, and how ``est`` makes them (:func:`quantile_method`); levels asked of a
    quantile head (raw or conformalised) must lie within its trained ones.

    Raises
    ------
    ConfigError, CalibrationError
    """
    from trafficrnn.estimation.calibration import check_quantiles

    quantiles = check_quantiles(quantiles)
    method = quantile_method(est)
    if method in HEAD_METHODS:
        check_head_levels(quantiles, head_levels(est))
    return quantiles, method


def check_head_levels(quantiles: Sequence[float], trained: Sequence[float]) -> None:
    """Refuse levels outside the range of the ``trained`` levels of a quantile head.

    Raises
    ------
    ConfigError
        Naming the level, the trained levels and the fixes.
    """
    low, high = float(trained[0]), float(trained[-1])
    outside = [float(q) for q in quantiles if not low - 1e-9 <= float(q) <= high + 1e-9]
    if outside:
        shown = ", ".join(f"{q:g}" for q in trained)
        raise ConfigError(
            f"quantiles={tuple(float(q) for q in quantiles)!r:.80}: level {outside[0]:g} lies "
            f"outside the levels the model's quantile head was trained on ({shown}): ask for "
            f"levels from {low:g} to {high:g} (those between two trained levels are interpolated "
            "linearly; none is extrapolated), or train with model_kwargs={'quantiles': (...)} "
            "including it, or calibrate the model (model.calibrate(stack))"
        )


def interpolate_levels(values: np.ndarray, trained: Sequence[float], asked: Sequence[float]):
    """``values`` with the ``trained`` levels along axis 0 at the ``asked`` levels: a trained level
    as it is, one between two trained levels linearly interpolated between them, one beyond the
    outermost trained levels their value (constant tails)."""
    t = np.asarray(trained, dtype=np.float64)
    out = np.empty((len(asked), *values.shape[1:]), dtype=values.dtype)
    for i, tau in enumerate(asked):
        if len(t) == 1:
            out[i] = values[0]
            continue
        hi = int(np.clip(np.searchsorted(t, tau), 1, len(t) - 1))
        w = float(np.clip((tau - t[hi - 1]) / (t[hi] - t[hi - 1]), 0.0, 1.0))
        out[i] = values[hi] if w == 1.0 else values[hi - 1] * (1 - w) + values[hi] * w
    return out


def head_values(raw: np.ndarray, normalizer: Any) -> np.ndarray:
    """The head's outputs ``(issued, lead, level, band, y, x)`` (normalised) as quantiles in raw
    units ``(level, issued, lead, band, y, x)``: de-normalised, sorted across the levels in each
    cell (monotone rearrangement), clipped at 0."""
    values = normalizer.inverse_transform(raw.astype(np.float32), band_axis=3)
    values = np.clip(np.sort(values, axis=2), 0, None)
    return np.moveaxis(values, 2, 0)


def head_forecast(
    fc: xr.DataArray,
    values: np.ndarray,
    trained: Sequence[float],
    quantiles: Sequence[float],
    method: str = "quantile head",
) -> xr.DataArray:
    """The quantile forecast ``(quantile, *fc.dims)`` at ``quantiles`` from the head's ``values``
    (``(len(trained), *fc.shape)``, raw units, sorted): the coordinates (``valid_time``, grid, CRS),
    attrs and dtype of the point forecast ``fc``; attrs ``quantile_method=method``."""
    out = fc.expand_dims(quantile=np.asarray(quantiles, dtype=np.float64)).copy(
        data=interpolate_levels(values, trained, quantiles).astype(fc.dtype)
    )
    out["quantile"].attrs.update(long_name="quantile level (probability of not exceeding)")
    out.attrs = dict(fc.attrs, quantile_method=method)
    return out
