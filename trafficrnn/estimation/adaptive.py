"""Adaptive split-conformal calibration: residuals scaled by the members' spread or by the level.

With ``calibrate(..., adaptive="spread")`` a :class:`~trafficrnn.ensemble.ForecastEnsemble` keeps the
quantiles of ``|truth - mean| / (spread + floor)`` (``spread``: the members' standard deviation in each
cell, lead and band; ``floor``: a tenth of its mean over the calibration windows, so that cells where
the members agree still get an interval), and a forecast's interval is that radius times its own
``spread + floor``: wide where the members disagree, narrow where they agree (normalised conformal
prediction, Papadopoulos et al., 2002; Lei et al., 2018).

With ``adaptive="level"`` (any model) the scale is ``sqrt(max(forecast, 0) + floor)``, ``floor`` a
tenth of the mean forecast over the calibration windows: the spread of counts grows with their
level (as a Poisson count's does), so that busy cells get wider intervals than quiet ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from trafficrnn.errors import CalibrationError

__all__ = [
    "ADAPTIVE",
    "check_adaptive",
    "level_scale",
    "member_forecasts",
    "spread_floor",
    "spread_of",
]

#: the adaptive scalings ``calibrate`` knows (None: the plain per-lead radii)
ADAPTIVE = ("spread", "level", "head")
#: the floor added to the spread, as a share of its mean over the calibration windows
FLOOR_SHARE = 0.1


def check_adaptive(est, adaptive: Any) -> str:
    """``"none"`` for None, ``"level"`` for any model, ``"spread"`` for an ensemble, ``"head"`` for a
    model (or ensemble) with a quantile head; else a CalibrationError.

    Raises
    ------
    CalibrationError
        An unknown name, ``"spread"`` for a model that is not an ensemble of two members or more, or
        ``"head"`` for one without a quantile head.
    """
    if adaptive is None:
        return "none"
    if adaptive not in ADAPTIVE:
        raise CalibrationError(
            f"adaptive={adaptive!r:.40} is invalid: expected None (plain per-lead radii) or "
            f"{', '.join(map(repr, ADAPTIVE))}"
        )
    if adaptive == "level":
        return "level"
    if adaptive == "head":
        from trafficrnn.estimation.quantile_head import head_levels

        if head_levels(est) is None:
            raise CalibrationError(
                f"adaptive='head' conformalises a quantile head, but {type(est).__name__} "
                f"{getattr(est, 'model', '')!r} has none (every member of an ensemble needs one, "
                "with the same levels): train it with model_kwargs={'quantiles': (0.1, 0.5, 0.9)} "
                "(CLI: --set quantiles=[0.1,0.5,0.9]), or calibrate with adaptive=None or 'level'"
            )
        return "head"
    members = getattr(est, "estimators_", None)
    if not members or len(members) < 2:
        raise CalibrationError(
            f"adaptive='spread' scales the intervals by the spread of an ensemble's members, but "
            f"{type(est).__name__} {getattr(est, 'model', '')!r} has "
            f"{len(members) if members else 'no'} member(s): calibrate a ForecastEnsemble of 2 "
            "members or more, or leave adaptive=None"
        )
    return "spread"


def member_forecasts(est, *args: Any) -> xr.DataArray:
    """Every member's forecasts ``(member, issued, lead, band, y, x)``, made as
    :func:`~trafficrnn.estimation.evaluation.model_forecasts` makes the ensemble's (same ``args``
    after the model: images, observed, issues, horizon, static, covariates)."""
    from trafficrnn.estimation.evaluation import model_forecasts

    return xr.concat(
        [model_forecasts(member, *args, lambda n: None) for member in est.estimators_],
        dim="member",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )


def spread_floor(spread: np.ndarray) -> float:
    """The floor added to the spread: :data:`FLOOR_SHARE` of its finite mean (1e-6 at least)."""
    finite = spread[np.isfinite(spread)]
    return max(FLOOR_SHARE * float(finite.mean()) if finite.size else 0.0, 1e-6)


def spread_of(est, calibration, *args: Any) -> np.ndarray | None:
    """``spread + floor`` ``(issued, lead, band, y, x)`` of the forecasts ``args`` describe (as
    :func:`member_forecasts`), for a calibration scaled by the spread; None for a plain one."""
    if calibration is None or calibration.scale != "spread":
        return None
    every = member_forecasts(est, *args)
    return np.asarray(every.std("member").values, dtype=np.float64) + calibration.floor


def level_scale(point, floor: float):
    """``sqrt(max(point, 0) + floor)``: the scale of a calibration by the level (``adaptive="level"``),
    for a NumPy array or an xarray object ``point`` of forecasts."""
    return (
        np.sqrt(np.clip(point, 0, None) + floor)
        if isinstance(point, np.ndarray)
        else ((point.clip(min=0) + floor) ** 0.5)
    )
