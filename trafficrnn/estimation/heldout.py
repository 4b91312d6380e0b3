"""Which frames calibrate a model: the held-out windows before the test part (:func:`calibration_issues`).

Calibration frames must be held out from training and precede the test part: by default the validation
part of the stack (as ``evaluate(split="val")`` scores it); frames that reach the test part are refused,
frames that were trained on draw a warning (the intervals would come out too narrow).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from trafficrnn.errors import CalibrationError, ConfigError

__all__ = ["calibration_issues", "first_test_time"]


def calibration_issues(est, times: pd.DatetimeIndex, frames: Any, *data: Any) -> np.ndarray:
    """Issue indices of the calibration windows: every full window of the validation part
    (``frames="val"``), or whose valid times lie in ``frames = (first, last)``; refused where a valid
    time reaches the test part.

    Raises
    ------
    CalibrationError
        Frames that overlap the test part, an unknown ``frames``, or no full window in them.
    """
    from trafficrnn.estimation.evaluation import evaluation_issues
    from trafficrnn.timeaxis import contiguous_starts

    test_from = first_test_time(est, times, *data)
    span = est.input_steps + est.horizon
    if isinstance(frames, str) and frames == "val":
        try:
            issues = evaluation_issues(est, times, "val", *data).issues
        except ConfigError as exc:
            raise CalibrationError(
                f"no calibration window in the validation part of this stack ({exc}); pass "
                "frames=(first, last) held-out times before the test part"
            ) from None
        what = "the validation part"
    elif isinstance(frames, (tuple, list)) and len(frames) == 2:
        try:
            first, last = (pd.Timestamp(t) for t in frames)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(
                f"frames={frames!r:.80}: {exc}; expected two times (first, last)"
            ) from None
        if test_from is not None and last >= test_from:
            raise CalibrationError(
                f"calibration frames {first} → {last} overlap the test part, which starts at "
                f"{test_from}: calibrate on held-out frames before it, e.g. frames=({str(first)!r}, "
                f"{str(test_from - est.cadence_)!r}), or the validation part (frames='val')"
            )
        stop = int(np.searchsorted(times.values, np.datetime64(last), side="right"))
        starts = contiguous_starts(times, est.cadence_, span, slice(0, stop), 1)
        issues = starts + est.input_steps - 1
        issues = issues[times[np.minimum(issues + 1, len(times) - 1)] >= first]
        what = f"frames {first} → {last}"
    else:
        raise CalibrationError(
            f"frames={frames!r:.60} is invalid: expected 'val' (the validation part) or two times "
            "(first, last) of held-out frames before the test part; the test part is never used"
        )
    if len(issues) == 0:
        raise CalibrationError(
            f"no full window of {span} frames in {what}: pass a longer stack, or "
            "frames=(first, last) spanning more frames before the test part"
        )
    valid_last = times[issues[-1]] + est.horizon * est.cadence_
    if test_from is not None and valid_last >= test_from:
        raise CalibrationError(
            f"calibration frames up to {valid_last} overlap the test part, which starts at "
            f"{test_from}: calibrate on held-out frames before it"
        )
    trained = (getattr(est, "split_", None) or {}).get("train")
    valid_first = times[issues[0]] + est.cadence_
    if trained and valid_first <= pd.Timestamp(trained[1]):
        warnings.warn(
            f"calibration frames from {valid_first} were trained on (the training part ends at "
            f"{trained[1]}): the intervals will be too narrow; calibrate on the validation part "
            "(a model fitted with val > 0) or on frames after the training part",
            UserWarning,
            stacklevel=4,  # the caller of model.calibrate
        )
    return issues


def first_test_time(est, times: pd.DatetimeIndex, *data: Any) -> pd.Timestamp | None:
    """First target time of the test part: of this stack's split (as ``evaluate`` reads it) or of the
    training stack's (``split_``), whichever comes first; None where neither has one."""
    from trafficrnn.splits import evaluation_split

    found = []
    try:
        parts, _ = evaluation_split(est, times, "test", *data)
    except ConfigError:
        parts = None
    if parts is not None and parts["test"].stop - parts["test"].start > est.input_steps:
        found.append(times[parts["test"].start + est.input_steps])
    recorded = (getattr(est, "split_", None) or {}).get("test")
    if recorded:
        found.append(pd.Timestamp(recorded[0]) + est.input_steps * est.cadence_)
    return min(found) if found else None
