"""Exogenous covariates: known-in-advance series (daily weather, holidays) joined to the calendar channels.

A covariate table is a :class:`pandas.DataFrame` indexed by time (e.g. one row per day) with
numeric columns. Each frame and each lead time of a forecast reads the row in force at its time
(the last row at or before it, while that row's period lasts), standardised with the mean and
spread of the training frames, and the values join the time-of-day / day-of-week channels as
vectors broadcast over the grid.

The values at the lead times are read from the table as given: for weather that is the forecast
of the day when issuing in earnest; scored with the observed weather instead, a model shows the
upper bound of what a weather forecast can give it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trafficrnn.errors import InputFileError, ModelMismatchError, TimestampError

__all__ = ["Covariates", "check_covariates", "read_covariates"]

#: most columns a covariate table may have (a crafted model config is refused past it)
MAX_COLUMNS = 256


def check_covariates(frame: Any, name: str = "covariates") -> pd.DataFrame:
    """Validate a covariate table: a DataFrame with a sorted, unique DatetimeIndex (at least two rows)
    and finite numeric (or boolean) columns. Returns it as float64.

    Raises
    ------
    TimestampError
        If the index is not made of times, is unsorted or has duplicates.
    ModelMismatchError
        If a column is not numeric, or holds NaN / inf.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ModelMismatchError(
            f"{name} must be a pandas DataFrame indexed by time (one row per day, say), got "
            f"{type(frame).__name__}; read a CSV with trafficrnn.estimation.covariates.read_covariates"
        )
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TimestampError(
            f"{name} is indexed by {type(frame.index).__name__}, expected a DatetimeIndex: "
            "set the date column as index, e.g. frame.set_index(pd.to_datetime(frame['date']))"
        )
    if len(frame) < 2 or frame.shape[1] == 0:
        raise ModelMismatchError(
            f"{name} has {len(frame)} row(s) and {frame.shape[1]} column(s); expected at least "
            "2 rows (the spacing of the rows says how long each value lasts) and 1 column"
        )
    if frame.shape[1] > MAX_COLUMNS:
        raise ModelMismatchError(
            f"{name} has {frame.shape[1]} columns, more than {MAX_COLUMNS}: keep the ones "
            "the model should read"
        )
    if frame.index.hasnans:
        raise TimestampError(f"{name} has a missing (NaT) time in its index: drop or fill that row")
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()][0]
        raise TimestampError(f"{name} has the time {dup} twice: keep one row per time")
    if not frame.index.is_monotonic_increasing:
        raise TimestampError(f"{name} is not sorted by time: call frame.sort_index() first")
    bad = [
        str(c)
        for c in frame.columns
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if bad:
        raise ModelMismatchError(
            f"{name}: column(s) {bad[:5]} are not numeric (e.g. {frame[bad[0]].iloc[0]!r}); "
            "convert them (e.g. 'T' for trace precipitation -> 0.001) or drop them"
        )
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ModelMismatchError(
            f"{name}: column {frame.columns[col]!r} is {values[row, col]} at {frame.index[row]}; "
            "expected finite numbers: fill the gap (e.g. frame.ffill()) or drop the column"
        )
    return pd.DataFrame(values, index=frame.index, columns=[str(c) for c in frame.columns])


def read_covariates(path: str | Path) -> pd.DataFrame:
    """Read a covariate CSV: the first column holds ISO dates or times (``2016-10-21``), the others numbers.

    Raises
    ------
    InputFileError
        If the file is missing or unreadable, or its first column is not ISO times.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: covariate file not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputFileError(f"{path}: not a readable CSV ({str(exc)[:120]})") from None
    if raw.shape[1] < 2:
        raise InputFileError(
            f"{path}: {raw.shape[1]} column(s); expected a date column then numeric columns"
        )
    first = raw.columns[0]
    try:
        index = pd.DatetimeIndex(
            pd.to_datetime(raw[first].astype(str), format="ISO8601"), name=str(first)
        )
    except (ValueError, TypeError):
        raise InputFileError(
            f"{path}: column {first!r} holds {raw[first].iloc[0]!r}, expected ISO dates such as "
            "2016-10-21 (or 2016-10-21T08:00); rewrite the dates as YYYY-MM-DD"
        ) from None
    try:
        return check_covariates(raw.drop(columns=[first]).set_index(index), name=str(path))
    except (ModelMismatchError, TimestampError) as exc:
        raise InputFileError(str(exc)) from None


class Covariates:
    """The covariate columns a model reads and their scaling (fitted on the training frames).

    Parameters
    ----------
    columns : list of str
    mean, scale : list of float
        ``(value - mean) / scale`` is what the model reads.
    """

    def __init__(self, columns: list[str], mean: list[float], scale: list[float]) -> None:
        self.columns = [str(c) for c in columns]
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        return f"Covariates({self.columns})"

    @classmethod
    def fit(cls, frame: Any, times: Any, name: str = "covariates") -> Covariates:
        """Columns of ``frame`` with the mean and standard deviation of their values at ``times``
        (the training frames); a constant column gets a scale of 1."""
        frame = check_covariates(frame, name)
        values = lookup(frame, times, name)
        sd = values.std(axis=0)
        return cls(
            list(frame.columns), values.mean(axis=0).tolist(), np.where(sd > 0, sd, 1.0).tolist()
        )

    def at(self, frame: Any, times: Any, name: str = "covariates") -> np.ndarray:
        """Standardised values ``(len(times), n_columns)`` float32 in force at ``times``.

        Raises
        ------
        ModelMismatchError
            If ``frame`` lacks a column the model reads.
        TimestampError
            If a time is not covered by the table.
        """
        frame = check_covariates(frame, name)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ModelMismatchError(
                f"{name} lacks the column(s) {missing} the model was trained with (it has "
                f"{list(frame.columns)[:8]}): pass a table with {self.columns}"
            )
        values = lookup(frame[self.columns], times, name)
        return ((values - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, spec: Any) -> Covariates:
        """Rebuild from :meth:`to_dict` output, validated (``ValueError`` names what is wrong)."""
        if not isinstance(spec, dict) or set(spec) != {"columns", "mean", "scale"}:
            raise ValueError(
                f"covariates must be a dict with columns, mean and scale, got {str(spec)[:80]}"
            )
        columns, mean, scale = spec["columns"], spec["mean"], spec["scale"]
        if not (
            isinstance(columns, list)
            and isinstance(mean, list)
            and isinstance(scale, list)
            and 1 <= len(columns) <= MAX_COLUMNS
            and len(columns) == len(mean) == len(scale)
        ):
            raise ValueError(
                f"covariates: columns, mean and scale must be lists of the same length in "
                f"[1, {MAX_COLUMNS}]"
            )
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise ValueError("covariates: columns must be distinct names")
        numbers = mean + scale
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in numbers
        ):
            raise ValueError("covariates: mean and scale must be finite numbers")
        if not all(v > 0 for v in scale):
            raise ValueError("covariates: every scale must be positive")
        return cls(columns, mean, scale)


def lookup(frame: pd.DataFrame, times: Any, name: str = "covariates") -> np.ndarray:
    """Rows of a checked ``frame`` in force at ``times``: the last row at or before each time, valid for
    the smallest spacing of the index after it (a daily table covers each whole day).

    Raises
    ------
    TimestampError
        If a time comes before the first row, after the last row's period, or falls in a gap, or
        if the table and the times disagree on having a time zone.
    """
    idx = frame.index
    when = pd.DatetimeIndex(times)
    if (idx.tz is None) != (when.tz is None):
        raise TimestampError(
            f"{name} is indexed by {'naive' if idx.tz is None else 'time-zone aware'} times, the "
            f"stack by {'naive' if when.tz is None else 'aware'} ones: use the same kind (e.g. "
            "frame.tz_localize(None) for naive local times)"
        )
    steps = np.diff(idx.asi8)
    period = int(steps.min())
    stamps = when.as_unit(idx.unit).asi8 if len(when) else np.zeros(0, np.int64)
    pos = np.searchsorted(idx.asi8, stamps, side="right") - 1
    uncovered = (pos < 0) | (stamps >= idx.asi8[np.clip(pos, 0, None)] + period)
    if uncovered.any():
        t = when[int(np.argmax(uncovered))]
        raise TimestampError(
            f"{name} has no row for {t} (its rows run {_stamp(idx[0])} .. {_stamp(idx[-1])}, "
            f"{_span(pd.Timedelta(period, unit=idx.unit))} apart at least): add the covariates of "
            f"every input frame and of every lead time forecast ({int(uncovered.sum())} time(s) "
            "uncovered)"
        )
    return frame.to_numpy(dtype=np.float64)[pos]


def _stamp(t: pd.Timestamp) -> str:
    return str(t.date()) if t == t.normalize() else str(t)


def _span(td: pd.Timedelta) -> str:
    return f"{td.days} day(s)" if td % pd.Timedelta(days=1) == pd.Timedelta(0) else str(td)
