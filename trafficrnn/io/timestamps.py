"""Timestamps of stack frames: from an explicit list, a file-name pattern, the TIFF tag, or an ISO-like stamp in the name."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from trafficrnn.errors import CadenceError, TimestampError

_DIRECTIVES = {
    "%Y": r"\d{4}",
    "%y": r"\d{2}",
    "%m": r"\d{1,2}",
    "%d": r"\d{1,2}",
    "%H": r"\d{1,2}",
    "%M": r"\d{1,2}",
    "%S": r"\d{1,2}",
    "%j": r"\d{1,3}",
    "%f": r"\d{1,6}",
    "%%": "%",
}

_ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}(?!\d)")

# ISO-like stamps found in file names, most specific first. Digits must not continue on either side.
_NAME_PATTERNS = [
    re.compile(
        r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[T_ ](\d{2})[-:_h]?(\d{2})(?:[-:_m]?(\d{2}))?(?!\d)"
    ),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[T_-]?(\d{2})(\d{2})(\d{2})?(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
]


def pattern_to_regex(pattern: str) -> re.Pattern:
    """Turn a ``strptime`` pattern (``"frame_%Y%m%d_%H%M"``) into a regex matching it anywhere in a name."""
    parts = re.split(r"(%[A-Za-z%])", pattern)
    out = []
    for part in parts:
        if part in _DIRECTIVES:
            out.append(_DIRECTIVES[part])
        elif re.fullmatch(r"%[A-Za-z]", part):
            raise TimestampError(
                f"time pattern {pattern!r} uses {part}, which is not supported; "
                f"use only {', '.join(k for k in _DIRECTIVES if k != '%%')}"
            )
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def time_from_pattern(path: str | Path, pattern: str) -> datetime | None:
    """Timestamp parsed from ``path``'s file name with a ``strptime`` pattern, or None if it does not match."""
    name = Path(path).name
    match = pattern_to_regex(pattern).search(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(0), pattern)
    except ValueError:
        return None


def time_from_name(path: str | Path) -> datetime | None:
    """ISO-like date-time in a file name (``2024-05-01T08-30``, ``20240501_0830``, ``20240501``), or None."""
    name = Path(path).name
    for regex in _NAME_PATTERNS:
        for match in regex.finditer(name):
            numbers = [int(g) if g else 0 for g in match.groups()]
            try:
                return datetime(*numbers)
            except ValueError:
                continue
    return None


def parse_tiff_datetime(value: str | None) -> datetime | None:
    """Parse a ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``) or an ISO string; None when absent or malformed."""
    if not value:
        return None
    value = value.strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            pass
    if re.match(r"\d{4}:\d{2}:\d{2}", value):
        return (
            None  # the TIFF layout with impossible values (month 55): malformed, not another format
        )
    try:
        return parse_iso(value)
    except TimestampError:
        return None


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 timestamp into a naive datetime (aware ones are converted to UTC).

    Raises
    ------
    TimestampError
        If ``value`` is not a timestamp.
    """
    # pandas alone reads almost anything ("may", "1 2 3", "2024:55:01 08:00") as some date: insist on
    # an ISO date first, so that a malformed tag or a band name is never taken for a wrong time
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise TimestampError(
            f"cannot parse {value!r:.60} as a timestamp: expected ISO 8601 such as 2024-05-01T08:30"
        )
    try:
        ts = pd.Timestamp(value)
        if ts is not pd.NaT and ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        if ts is not pd.NaT:
            ts = ts.as_unit("ns")  # years outside 1677..2262 do not fit the datetime64[ns] axis
    except (ValueError, TypeError, OverflowError) as exc:
        raise TimestampError(
            f"cannot parse {value!r:.60} as a timestamp ({exc}): expected ISO 8601 such as "
            "2024-05-01T08:30 between the years 1678 and 2261"
        ) from None
    if ts is pd.NaT:
        raise TimestampError(
            f"timestamp {value!r} is missing (NaT): expected ISO 8601 such as 2024-05-01T08:30"
        )
    return ts.to_pydatetime()


def as_naive_times(values, what: str = "time") -> pd.DatetimeIndex:
    """Convert a list of timestamps (strings, datetimes, numpy) into a naive DatetimeIndex.

    Aware timestamps are converted to UTC.

    Raises
    ------
    TimestampError
        If a value cannot be parsed or is missing.
    """
    try:
        index = pd.DatetimeIndex(pd.to_datetime(list(values), format="mixed"))
    except (ValueError, TypeError) as exc:
        raise TimestampError(
            f"{what}: cannot parse {list(values)[:3]!r}... as timestamps ({exc}); "
            "pass ISO 8601 strings or datetime objects"
        ) from exc
    if index.hasnans:
        bad = [i for i, t in enumerate(index) if t is pd.NaT][:5]
        raise TimestampError(
            f"{what}: missing timestamps (NaT) at positions {bad}; give every frame a time"
        )
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    try:
        return index.as_unit("ns")
    except (ValueError, OverflowError) as exc:  # pandas' OutOfBoundsDatetime is a ValueError
        raise TimestampError(
            f"{what}: timestamp out of range ({exc}); expected dates between the years 1678 "
            "and 2261: fix the file's TIFFTAG_DATETIME or name, or pass time=[...]"
        ) from None


def duplicates_message(times: pd.DatetimeIndex, names: list[str]) -> str | None:
    """A message listing frames that share a timestamp, or None if all are unique."""
    dup = times.duplicated(keep=False)
    if not dup.any():
        return None
    groups: dict[pd.Timestamp, list[str]] = {}
    for t, name, d in zip(times, names, dup):
        if d:
            groups.setdefault(t, []).append(name)
    shown = "; ".join(f"{t.isoformat()}: {', '.join(v)}" for t, v in list(groups.items())[:5])
    return (
        f"duplicate timestamps in the stack ({len(groups)} times shared by several frames): {shown}; "
        "remove the duplicate files or give each frame its own time"
    )


def check_cadence(
    times: pd.DatetimeIndex, *, allow_gaps: bool, names: list[str] | None = None
) -> tuple[pd.Timedelta | None, list[str]]:
    """Infer the cadence of sorted ``times`` and list the gaps (steps other than the cadence).

    The cadence is the most common step (the smallest on ties).

    Returns
    -------
    cadence : pandas.Timedelta or None
        None for a single frame.
    gaps : list of str
        ``"start/end"`` ISO intervals whose step differs from the cadence.

    Raises
    ------
    CadenceError
        If a step differs from the cadence and ``allow_gaps`` is false.
    """
    if len(times) < 2:
        return None, []
    times = pd.DatetimeIndex(times).as_unit("ns")
    steps = np.diff(times.asi8)
    values, counts = np.unique(steps, return_counts=True)
    cadence = pd.Timedelta(int(values[counts == counts.max()].min()), unit="ns")
    irregular = np.flatnonzero(steps != cadence.value)
    gaps = [f"{times[i].isoformat()}/{times[i + 1].isoformat()}" for i in irregular]
    if len(gaps) and not allow_gaps:
        details = []
        for i in irregular[:5]:
            step = pd.Timedelta(int(steps[i]), unit="ns")
            where = f" ({names[i]} → {names[i + 1]})" if names else ""
            missing = step / cadence - 1
            kind = (
                f"{missing:g} frame(s) missing"
                if float(missing).is_integer()
                else "off the cadence"
            )
            details.append(
                f"{times[i].isoformat()} → {times[i + 1].isoformat()}: step {step}, {kind}{where}"
            )
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        raise CadenceError(
            f"irregular cadence: expected a step of {cadence} between frames, found {len(gaps)} other step(s): "
            + "; ".join(details)
            + more
            + "; pass allow_gaps=True (CLI: --allow-gaps) to keep going (the gaps are recorded in attrs['gaps'])"
        )
    return cadence, gaps
