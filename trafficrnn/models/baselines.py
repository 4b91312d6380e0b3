"""Reference forecasters (persistence, historical average, ridge regression) behind one API.

Shared signature: ``fit(target) -> self``; ``predict(history, horizon) -> DataArray(lead, band, y, x)``;
``predict_many(target, issue_indices, horizon) -> DataArray(issued, lead, band, y, x)``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trafficrnn.errors import ConfigError, ModelMismatchError, NotFittedError
from trafficrnn.grid import Grid
from trafficrnn.registry import Registry
from trafficrnn.timeaxis import infer_cadence, make_forecast, time_features, wall_clock

__all__ = [
    "Baseline",
    "Persistence",
    "HistoricalAverage",
    "RidgeBaseline",
    "BASELINES",
    "get_baseline",
]

_DAY = pd.Timedelta(days=1)


def _check_target(target: Any, what: str) -> xr.DataArray:
    if not isinstance(target, xr.DataArray):
        raise ConfigError(
            f"{what} is a {type(target).__name__}: expected an xarray.DataArray(time, band, y, x)"
        )
    if set(target.dims) != {"time", "band", "y", "x"}:
        raise ConfigError(
            f"{what} has dims {target.dims}: expected (time, band, y, x); add a band dim with "
            "da.expand_dims(band=['density'], axis=1)"
        )
    return target.transpose("time", "band", "y", "x")


def _times(target: xr.DataArray) -> pd.DatetimeIndex:
    """The times of ``target`` as an absolute naive index (aware times in UTC): what the baselines add
    cadences to; their slots and calendar features read them on the local clock (:func:`wall_clock`)."""
    idx = pd.DatetimeIndex(target["time"].values)
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def _valid_times(
    times: pd.DatetimeIndex, issue: np.ndarray, horizon: int, cadence: pd.Timedelta
) -> np.ndarray:
    """Valid times (N, H) of forecasts issued at ``times[issue]``."""
    return (
        times.values[issue][:, None] + cadence.to_timedelta64() * np.arange(1, horizon + 1)[None, :]
    )


class Baseline:
    """Common validation, bookkeeping and forecast wrapping; subclasses implement ``_fit`` and ``_predict``.

    ``_predict(values (T, C, y, x), times, issue (N,), horizon) -> (N, H, C, y, x)`` forecasts from
    the frames up to each issue index only.
    """

    name = "baseline"
    min_history = 1
    #: True where the baseline is fitted for a given number of leads (one model per lead): it is built
    #: with the ``horizon`` it forecasts (:func:`get_baseline` passes it on); False: any horizon
    fits_horizon = False
    #: True where the baseline reads the local clock (slots of the day or week, calendar features): it
    #: is built with the ``timezone`` of those clocks (:func:`get_baseline` passes it on)
    reads_clock = False

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable), as scikit-learn's ``get_params``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: getattr(self, p) for p in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, target: xr.DataArray, **kw: Any) -> Baseline:
        """Learn from training observations.

        Parameters
        ----------
        target : xarray.DataArray
            ``(time, band, y, x)`` at a regular cadence, with CRS and transform; NaN = unknown.
        **kw
            ``val`` is accepted and ignored (baselines have no early stopping), so that callers
            can fit every model alike; any other keyword is refused.

        Raises
        ------
        ConfigError
            For a non-DataArray, wrong dims or unknown keywords.
        TimestampError, CadenceError
            For fewer than 2 or irregular times.
        MissingCRSError
            If ``target`` has no CRS.
        """
        unknown = sorted(set(kw) - {"val"})
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}.fit got unexpected keyword(s) {unknown}: only 'val' is "
                "accepted (and ignored); pass model settings to the constructor"
            )
        target = _check_target(target, "target")
        self.cadence_ = infer_cadence(target["time"].values)
        self.grid_ = Grid.from_dataarray(target)
        self.bands_ = [str(b) for b in target["band"].values]
        self.units_ = str(target.attrs.get("units", ""))
        # the zone whose wall clock the naive times read where the data records one; None: UTC
        self.timezone_ = target.attrs.get("timezone")
        self._fit(np.asarray(target.values, dtype=np.float32), _times(target))
        return self

    def _fit(self, values: np.ndarray, times: pd.DatetimeIndex) -> None:
        """Learn state from ``values (T, C, y, x)``; nothing by default."""

    def _check(self, data: Any, what: str) -> xr.DataArray:
        if not hasattr(self, "grid_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(train_target) first"
            )
        data = _check_target(data, what)
        bands = [str(b) for b in data["band"].values]
        if bands != self.bands_:
            raise ModelMismatchError(
                f"{what} bands {bands} differ from the fitted bands {self.bands_}: "
                "select the fitted bands in the same order"
            )
        if not Grid.from_dataarray(data).matches(self.grid_):
            raise ModelMismatchError(
                f"{what} grid {Grid.from_dataarray(data)!r} differs from the fitted grid "
                f"{self.grid_!r}: predict on the grid the model was fitted on"
            )
        if data.sizes["time"] >= 2 and infer_cadence(data["time"].values) != self.cadence_:
            raise ModelMismatchError(
                f"{what} cadence {infer_cadence(data['time'].values)} differs from the "
                f"fitted cadence {self.cadence_}: resample to {self.cadence_}"
            )
        units = data.attrs.get("units")
        if units is not None and self.units_ and str(units) != self.units_:
            raise ModelMismatchError(
                f"{what} units {units!r} differ from the fitted units {self.units_!r}: "
                "pass raw (de-normalised) observations in the fitted units"
            )
        return data

    def predict_many(self, target: xr.DataArray, issue_indices: Any, horizon: int) -> xr.DataArray:
        """Forecasts issued at several time indices of one series.

        Each forecast uses only the frames up to and including its issue index.

        Parameters
        ----------
        target : xarray.DataArray
            ``(time, band, y, x)`` matching the fitted bands, grid and cadence.
        issue_indices : array-like of int, shape (N,)
            Indices into ``target.time`` (negative counts from the end).
        horizon : int
            Number of leads H.

        Returns
        -------
        xarray.DataArray
            ``(issued, lead, band, y, x)`` forecast (see :func:`trafficrnn.timeaxis.make_forecast`).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ModelMismatchError
            If bands, grid, cadence or units differ from those fitted.
        ConfigError
            For ``horizon < 1`` or an issue index out of range or with too short a history.
        """
        target = self._check(target, "target")
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ConfigError(
                f"horizon={horizon!r} is invalid: expected an integer >= 1 (number of leads)"
            )
        n = target.sizes["time"]
        raw = np.atleast_1d(np.asarray(issue_indices))
        if raw.size == 0 or not np.issubdtype(raw.dtype, np.integer) or raw.ndim != 1:
            raise ConfigError(
                f"issue_indices={issue_indices!r} is invalid: expected a 1-D non-empty sequence of "
                "integer time indices"
            )
        issue = np.where(raw < 0, raw + n, raw).astype(np.int64)
        low = self.min_history - 1
        bad = (issue < low) | (issue >= n)
        if bad.any():
            raise ConfigError(
                f"issue index {int(raw[bad][0])} is out of range for {n} time steps: "
                f"{type(self).__name__} needs indices in [{low}, {n}) ({self.min_history} frame(s) "
                "of history); pass later issue times or a longer history"
            )
        times = _times(target)
        values = self._predict(
            np.asarray(target.values, dtype=np.float32), times, issue, int(horizon)
        )
        out = make_forecast(
            values,
            self.grid_,
            issued=target["time"].values[issue],
            cadence=self.cadence_,
            bands=self.bands_,
            model=self.name,
            units=self.units_,
            issued_dim=True,
        )
        if self.timezone_:
            out.attrs["timezone"] = self.timezone_
        return out

    def predict(self, history: xr.DataArray, horizon: int) -> xr.DataArray:
        """Forecast ``horizon`` steps after the last frame of ``history``.

        Parameters
        ----------
        history : xarray.DataArray
            ``(time, band, y, x)`` observations up to the issue time (its last frame).
        horizon : int

        Returns
        -------
        xarray.DataArray
            ``(lead, band, y, x)`` forecast with ``valid_time``, attrs ``issued``, ``model``, ``units``.

        Raises
        ------
        NotFittedError, ModelMismatchError, ConfigError
            As :meth:`predict_many`.
        """
        many = self.predict_many(history, [-1], horizon)
        out = many.isel(issued=0, drop=True)
        out.attrs["issued"] = pd.Timestamp(many["issued"].values[0]).isoformat()
        return out

    def _predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: np.ndarray, horizon: int
    ) -> np.ndarray:
        raise NotImplementedError


class Persistence(Baseline):
    """Repeat the last observed frame at every lead.

    Parameters
    ----------
    skipna : bool, default False
        Use, per cell, the last finite value instead of the last frame (which may be NaN).
    """

    name = "persistence"

    def __init__(self, skipna: bool = False) -> None:
        self.skipna = skipna

    def _predict(self, values, times, issue, horizon):
        if self.skipna:
            steps = np.arange(len(values)).reshape(-1, 1, 1, 1)
            last = np.maximum.accumulate(np.where(np.isfinite(values), steps, -1), axis=0)[issue]
            frames = np.take_along_axis(values, np.maximum(last, 0), axis=0)
            frames = np.where(last >= 0, frames, np.nan)
        else:
            frames = values[issue]
        return np.repeat(frames[:, None], horizon, axis=1)


class HistoricalAverage(Baseline):
    """Mean per time slot, cell and band over the training data (NaN ignored).

    A slot is one cadence step of the local wall-clock day (``by="day"``), or of the week,
    i.e. day of week × slot of day (``by="week"``). An unseen week slot falls back to the day
    slot, an unseen day slot to the cell's overall mean; a never observed cell stays NaN.

    Parameters
    ----------
    by : {"week", "day"}
    timezone : str, optional
        IANA zone of the local clock the slots follow (e.g. ``"Europe/Vienna"``): naive UTC times
        are converted to it, DST-aware, so a peak at 08:00 local stays in the 08:00 slot across a
        DST change. Naive times that are already wall-clock times of a zone the data records
        (``attrs["timezone"]``) are read in it. ``None``: the UTC clock (or the data's zone).
    """

    name = "historical_average"
    reads_clock = True

    def __init__(self, by: str = "week", timezone: str | None = None) -> None:
        self.by = by
        self.timezone = timezone

    def _slots(self, times: Any) -> tuple[np.ndarray, np.ndarray]:
        """Day and week slots of ``times`` (naive UTC, or wall-clock times of the data's zone ``timezone_``)."""
        times = wall_clock(
            times, timezone=self.timezone, naive_zone=getattr(self, "timezone_", None)
        )
        seconds = np.asarray(times.hour * 3600 + times.minute * 60 + times.second, dtype=np.int64)
        step = max(int(self.cadence_.total_seconds()), 1)
        day_slot = seconds // step if self.cadence_ < _DAY else np.zeros_like(seconds)
        return day_slot, np.asarray(
            times.day_of_week, dtype=np.int64
        ) * self.slots_per_day_ + day_slot

    @staticmethod
    def _means(values: np.ndarray, slots: np.ndarray, n_slots: int) -> np.ndarray:
        table = np.full((n_slots,) + values.shape[1:], np.nan, dtype=np.float32)
        for s in np.unique(slots):
            block = values[slots == s]
            count = np.isfinite(block).sum(axis=0)
            total = np.nansum(block, axis=0, dtype=np.float64)
            table[s] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return table

    def _fit(self, values, times):
        if self.by not in ("week", "day"):
            raise ConfigError(f"by={self.by!r} is invalid: expected 'week' or 'day'")
        self.slots_per_day_ = max(int(-(-_DAY // self.cadence_)), 1) if self.cadence_ < _DAY else 1
        day_slot, week_slot = self._slots(times)
        self.overall_mean_ = self._means(values, np.zeros(len(values), dtype=np.int64), 1)[0]
        day = self._means(values, day_slot, self.slots_per_day_)
        day = np.where(np.isfinite(day), day, self.overall_mean_[None])
        if self.by == "week":
            week = self._means(values, week_slot, 7 * self.slots_per_day_)
            self.table_ = np.where(np.isfinite(week), week, np.tile(day, (7, 1, 1, 1)))
        else:
            self.table_ = day

    def causal(self, values: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
        """At each frame, the average of the *earlier* frames of its slot (same fallbacks as :meth:`lookup`).

        Used as a training feature that never contains the value it is paired with.

        Parameters
        ----------
        values : numpy.ndarray, shape (T, C, y, x)
        times : pandas.DatetimeIndex, shape (T,)
            Times of ``values``, sorted (as fitted: naive UTC, or wall-clock times of the data's zone).

        Returns
        -------
        numpy.ndarray, shape (T, C, y, x); NaN where no earlier frame of the slot (or day slot,
        or at all) was observed.
        """
        day_slot, week_slot = self._slots(times)
        out = np.full(values.shape, np.nan, dtype=np.float32)
        levels = [week_slot, day_slot] if self.by == "week" else [day_slot]
        levels.append(np.zeros(len(values), dtype=np.int64))
        for slots in reversed(levels):  # coarsest first; finer levels overwrite where they exist
            sums: dict[int, np.ndarray] = {}
            counts: dict[int, np.ndarray] = {}
            for i, slot in enumerate(slots):
                if slot in counts:
                    mean = sums[slot] / np.maximum(counts[slot], 1)
                    out[i] = np.where(counts[slot] > 0, mean, out[i])
                finite = np.isfinite(values[i])
                sums[slot] = sums.get(slot, 0.0) + np.where(finite, values[i], 0.0)
                counts[slot] = counts.get(slot, 0) + finite
        return out

    def lookup(self, times: Any) -> np.ndarray:
        """Historical average at ``times`` (T,) (as fitted: naive UTC, or wall-clock times of the data's zone):
        array (T, C, y, x).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not hasattr(self, "table_"):
            raise NotFittedError(
                "this HistoricalAverage is not fitted yet: call fit(train_target) first"
            )
        day_slot, week_slot = self._slots(times)
        return self.table_[week_slot if self.by == "week" else day_slot]

    def _predict(self, values, times, issue, horizon):
        valid = _valid_times(times, issue, horizon, self.cadence_)
        return self.lookup(valid.ravel()).reshape((len(issue), horizon) + values.shape[1:])


class RidgeBaseline(Baseline):
    """Ridge regression shared by all cells, direct multi-horizon (one output per lead and band).

    Features of a cell at issue time t: its last ``lags`` values of every band (a NaN lag
    replaced by the historical average of its slot), the time features of each target time
    (:func:`trafficrnn.timeaxis.time_features`) and the historical average of each target slot and
    band. Fitted on windows of the training data, subsampled to ``max_samples`` rows. In
    training rows the historical-average features are causal (means of earlier frames of the
    slot only), so no row sees its own target; at prediction they come from all the training
    data. Rows with a NaN target or feature (e.g. a slot never seen before) are left out.

    Parameters
    ----------
    lags : int, default 3
    alpha : float, default 1.0
        Ridge penalty (features are standardised first).
    by : {"week", "day"}, default "week"
        Slots of the historical-average feature.
    horizon : int, default 12
        Leads fitted; ``predict`` accepts any ``horizon <= this``.
    stride : int, default 1
        Step between training issue times.
    max_samples : int, default 200000
        Rows (cell × issue time) drawn at random for fitting.
    seed : int, default 0
    timezone : str, optional
        IANA zone of the local clock of the time features and historical-average slots (see
        :class:`HistoricalAverage`); ``None``: the UTC clock (or the data's zone).
    """

    name = "ridge"
    fits_horizon = True
    reads_clock = True

    def __init__(
        self,
        lags: int = 3,
        alpha: float = 1.0,
        by: str = "week",
        horizon: int = 12,
        stride: int = 1,
        max_samples: int = 200_000,
        seed: int = 0,
        timezone: str | None = None,
    ) -> None:
        self.lags, self.alpha, self.by, self.horizon = lags, alpha, by, horizon
        self.stride, self.max_samples, self.seed = stride, max_samples, seed
        self.timezone = timezone

    @property
    def min_history(self) -> int:  # type: ignore[override]
        return int(self.lags)

    def _features(self, values, times, issue, horizon, causal=None):
        """Rows (N · y · x, F) and the HA of targets (N, H, C, y, x) for issue indices ``issue``.

        ``causal`` (T, C, y, x), when given, supplies the historical-average features from
        earlier frames only (training), instead of the table fitted on all training data.
        """
        lag_idx = issue[:, None] - np.arange(self.lags)[::-1][None, :]  # (N, L), oldest first
        lagged = values[lag_idx]  # (N, L, C, y, x)
        target_idx = issue[:, None] + np.arange(1, horizon + 1)[None, :]
        if causal is None:
            ha_lag = self.average_.lookup(times.values[lag_idx.ravel()]).reshape(lagged.shape)
            valid = _valid_times(times, issue, horizon, self.cadence_)
            ha = self.average_.lookup(valid.ravel()).reshape(
                (len(issue), horizon) + values.shape[1:]
            )
        else:
            ha_lag, ha = causal[lag_idx], causal[target_idx]
            valid = times.values[target_idx]
        lagged = np.where(np.isfinite(lagged), lagged, ha_lag)
        tf = time_features(
            valid.ravel(), timezone=self.timezone, naive_zone=getattr(self, "timezone_", None)
        ).reshape(len(issue), horizon * 4)
        n, cells = len(issue), values.shape[2] * values.shape[3]
        per_cell = np.concatenate([lagged.reshape(n, -1, cells), ha.reshape(n, -1, cells)], axis=1)
        per_cell = per_cell.transpose(0, 2, 1).reshape(n * cells, -1)
        return np.concatenate([per_cell, np.repeat(tf, cells, axis=0)], axis=1), ha

    def _fit(self, values, times):
        for name in ("lags", "horizon", "stride", "max_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name}={v!r} is invalid: expected an integer >= 1")
        if not self.alpha >= 0:
            raise ConfigError(f"alpha={self.alpha!r} is invalid: expected a penalty >= 0")
        self.average_ = HistoricalAverage(by=self.by, timezone=self.timezone)
        self.average_.cadence_, self.average_.timezone_ = (
            self.cadence_,
            getattr(self, "timezone_", None),
        )
        self.average_._fit(values, times)
        issue = np.arange(self.lags - 1, len(values) - self.horizon, self.stride)
        if issue.size == 0:
            raise ConfigError(
                f"training target has {len(values)} time steps but one window needs lags + horizon "
                f"= {self.lags} + {self.horizon} = {self.lags + self.horizon}: fit on a longer "
                "series or lower lags/horizon"
            )
        # the HA feature of a training row comes from earlier frames only: fitted on the same data,
        # it would contain the very target it is paired with, and Ridge would learn to copy it
        feats, _ = self._features(
            values, times, issue, self.horizon, causal=self.average_.causal(values, times)
        )
        targets = values[
            issue[:, None] + np.arange(1, self.horizon + 1)[None, :]
        ]  # (N, H, C, y, x)
        n, cells = len(issue), values.shape[2] * values.shape[3]
        targets = targets.reshape(n, -1, cells).transpose(0, 2, 1).reshape(n * cells, -1)
        keep = np.flatnonzero(np.isfinite(targets).all(axis=1) & np.isfinite(feats).all(axis=1))
        if keep.size == 0:
            raise ConfigError(
                "no training window has finite lags and targets: the training target is all NaN "
                "where it matters; fit on an observed period"
            )
        if keep.size > self.max_samples:
            keep = np.sort(
                np.random.default_rng(self.seed).choice(keep, self.max_samples, replace=False)
            )
        self.model_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
        with warnings.catch_warnings():
            # the time features of the H target times are sines and cosines of times a fixed step apart,
            # hence linear combinations of one another: the normal equations are near-singular in float32
            # (scipy's LinAlgWarning, rcond ~1e-7), and the penalty alpha is what keeps the solution defined
            warnings.simplefilter("ignore", LinAlgWarning)
            self.model_.fit(feats[keep], targets[keep])
        self.n_samples_ = int(keep.size)

    def _predict(self, values, times, issue, horizon):
        if horizon > self.horizon:
            raise ConfigError(
                f"horizon={horizon} exceeds the {self.horizon} leads this RidgeBaseline was fitted "
                f"for: refit with RidgeBaseline(horizon={horizon})"
            )
        feats, ha = self._features(values, times, issue, self.horizon)
        ok = np.isfinite(feats).all(axis=1)
        pred = np.full((len(feats), self.horizon * values.shape[1]), np.nan, dtype=np.float32)
        if ok.any():
            pred[ok] = self.model_.predict(feats[ok])
        n, (c, rows, cols) = len(issue), values.shape[1:]
        pred = pred.reshape(n, rows * cols, self.horizon, c).transpose(0, 2, 3, 1)
        return pred.reshape(n, self.horizon, c, rows, cols)[:, :horizon]


#: baseline name -> class, built by :func:`get_baseline` ``(name, horizon=None, **options)``
BASELINES: Registry[type[Baseline]] = Registry(
    "baseline",
    {"persistence": Persistence, "historical_average": HistoricalAverage, "ridge": RidgeBaseline},
)


def get_baseline(
    name: str, horizon: int | None = None, timezone: str | None = None, **kw: Any
) -> Baseline:
    """A new baseline registered as ``name`` (case-insensitive), built with ``**kw``.

    Parameters
    ----------
    name : {"persistence", "historical_average", "ridge"}
    horizon : int, optional
        Leads it will forecast: passed on to the baselines fitted per lead (``fits_horizon``, e.g.
        ``ridge``); the others forecast any horizon and ignore it.
    timezone : str, optional
        IANA zone of the local clock: passed on to the baselines that read one (``reads_clock``:
        historical average, ridge); the others ignore it.
    **kw
        The baseline's own arguments.

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (a ``ConfigError``, hence a ``ValueError``); the message lists
        the valid names.
    """
    cls = BASELINES.get(name)
    if horizon is not None and cls.fits_horizon:
        kw["horizon"] = horizon
    if timezone is not None and cls.reads_clock:
        kw["timezone"] = timezone
    return cls(**kw)
