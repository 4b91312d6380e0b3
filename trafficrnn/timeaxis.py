"""Time handling, forecast arrays, sliding windows and chronological splits.

Everything between a target ``DataArray(time, band, y, x)`` and the tensors a model trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import CadenceError, ConfigError, GridError, TimestampError
from trafficrnn.grid import Grid
from trafficrnn.params import check_zone

__all__ = [
    "infer_cadence",
    "time_features",
    "wall_clock",
    "make_forecast",
    "window_starts",
    "contiguous_starts",
    "chronological_split",
]


# -- time --------------------------------------------------------------------------------
def _as_index(times: Any) -> pd.DatetimeIndex:
    try:
        idx = pd.DatetimeIndex(np.asarray(times) if isinstance(times, xr.DataArray) else times)
    except (TypeError, ValueError) as exc:
        raise TimestampError(
            f"cannot read {times!r:.80} as timestamps ({exc}): expected datetime64 values "
            "or ISO strings such as '2024-03-10T08:00'"
        ) from exc
    if idx.hasnans:
        raise TimestampError(
            f"timestamps contain NaT at position {int(np.flatnonzero(idx.isna())[0])}: "
            "every frame needs a time; drop the frame or fix its timestamp"
        )
    return idx


def wall_clock(
    times: Any, *, timezone: str | None = None, naive_zone: str | None = None
) -> pd.DatetimeIndex:
    """Naive local wall-clock times (the clock on the wall at the place) of ``times``.

    Naive ``times`` are UTC, or wall-clock times of ``naive_zone`` where the data records one
    (a stack's ``attrs["timezone"]``, e.g. the NYC bike data's ``America/New_York``); aware
    times carry their own zone.

    With ``timezone`` (IANA name) they are read on that zone's clock, DST-aware: 06:00 UTC on
    2024-06-03 is 08:00 in ``Europe/Vienna`` (CEST, UTC+2), 06:00 UTC on 2024-01-08 is 07:00
    (CET, UTC+1), so a peak at 08:00 local keeps its reading across the change. Naive times
    already on that clock (``naive_zone == timezone``) are returned unchanged: a nonexistent
    (spring-forward) or twice-seen (fall-back) local hour is never localised and can neither
    raise nor shift. Naive times of another ``naive_zone`` are localised there first.

    Without ``timezone``, naive times are returned unchanged (the UTC clock, or ``naive_zone``'s)
    and aware ones read on their own zone's clock.

    Raises
    ------
    ConfigError
        If ``timezone`` or ``naive_zone`` is not an IANA zone name.
    TimestampError
        If the times cannot be parsed or contain NaT, or a naive time does not exist or exists
        twice on ``naive_zone``'s clock (converting to another ``timezone``).
    """
    idx = _as_index(times)
    if timezone is not None:
        timezone = check_zone(timezone, "timezone")
    if naive_zone is not None:
        naive_zone = check_zone(naive_zone, "naive_zone")
    if idx.tz is not None:
        if timezone is not None:
            idx = idx.tz_convert(timezone)
        return idx.tz_localize(None)
    if timezone is None or timezone == naive_zone:
        return idx
    source = naive_zone or "UTC"
    try:
        local = idx.tz_localize(source)
    except ValueError as exc:  # pandas: a nonexistent or ambiguous wall-clock time of `source`
        raise TimestampError(
            f"cannot read the naive times as {source} wall-clock times to convert them to "
            f"{timezone} ({exc}): use timezone={source!r} (or None) for times on {source}'s "
            "clock, or give times in UTC"
        ) from None
    return local.tz_convert(timezone).tz_localize(None)


def infer_cadence(times: Any) -> pd.Timedelta:
    """The regular time step (``pandas.Timedelta``) of timestamps ``times`` of shape (T,).

    Raises
    ------
    TimestampError
        If there are fewer than 2 times, or times repeat or go backwards.
    CadenceError
        If the steps are not all equal.
    """
    idx = _as_index(times)
    if len(idx) < 2:
        raise TimestampError(
            f"found {len(idx)} timestamp(s): at least 2 are needed to infer the cadence; "
            "pass a longer series or give cadence= explicitly"
        )
    steps = idx[1:] - idx[:-1]
    bad = np.flatnonzero(np.asarray(steps <= pd.Timedelta(0)))
    if bad.size:
        i = int(bad[0])
        raise TimestampError(
            f"timestamps are not strictly increasing: position {i} is {idx[i]}, position "
            f"{i + 1} is {idx[i + 1]}; sort the frames and drop duplicates"
        )
    irregular = np.flatnonzero(np.asarray(steps != steps[0]))
    if irregular.size:
        i = int(irregular[0])
        raise CadenceError(
            f"irregular time step: {idx[i]} -> {idx[i + 1]} is {steps[i]}, expected {steps[0]} "
            f"like the first step ({irregular.size} irregular step(s) in all); resample to a "
            "regular cadence (e.g. da.resample(time='15min').mean()) so missing frames become NaN"
        )
    return pd.Timedelta(steps[0])


#: columns of :func:`time_features` (the calendar channels)
CALENDAR_CHANNELS = 4


def time_features(
    times: Any, *, timezone: str | None = None, naive_zone: str | None = None
) -> np.ndarray:
    """Cyclic calendar features of real timestamps.

    Columns: ``sin``/``cos`` of the time of day and ``sin``/``cos`` of the (continuous) position
    in the week, Monday 00:00 = 0. They are computed from the local wall-clock time in
    ``timezone`` (see :func:`wall_clock`), so 08:00 local maps to the same features in summer
    and in winter, whether the times are naive UTC (converted, DST-aware) or already local
    wall-clock times (``naive_zone == timezone``: the nonexistent 02:30 of a spring-forward day
    or the twice-seen 01:30 of a fall-back day get the features their clock reading says,
    without error or shift of the series). Without ``timezone``: the UTC clock (or
    ``naive_zone``'s) for naive times.

    Parameters
    ----------
    times : array-like of datetime64, shape (T,)
        Naive times (UTC, or wall-clock times of ``naive_zone``), or timezone-aware times.
    timezone : str, optional
        IANA zone whose local clock the features read (naive UTC times are converted to it).
    naive_zone : str, optional
        IANA zone whose wall clock naive ``times`` already read (a stack's ``attrs["timezone"]``);
        ``None``: UTC.

    Returns
    -------
    numpy.ndarray, shape (T, 4), float32

    Raises
    ------
    ConfigError
        If ``timezone`` or ``naive_zone`` is unknown.
    TimestampError
        If the times cannot be parsed (or converted, see :func:`wall_clock`).
    """
    idx = wall_clock(times, timezone=timezone, naive_zone=naive_zone)
    seconds = np.asarray(idx.hour * 3600 + idx.minute * 60 + idx.second, dtype=np.float64)
    day = (seconds + np.asarray(idx.microsecond, dtype=np.float64) / 1e6) / 86400.0
    week = (np.asarray(idx.day_of_week, dtype=np.float64) + day) / 7.0
    angle_d, angle_w = 2 * np.pi * day, 2 * np.pi * week
    return np.stack(
        [np.sin(angle_d), np.cos(angle_d), np.sin(angle_w), np.cos(angle_w)], axis=1
    ).astype(np.float32)


def _as_timedelta(cadence: Any) -> pd.Timedelta:
    try:
        td = pd.Timedelta(cadence)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cadence={cadence!r} is not a time step: expected e.g. '15min' or "
            "pandas.Timedelta(minutes=15)"
        ) from exc
    if pd.isna(td) or td <= pd.Timedelta(0):
        raise ConfigError(f"cadence={cadence!r} must be a positive time step such as '15min'")
    return td


# -- forecast contract -------------------------------------------------------------------
def make_forecast(
    values: Any,
    grid: Grid,
    *,
    issued: Any,
    cadence: Any,
    bands: Sequence[str] | str,
    model: str,
    units: str,
    issued_dim: bool = False,
) -> xr.DataArray:
    """Wrap predicted values as a georeferenced forecast DataArray.

    Parameters
    ----------
    values : array-like, shape (H, C, rows, cols) or (N, H, C, rows, cols)
        Predictions in raw units, leads 1..H after the issue time(s).
    grid : Grid
        Grid of the input; its CRS and transform are attached.
    issued : timestamp or array-like of N timestamps
        Last observed time(s).
    cadence : str or timedelta
        Time step between leads.
    bands, model, units : band names (C of them), model name, units of the values.
    issued_dim : bool, default False
        Return the batched form ``(issued, lead, band, y, x)`` even for 4-D ``values``.

    Returns
    -------
    xarray.DataArray
        ``(lead, band, y, x)`` with coords ``lead`` (timedelta64), ``valid_time`` and attrs
        ``issued`` (ISO string), ``model``, ``units``; or batched ``(issued, lead, band, y, x)``
        with an ``issued`` coord and a 2-D ``valid_time (issued, lead)``.

    Raises
    ------
    ConfigError
        If the dimensions, band count or number of issue times do not match ``values``.
    GridError
        If ``(rows, cols)`` is not the grid shape.
    """
    values = np.asarray(values, dtype=np.float32)
    bands = [bands] if isinstance(bands, str) else [str(b) for b in bands]
    step = _as_timedelta(cadence)
    issued_idx = _as_index(np.atleast_1d(issued))
    batched = issued_dim or values.ndim == 5
    values = values[None] if values.ndim == 4 else values
    if values.ndim != 5:
        raise ConfigError(
            f"forecast values have shape {values.shape}: expected (H, C, rows, cols) or "
            "(N, H, C, rows, cols)"
        )
    n, horizon, n_bands = values.shape[:3]
    if len(issued_idx) != n:
        raise ConfigError(
            f"{len(issued_idx)} issue time(s) given for {n} forecast(s): pass one issue time "
            "per leading entry of values"
        )
    if n_bands != len(bands):
        raise ConfigError(
            f"values have {n_bands} band(s) but bands={bands}: pass one name per band"
        )
    if tuple(values.shape[3:]) != grid.shape:
        raise GridError(
            f"values cover {values.shape[3:]} cells but the grid is {grid.shape}: "
            "predict on the grid the forecast is attached to"
        )
    lead = pd.to_timedelta(np.arange(1, horizon + 1) * step).as_unit("ns")
    issued_ns = issued_idx.as_unit("ns").values
    valid = issued_ns[:, None] + lead.values[None, :]
    if batched:
        da = xr.DataArray(
            values,
            dims=("issued", "lead", "band", "y", "x"),
            coords={
                "issued": issued_ns,
                "lead": lead.values,
                "band": bands,
                "valid_time": (("issued", "lead"), valid),
            },
        )
    else:
        da = xr.DataArray(
            values[0],
            dims=("lead", "band", "y", "x"),
            coords={"lead": lead.values, "band": bands, "valid_time": ("lead", valid[0])},
        )
        da.attrs["issued"] = pd.Timestamp(issued_idx[0]).isoformat()
    da.attrs.update(model=str(model), units=str(units))
    return grid.attach(da)


# -- windows and splits ------------------------------------------------------------------
def positive_int(value: Any, name: str) -> int:
    """``value`` as an int; ``ConfigError`` naming ``name`` unless it is an integer >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid: expected an integer >= 1")
    return int(value)


def window_starts(
    n_times: int,
    input_steps: int,
    horizon: int,
    stride: int = 1,
    *,
    start: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Start indices ``s`` of windows whose frames ``[s, s + input_steps + horizon)`` lie in ``[start, stop)``.

    Inputs are ``[s, s + input_steps)``, targets ``[s + input_steps, s + input_steps + horizon)``.

    Returns
    -------
    numpy.ndarray of int64, shape (n_windows,)
        Empty when the range is shorter than ``input_steps + horizon``.

    Raises
    ------
    ConfigError
        If ``input_steps``, ``horizon`` or ``stride`` is < 1, or ``[start, stop)`` is not inside ``[0, n_times]``.
    """
    input_steps, horizon = (
        positive_int(input_steps, "input_steps"),
        positive_int(horizon, "horizon"),
    )
    stride = positive_int(stride, "stride")
    stop = n_times if stop is None else stop
    if not 0 <= start <= stop <= n_times:
        raise ConfigError(
            f"window range [start={start}, stop={stop}) is invalid for {n_times} time steps: "
            f"expected 0 <= start <= stop <= {n_times}"
        )
    return np.arange(start, stop - input_steps - horizon + 1, stride, dtype=np.int64)


def contiguous_starts(
    times: pd.DatetimeIndex, cadence: pd.Timedelta, span: int, rng: slice, stride: int
) -> np.ndarray:
    """Window starts inside ``rng`` whose ``span`` frames are evenly spaced at ``cadence`` (no gap inside a window).

    Like :func:`window_starts` (``span`` = input_steps + horizon frames from each start, every
    ``stride``-th start in ``[rng.start, rng.stop)``), less the windows whose first and last
    timestamps are not ``span - 1`` cadences apart.
    """
    starts = window_starts(len(times), span - 1, 1, stride, start=rng.start or 0, stop=rng.stop)
    if len(starts) == 0:
        return starts
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    ok = (ns[starts + span - 1] - ns[starts]) == (span - 1) * cadence.value
    return starts[ok]


def _boundary(value: Any, idx: pd.DatetimeIndex | None, n: int, name: str) -> tuple[int, bool]:
    """Index where a split begins (counted from the end for fractions); bool: fraction given."""
    if (
        value is None
    ):  # not set: the default fraction (the estimator resolves a data's published split first)
        value = 0.15
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        if not 0 <= value < 1:
            raise ConfigError(
                f"{name}={value!r} is invalid: expected a fraction in [0, 1) or a datetime"
            )
        return int(round(value * n)), True
    if idx is None:
        raise ConfigError(
            f"{name}={value!r} is a datetime boundary but only a number of time steps was "
            "given: pass the timestamps instead"
        )
    try:
        when = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r} is neither a fraction nor a datetime") from exc
    return int(idx.searchsorted(when, side="left")), False


def chronological_split(
    times: Any,
    *,
    val: Any = 0.15,
    test: Any = 0.15,
    input_steps: int,
    horizon: int,
    context: str = "reach_back",
    check_lengths: bool = True,
) -> dict[str, slice]:
    """Consecutive train / validation / test ranges of time indices.

    Generate windows inside each range with ``window_starts(T, ..., start=s.start, stop=s.stop)``.
    No target frame is shared by two splits, and no window leaves its range:

    * ``context="reach_back"`` (default): the ``val`` and ``test`` ranges start ``input_steps``
      frames before their first target frame, so their windows take inputs from the end of the
      previous split (observed past, no leak of the future), and every frame of the split is a
      target of some window. The ranges overlap by ``input_steps`` frames of inputs only.
    * ``context="strict"``: the ranges are disjoint; a split's inputs never come from another split,
      at the cost of ``input_steps`` frames per split that are never targets.

    Parameters
    ----------
    times : array-like of datetime64, shape (T,), or int
        The timestamps (sorted), or just the number of time steps T (fraction boundaries only).
    val, test : float or datetime-like
        Fraction of the series at its end (``test`` last), or the first time of the split.
        A fraction of 0 gives an empty split; ``None``: 0.15. (A dataset's published split is
        resolved before, by :mod:`trafficrnn.splits`.)
    input_steps, horizon : int
        Window length in and out.
    context : {"reach_back", "strict"}
    check_lengths : bool
        Refuse a split that is asked for but too short for one window (default). ``False``: any
        part may be empty or short (scoring one part of a stack that lacks the others).

    Returns
    -------
    dict
        ``{"train": slice, "val": slice, "test": slice}`` of time indices.

    Raises
    ------
    ConfigError
        For invalid arguments, ``val`` after ``test``, or a non-empty split too short for one window.
    TimestampError
        If ``times`` are not strictly increasing.
    """
    input_steps, horizon = (
        positive_int(input_steps, "input_steps"),
        positive_int(horizon, "horizon"),
    )
    if context not in ("reach_back", "strict"):
        raise ConfigError(f"context={context!r} is invalid: expected 'reach_back' or 'strict'")
    if isinstance(times, (int, np.integer)):
        idx, n = None, int(times)
    else:
        idx = _as_index(times)
        n = len(idx)
        if n > 1 and not idx.is_monotonic_increasing:
            raise TimestampError("times are not sorted: sort the frames by time before splitting")
    b_val, val_frac = _boundary(val, idx, n, "val")
    b_test, test_frac = _boundary(test, idx, n, "test")
    test_start = n - b_test if test_frac else b_test
    val_start = test_start - b_val if val_frac else b_val
    if not 0 <= val_start <= test_start <= n:
        raise ConfigError(
            f"validation starts at index {val_start} and test at {test_start} of {n}: "
            "expected train, then validation, then test; check val= and test="
        )
    need = input_steps + horizon
    requested = {
        "train": True,
        "val": not (val_frac and val == 0),
        "test": not (test_frac and test == 0),
    }
    ranges = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}
    out = {}
    for name, (a, b) in ranges.items():
        own = b - a
        lo = a if context == "strict" or name == "train" or own == 0 else max(a - input_steps, 0)
        if check_lengths and requested[name] and b - lo < need:
            extra = f" ({a - lo} more reached back as context)" if lo < a else ""
            raise ConfigError(
                f"{name} split has {own} time step(s){extra} but one window needs input_steps + "
                f"horizon = {input_steps} + {horizon} = {need}: lengthen the series, shrink the "
                f"window, or change val=/test="
            )
        out[name] = slice(lo, b)
    return out
