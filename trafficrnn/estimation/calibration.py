"""Split-conformal calibration of a fitted forecaster: quantile forecasts from held-out residuals.

:func:`calibrate` forecasts every window of held-out frames that precede the test part (by default
the model's validation part), and keeps, per lead and band, the quantiles of the absolute errors
``|truth - forecast|`` over every cell and window (Vovk et al., 2005; Lei et al., 2018: split
conformal prediction): a :class:`Calibration`. :func:`quantile_forecast` turns a point forecast into
quantiles: the level ``tau`` is the forecast plus the radius of the central interval of coverage
``|2 tau - 1|`` (minus it below the median), clipped at 0 since counts are non-negative. The central
interval between ``tau`` and ``1 - tau`` then covers about ``|2 tau - 1|`` of the held-out values,
at every lead, when the test frames behave as the calibration frames did (exchangeability).

The calibration travels with the model: ``config.json`` holds it (:meth:`Calibration.to_dict`,
validated by :meth:`Calibration.from_dict` on load), and ``ensemble.json`` an ensemble's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import CalibrationError, ConfigError
from trafficrnn.estimation.heldout import calibration_issues

__all__ = [
    "LEVELS",
    "Calibration",
    "calibrate",
    "calibration_issues",
    "check_quantiles",
    "quantile_forecast",
    "quantile_label",
    "require_calibration",
]

METHOD = "split-conformal"
#: coverage levels of the central intervals whose radii are kept (0, 0.01, ..., 0.99, 0.995, 0.999):
#: any quantile level between 0.0005 and 0.9995 is interpolated between two of them
LEVELS = tuple(round(i / 100, 2) for i in range(100)) + (0.995, 0.999)


def check_quantiles(quantiles: Any) -> tuple[float, ...]:
    """The quantile levels as a tuple of floats, checked.

    Raises
    ------
    ConfigError
        Not a non-empty sequence of numbers, a level outside (0, 1), or levels unsorted or repeated.
    """
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence | np.ndarray):
        raise ConfigError(
            f"quantiles={quantiles!r:.60} is invalid: expected a sequence of probability levels "
            "such as (0.1, 0.5, 0.9)"
        )
    levels = []
    for q in quantiles:
        if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
            raise ConfigError(
                f"quantiles={tuple(quantiles)!r:.80} holds {q!r:.20}, not a number: expected "
                "probability levels such as (0.1, 0.5, 0.9)"
            )
        if not 0 < float(q) < 1:
            raise ConfigError(
                f"quantiles={tuple(quantiles)!r:.80}: level {q!r} lies outside (0, 1); pass "
                "probability levels strictly between 0 and 1, e.g. (0.1, 0.5, 0.9)"
            )
        levels.append(float(q))
    if not levels:
        raise ConfigError("quantiles=() is empty: pass at least one level, e.g. (0.1, 0.5, 0.9)")
    repeated = sorted({q for q in levels if levels.count(q) > 1})
    if repeated:
        raise ConfigError(
            f"quantiles={tuple(levels)!r:.80} repeat {repeated[0]:g}: pass each level once"
        )
    if levels != sorted(levels):
        raise ConfigError(
            f"quantiles={tuple(levels)!r:.80} are not in increasing order: pass them sorted, "
            f"e.g. {tuple(sorted(levels))!r:.80}"
        )
    return tuple(levels)


def quantile_label(q: float) -> str:
    """Short name of a level for band and column names: ``0.1`` -> ``q10``, ``0.05`` -> ``q05``,
    ``0.975`` -> ``q97_5``."""
    pct = round(float(q) * 100, 6)
    if pct == int(pct):
        return f"q{int(pct):02d}"
    return "q" + f"{pct:g}".replace(".", "_")


@dataclass
class Calibration:
    """Per-lead, per-band radii of central intervals from held-out absolute residuals.

    Attributes
    ----------
    bands : list of str
        The forecast bands, in order.
    radii : numpy.ndarray, shape (lead, band, len(levels))
        Radius (half-width, in the target's units) of the central interval of each coverage level.
    counts : list of int
        Residuals (cells × windows with a finite truth) behind each lead.
    frames : list of str
        First and last valid time of the calibration windows.
    windows : int
        Calibration windows (issue times).
    levels : list of float
        Coverage levels of ``radii`` (:data:`LEVELS`).
    method : str
        ``"split-conformal"``.
    scale, floor : str, float
        ``"none"``: the radii are in the target's units; ``"spread"`` (an ensemble's adaptive
        calibration, :mod:`trafficrnn.estimation.adaptive`): in units of ``spread + floor``;
        ``"level"``: in units of ``sqrt(max(forecast, 0) + floor)``; ``"head"``
        (``adaptive="head"``, a model with a quantile head): no radii (shape ``(lead, band, 0)``),
        ``levels`` are the head's trained levels and ``shifts`` their conformal shifts.
    shifts : numpy.ndarray, shape (level, lead, band), optional
        Scale ``"head"`` only: what is added to the head's quantile of each trained level
        (:mod:`trafficrnn.estimation.conformal_head`).
    """

    bands: list[str]
    radii: np.ndarray
    counts: list[int]
    frames: list[str]
    windows: int
    levels: list[float] = field(default_factory=lambda: list(LEVELS))
    method: str = METHOD
    scale: str = "none"
    floor: float = 0.0
    shifts: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.radii.shape[0] if self.shifts is None else self.shifts.shape[1])

    def offsets(self, quantiles: Sequence[float], leads: int, bands: Sequence[str]) -> np.ndarray:
        """Signed offsets ``(quantile, lead, band)`` to add to a point forecast.

        Raises
        ------
        CalibrationError
            More leads than calibrated, bands other than the calibration's, or a calibration of a
            quantile head (its shifts apply to the head's quantiles, not to a point forecast).
        """
        if self.scale == "head":
            raise CalibrationError(
                "this calibration conformalises a quantile head (adaptive='head'): its shifts apply "
                "to the head's quantiles; forecast with the model it was calibrated on"
            )
        if leads > self.horizon:
            raise CalibrationError(
                f"the forecast has {leads} leads but the calibration covers {self.horizon}: "
                f"forecast with horizon={self.horizon}, or calibrate with horizon={leads}"
            )
        if [str(b) for b in bands] != list(self.bands):
            raise CalibrationError(
                f"the forecast's bands {list(bands)} differ from the calibration's {self.bands}: "
                "calibrate the model that made the forecast"
            )
        taus = np.asarray(quantiles, dtype=np.float64)
        cover = np.abs(2 * taus - 1)
        out = np.empty((len(taus), leads, len(self.bands)))
        for h in range(leads):
            for b in range(len(self.bands)):
                out[:, h, b] = np.interp(cover, self.levels, self.radii[h, b])
        return out * np.sign(taus - 0.5)[:, None, None]

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``config.json`` keeps it (radii rounded to 6 significant digits)."""
        return {
            "method": self.method,
            "bands": list(self.bands),
            "levels": [float(v) for v in self.levels],
            "radii": _rounded(self.radii),
            "counts": [int(n) for n in self.counts],
            "frames": list(self.frames),
            "windows": int(self.windows),
            "scale": self.scale,
            "floor": float(self.floor),
            **({} if self.shifts is None else {"shifts": _rounded(self.shifts)}),
        }

    @classmethod
    def from_dict(cls, spec: Any) -> Calibration:
        """The calibration :meth:`to_dict` wrote, checked.

        Raises
        ------
        ConfigError
            A missing key, a wrong type, or radii that are not finite, non-negative and
            non-decreasing with the level.
        """
        keys = ("method", "bands", "levels", "radii", "counts", "frames", "windows")
        if not isinstance(spec, dict) or any(k not in spec for k in keys):
            found = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
            raise ConfigError(
                f"calibration holds {found}, expected the keys {', '.join(keys)}; "
                "calibrate the model again (model.calibrate(...)) and save it"
            )
        if spec["method"] != METHOD:
            raise ConfigError(
                f"calibration method {spec['method']!r:.40} is unknown: expected {METHOD!r}"
            )
        if spec.get("scale") == "head":
            return _head_from_dict(spec)
        try:
            radii = np.asarray(spec["radii"], dtype=np.float64)
            levels = [float(v) for v in spec["levels"]]
            counts = [int(n) for n in spec["counts"]]
            bands = [str(b) for b in spec["bands"]]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"calibration is malformed ({exc})") from None
        ok_levels = levels == sorted(levels) and all(0 <= v < 1 for v in levels) and levels
        if (
            not ok_levels
            or radii.ndim != 3
            or radii.shape[1:] != (len(bands), len(levels))
            or radii.shape[0] != len(counts)
            or not np.isfinite(radii).all()
            or (radii < 0).any()
            or (np.diff(radii, axis=-1) < 0).any()
        ):
            raise ConfigError(
                f"calibration radii of shape {radii.shape} for bands {bands} and "
                f"{len(levels)} levels are not finite, non-negative radii (lead, band, level) "
                "that grow with the level; the config is corrupt or was modified"
            )
        scale, floor = spec.get("scale", "none"), spec.get("floor", 0.0)
        if (
            scale not in ("none", "spread", "level")
            or isinstance(floor, bool)
            or not isinstance(floor, (int, float))
            or not np.isfinite(floor)
            or floor < 0
        ):
            raise ConfigError(
                f"calibration scale {scale!r:.30} with floor {floor!r:.30}: expected scale 'none', "
                "'spread' or 'level' and a finite floor >= 0; the config is corrupt or was modified"
            )
        return cls(
            scale=scale,
            floor=float(floor),
            bands=bands,
            radii=radii,
            counts=counts,
            frames=[str(t) for t in spec["frames"]],
            windows=int(spec["windows"]),
            levels=levels,
        )


def _rounded(values: np.ndarray) -> list:
    """``values`` as nested lists of floats rounded to 6 significant digits (JSON)."""
    return [_rounded(v) for v in values] if values.ndim > 1 else [float(f"{r:.6g}") for r in values]


def _head_from_dict(spec: dict) -> Calibration:
    """The calibration of a quantile head (scale ``"head"``) that :meth:`Calibration.to_dict` wrote,
    checked: sorted levels in (0, 1) and finite shifts of shape (level, lead, band).

    Raises
    ------
    ConfigError
        Malformed or inconsistent fields.
    """
    try:
        shifts = np.asarray(spec.get("shifts"), dtype=np.float64)
        levels = [float(v) for v in spec["levels"]]
        counts = [int(n) for n in spec["counts"]]
        bands = [str(b) for b in spec["bands"]]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"calibration (adaptive='head') is malformed ({exc})") from None
    expected = (len(levels), len(counts), len(bands))
    ok_levels = levels and levels == sorted(levels) and all(0 < v < 1 for v in levels)
    if not ok_levels or shifts.shape != expected or not np.isfinite(shifts).all():
        raise ConfigError(
            f"calibration (adaptive='head') shifts of shape {shifts.shape} for levels {levels} "
            f"(expected finite shifts of shape {expected}: level, lead, band for bands {bands}); "
            "the config is corrupt or was modified"
        )
    return Calibration(
        bands=bands,
        radii=np.zeros((len(counts), len(bands), 0)),
        counts=counts,
        frames=[str(t) for t in spec["frames"]],
        windows=int(spec["windows"]),
        levels=levels,
        scale="head",
        shifts=shifts,
    )


def conformal_radii(residuals: np.ndarray, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Split-conformal radii of ``|residuals|`` (any shape; NaN ignored) at each coverage level.

    The radius of level ``c > 0`` is the ``ceil((n + 1) c)``-th smallest of the ``n`` absolute
    residuals (the largest when that rank exceeds ``n``), so that a new exchangeable residual lies
    within it with probability at least ``c``; level 0 has radius 0 (the median is the point
    forecast). NaN for every level without residuals.
    """
    r = np.sort(np.abs(residuals[np.isfinite(residuals)]).astype(np.float64))
    n = r.size
    if n == 0:
        return np.full(len(levels), np.nan)
    ranks = np.array([min(max(math.ceil((n + 1) * c), 1), n) for c in levels])
    return np.where(np.asarray(levels) > 0, r[ranks - 1], 0.0)  # level 0: the point forecast


def calibrate(
    est,
    images: xr.DataArray,
    target: xr.DataArray | None = None,
    *,
    frames: Any = "val",
    horizon: int | None = None,
    static: xr.DataArray | None = None,
    covariates: pd.DataFrame | None = None,
    align: str = "exact",
    adaptive: str | None = None,
) -> Calibration:
    """The split-conformal :class:`Calibration` of a fitted model (or ensemble) on held-out frames.

    Parameters
    ----------
    est : TrafficForecaster or ForecastEnsemble
        Fitted.
    images, target : xarray.DataArray
        The stack (and its targets) as for ``evaluate``; it must hold the calibration frames.
    frames : "val" or (first, last)
        ``"val"``: every window of the validation part (as ``evaluate(split="val")`` scores);
        ``(first, last)``: the windows whose valid times lie between these two times, which must
        precede the test part.
    horizon : int, optional
        Leads calibrated (default: the model's).
    static, covariates, align
        As for ``predict``.
    adaptive : {None, "spread", "level", "head"}
        ``"spread"`` (ensembles): radii in units of the members' spread, so that intervals widen
        where the members disagree; ``"level"``: in units of the square root of the forecast, so
        that they widen where traffic is heavy (:mod:`trafficrnn.estimation.adaptive`); ``"head"``
        (a model, or ensemble, with a quantile head): conformal shifts of the head's own quantiles
        (:mod:`trafficrnn.estimation.conformal_head`); None: plain radii.

    Raises
    ------
    CalibrationError
        Frames that overlap the test part, or no full window in them.
    NotFittedError, ModelMismatchError, ConfigError
        As ``evaluate``.
    """
    from trafficrnn.estimation.adaptive import check_adaptive

    scale = check_adaptive(est, adaptive)
    checked = est.check_stack(images, target, align=align, horizon=horizon)
    images_c, horizon = checked.images, checked.horizon
    truth_da = images_c if target is None else checked.target
    times = pd.DatetimeIndex(images_c.time.values)
    issues = calibration_issues(est, times, frames, images, target)
    observed = truth_da if getattr(est, "target_inputs", False) else None
    args = (images_c, observed, issues, horizon, static, covariates)
    if scale == "head":
        from trafficrnn.estimation.conformal_head import head_calibration

        return head_calibration(est, images_c, truth_da, *args[1:])
    fc, resid, floor = _scaled_residuals(est, scale, args, truth_da)
    resid = resid.transpose(1, 2, 0, 3, 4)  # (H, B, N, y, x)
    radii = np.stack([[conformal_radii(rb) for rb in rh] for rh in resid])
    counts = [int(np.isfinite(rh).sum()) for rh in resid]
    require_observed(radii, counts, "residuals")
    return Calibration(
        bands=[str(b) for b in fc.band.values],
        radii=np.maximum.accumulate(radii, axis=-1),
        counts=counts,
        frames=valid_span(fc),
        windows=int(len(issues)),
        scale=scale,
        floor=floor,
    )


def _scaled_residuals(est, scale: str, args: tuple, truth_da: xr.DataArray):
    """The forecasts of the calibration windows (``args``: images, observed, issues, horizon,
    static, covariates), their residuals ``truth - forecast`` ``(issued, lead, band, y, x)`` in the
    units of ``scale`` (``"none"``, ``"spread"`` or ``"level"``) and the scale's floor."""
    from trafficrnn.estimation.adaptive import level_scale, member_forecasts, spread_floor
    from trafficrnn.estimation.evaluation import model_forecasts
    from trafficrnn.metrics import align_truth

    floor = 0.0
    if scale == "spread":
        every = member_forecasts(est, *args)
        fc = every.mean("member", keep_attrs=True)
        spread = np.asarray(every.std("member").values, dtype=np.float64)
        floor = spread_floor(spread)
    else:
        fc = model_forecasts(est, *args, lambda n: None)
    truth = align_truth(fc, truth_da).transpose(*fc.dims)
    resid = truth.values.astype(np.float64) - fc.values
    if scale == "spread":
        resid = resid / (spread + floor)
    elif scale == "level":
        floor = spread_floor(np.clip(fc.values, 0, None))
        resid = resid / level_scale(np.asarray(fc.values, dtype=np.float64), floor)
    return fc, resid, floor


def valid_span(fc: xr.DataArray) -> list[str]:
    """The first and last valid times (ISO) of the calibration windows' forecasts ``fc``."""
    valid = pd.DatetimeIndex(fc["valid_time"].values.ravel())
    return [valid.min().isoformat(), valid.max().isoformat()]


def require_observed(fitted: np.ndarray, counts: list[int], what: str) -> None:
    """Refuse a calibration whose ``fitted`` radii or shifts are not all finite: some lead or band
    had no observed value (``counts`` of ``what`` per lead, for the message).

    Raises
    ------
    CalibrationError
    """
    if not np.isfinite(fitted).all():
        raise CalibrationError(
            f"the calibration frames hold no observed value for some lead or band ({what} per "
            f"lead: {counts}): calibrate on frames with observations"
        )


def require_calibration(est) -> Calibration:
    """The calibration of ``est``, or a CalibrationError that names both ways to quantiles:
    calibrate it, or train it with a quantile head.

    Raises
    ------
    CalibrationError
    """
    found = getattr(est, "calibration_", None)
    if found is None:
        raise CalibrationError(
            f"quantiles were asked of {est.model!r}, which has no quantile head and no "
            "calibration: calibrate it first on held-out frames before the test part, "
            "model.calibrate(stack) (its validation part), then save it (CLI: trafficrnn calibrate "
            "MODEL STACK, or train with --calibrate); or train it with a quantile head, "
            "model_kwargs={'quantiles': (0.1, 0.5, 0.9)} (CLI: trafficrnn train ... --set "
            "quantiles=[0.1,0.5,0.9])"
        )
    return found


def quantile_forecast(
    fc: xr.DataArray,
    calibration: Calibration,
    quantiles: Sequence[float],
    spread: xr.DataArray | None = None,
) -> xr.DataArray:
    """A point forecast ``(..., lead, band, y, x)`` turned into ``(quantile, ..., lead, band, y, x)``.

    Same coordinates (``valid_time``, grid, CRS), attrs and dtype; no value below 0. ``spread``:
    the members' standard deviation, shaped like ``fc``, for a calibration scaled by it.

    Raises
    ------
    ConfigError, CalibrationError
        Bad quantiles; more leads or other bands than calibrated; a spread-scaled calibration
        without ``spread``.
    """
    qs = check_quantiles(quantiles)
    offsets = calibration.offsets(qs, fc.sizes["lead"], [str(b) for b in fc.band.values])
    add = xr.DataArray(offsets, dims=("quantile", "lead", "band"))
    if calibration.scale == "spread":
        if spread is None:
            raise CalibrationError(
                "this calibration scales the intervals by the members' spread "
                "(adaptive='spread'): forecast with the ensemble it was calibrated on"
            )
        add = add * (spread + calibration.floor)
    elif calibration.scale == "level":
        from trafficrnn.estimation.adaptive import level_scale

        add = add * level_scale(fc, calibration.floor)
    out = (fc + add).clip(min=0).astype(fc.dtype).transpose("quantile", *fc.dims)
    out = out.assign_coords(quantile=("quantile", np.asarray(qs)))
    out["quantile"].attrs.update(long_name="quantile level (probability of not exceeding)")
    out.attrs = dict(fc.attrs, calibration=calibration.method)
    return out
