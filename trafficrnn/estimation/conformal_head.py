"""Conformalised quantile regression (CQR) of a quantile head: ``calibrate(..., adaptive="head")``.

A quantile head learns its levels from the training windows' errors, which can be smaller than
those of new frames. On the held-out calibration windows (as for the other calibrations: the validation part by default, never
the test part), :func:`head_calibration` keeps, per lead ``h``, band ``b`` and trained level ``tau``,
a shift: the conformal ``tau``-quantile of the scores ``s = y - q_tau`` (the head's quantile in raw
units, as ``predict`` gives it), pooled over windows and cells (NaN targets skipped). With ``n``
scores it is the empirical quantile at ``min(1, tau (1 + 1/n))`` (method ``"higher"``) for
``tau >= 0.5`` and at ``max(0, tau - (1 - tau) / n)`` (method ``"lower"``) below, so that a new
exchangeable target lies below ``q_tau + shift`` with probability about ``tau`` (Romano et al., 2019,
one-sided per level).

:func:`conformalise` turns the head's quantiles into calibrated ones: ``q_tau + shift``, sorted across
the levels in each cell (monotone rearrangement) and clipped at 0. Levels between two trained ones
are then interpolated as the head's (:func:`~trafficrnn.estimation.quantile_head.interpolate_levels`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from trafficrnn.errors import CalibrationError

__all__ = ["METHOD_LABEL", "conformal_shift", "conformalise", "head_calibration", "head_shifts"]

#: the ``quantile_method`` attribute of the forecasts of a model calibrated with ``adaptive="head"``
METHOD_LABEL = "conformalised quantile head"


def conformal_shift(scores: np.ndarray, tau: float) -> float:
    """The conformal ``tau``-quantile of the finite ``scores`` (any shape; NaN skipped), with the
    finite-sample correction (level ``min(1, tau (1 + 1/n))``, method ``"higher"`` for
    ``tau >= 0.5``; ``max(0, tau - (1 - tau) / n)``, method ``"lower"`` below); NaN without scores."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    n = s.size
    if n == 0:
        return float("nan")
    if tau >= 0.5:
        return float(np.quantile(s, min(1.0, tau * (1 + 1 / n)), method="higher"))
    return float(np.quantile(s, max(0.0, tau - (1 - tau) / n), method="lower"))


def head_shifts(values: np.ndarray, truth: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Shifts ``(level, lead, band)`` of the head's quantiles ``values`` ``(level, issued, lead,
    band, y, x)`` (raw units) against ``truth`` ``(issued, lead, band, y, x)``."""
    scores = truth[None].astype(np.float64) - values.astype(np.float64)
    _, _, leads, bands = scores.shape[:4]
    out = np.empty((len(levels), leads, bands))
    for i, tau in enumerate(levels):
        for h in range(leads):
            for b in range(bands):
                out[i, h, b] = conformal_shift(scores[i, :, h, b], float(tau))
    return out


def conformalise(values: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The head's quantiles ``values`` (``(level, ..., lead, band, y, x)``, raw units) plus the
    ``shifts`` ``(level, lead, band)`` of their leads, sorted across the levels in each cell and
    clipped at 0; same dtype.

    Raises
    ------
    CalibrationError
        More leads, or other levels or bands, than calibrated.
    """
    levels, leads, bands = values.shape[0], values.shape[-4], values.shape[-3]
    if levels != shifts.shape[0] or bands != shifts.shape[2] or leads > shifts.shape[1]:
        raise CalibrationError(
            f"the head's forecast has {levels} levels, {leads} leads and {bands} bands but its "
            f"calibration (adaptive='head') covers {shifts.shape[0]} levels, {shifts.shape[1]} "
            f"leads and {shifts.shape[2]} bands: forecast with a horizon of at most "
            f"{shifts.shape[1]}, or calibrate again with this horizon"
        )
    add = shifts[:, :leads, :].reshape(levels, *([1] * (values.ndim - 5)), leads, bands, 1, 1)
    out = np.clip(np.sort(values.astype(np.float64) + add, axis=0), 0, None)
    return out.astype(values.dtype)


@contextmanager
def uncalibrated(est: Any) -> Iterator[None]:
    """``est`` without its calibration for the duration (so that its quantile forecasts are its
    head's own), restored afterwards."""
    saved = getattr(est, "calibration_", None)
    est.calibration_ = None
    try:
        yield
    finally:
        est.calibration_ = saved


def head_calibration(est, images, truth_da, observed, issues, horizon, static, covariates):
    """The :class:`~trafficrnn.estimation.calibration.Calibration` (``scale="head"``) of ``est``'s
    quantile head on the windows ``issues`` of the checked stack ``images`` (targets ``truth_da``).

    Raises
    ------
    CalibrationError
        A lead or band without an observed target in the calibration frames.
    """
    from trafficrnn.estimation.calibration import Calibration, require_observed, valid_span
    from trafficrnn.estimation.evaluation import model_forecasts
    from trafficrnn.estimation.quantile_head import head_levels
    from trafficrnn.metrics import align_truth

    levels = head_levels(est)
    args = (images, observed, issues, horizon, static, covariates, lambda n: None)
    with uncalibrated(est):
        found = model_forecasts(est, *args, quantiles=levels)
    point = found.isel(quantile=0).drop_vars("quantile")
    dims = ("issued", "lead", "band", "y", "x")
    truth = np.asarray(align_truth(point, truth_da).transpose(*dims).values, dtype=np.float64)
    values = np.asarray(found.transpose("quantile", *dims).values)
    shifts = head_shifts(values, truth, levels)
    counts = [int(np.isfinite(truth[:, h]).sum()) for h in range(truth.shape[1])]
    require_observed(shifts, counts, "targets")
    return Calibration(
        bands=[str(b) for b in point.band.values],
        radii=np.zeros((shifts.shape[1], shifts.shape[2], 0)),
        counts=counts,
        frames=valid_span(point),
        windows=int(len(issues)),
        levels=[float(q) for q in levels],
        scale="head",
        shifts=shifts,
    )
