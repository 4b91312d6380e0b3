"""Scores of probabilistic forecasts: pinball loss, interval coverage and width, CRPS (quantile and ensemble forms).

Every score takes plain arrays (or DataArrays) that broadcast together and ignores cells where the
truth or a forecast value is NaN; scores are in the target's units (coverage: a fraction).
:func:`score_quantiles` pools them per lead for ``evaluate(..., quantiles=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trafficrnn.errors import ConfigError, GridError

__all__ = [
    "DENSE_LEVELS",
    "pinball",
    "coverage",
    "interval_width",
    "crps_quantiles",
    "crps_ensemble",
    "central_pairs",
    "score_quantiles",
]

#: the quantile grid of the quantile form of the CRPS (0.01, 0.02, ..., 0.99)
DENSE_LEVELS = tuple(round(i / 100, 2) for i in range(1, 100))


def _arrays(*values: Any) -> list[np.ndarray]:
    try:
        return list(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)))
    except ValueError as exc:
        shapes = [np.shape(v) for v in values]
        raise GridError(
            f"arrays of shapes {shapes} do not broadcast: score a forecast and its truth on the "
            "same grid and times (see trafficrnn.metrics.align_truth)"
        ) from exc


def _level(tau: Any) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise ConfigError(f"tau={tau!r:.40} is invalid: expected a probability level in (0, 1)")
    if not 0 < float(tau) < 1:
        raise ConfigError(
            f"tau={tau!r} lies outside (0, 1): pass the level of the quantile, e.g. 0.9"
        )
    return float(tau)


def pinball(pred: Any, truth: Any, tau: float) -> float:
    """Mean pinball (quantile) loss of the ``tau`` quantile forecast ``pred``:
    ``tau * (y - q)`` where ``y >= q``, ``(1 - tau) * (q - y)`` below; NaN without a finite pair.

    Raises
    ------
    ConfigError
        ``tau`` outside (0, 1).
    GridError
        Shapes that do not broadcast.
    """
    tau = _level(tau)
    q, y = _arrays(pred, truth)
    ok = np.isfinite(q) & np.isfinite(y)
    d = y[ok] - q[ok]
    return float(np.maximum(tau * d, (tau - 1) * d).mean()) if d.size else float("nan")


def coverage(lower: Any, upper: Any, truth: Any) -> float:
    """Fraction of the finite truths inside ``[lower, upper]``; NaN without one.

    Raises
    ------
    GridError
        Shapes that do not broadcast.
    """
    lo, hi, y = _arrays(lower, upper, truth)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    return float(((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])).mean()) if ok.any() else float("nan")


def interval_width(lower: Any, upper: Any, truth: Any = None) -> float:
    """Mean width ``upper - lower`` (where ``truth``, if given, is finite); NaN without a value.

    Raises
    ------
    GridError
        Shapes that do not broadcast.
    """
    lo, hi, y = _arrays(lower, upper, 0.0 if truth is None else truth)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    return float((hi[ok] - lo[ok]).mean()) if ok.any() else float("nan")


def crps_quantiles(quantiles: Any, truth: Any, taus: Sequence[float]) -> float:
    """CRPS in its quantile form: twice the pinball loss averaged over the levels ``taus``.

    Parameters
    ----------
    quantiles : array-like, shape (len(taus), ...)
        The forecast quantiles, the level along the first axis.
    truth : array-like, broadcastable to ``quantiles.shape[1:]``
    taus : sequence of float
        An even grid of levels in (0, 1) (e.g. :data:`DENSE_LEVELS`); the finer, the closer to the CRPS.

    Raises
    ------
    ConfigError
        A level outside (0, 1), or as many forecast quantiles as levels not given.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim == 0 or q.shape[0] != len(taus):
        raise ConfigError(
            f"quantiles of shape {q.shape} for {len(taus)} levels: expected the levels along the "
            "first axis, one per level"
        )
    return 2.0 * float(np.mean([pinball(q[i], truth, t) for i, t in enumerate(taus)]))


def crps_ensemble(members: Any, truth: Any) -> float:
    """CRPS of an ensemble (members along the first axis): ``E|X - y| - E|X - X'| / 2`` over the
    empirical distribution of the members, averaged over the finite truths.

    Raises
    ------
    ConfigError
        Fewer than one member.
    GridError
        Shapes that do not broadcast.
    """
    x = np.asarray(members, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] < 1:
        raise ConfigError(f"members of shape {x.shape}: expected the members along the first axis")
    y = np.broadcast_to(np.asarray(truth, dtype=np.float64), x.shape[1:])
    ok = np.isfinite(y) & np.isfinite(x).all(axis=0)
    if not ok.any():
        return float("nan")
    xs, ys = x[:, ok], y[ok]
    skill = np.abs(xs - ys[None]).mean(axis=0)
    spread = np.abs(xs[:, None] - xs[None, :]).mean(axis=(0, 1))
    return float((skill - spread / 2).mean())


def central_pairs(quantiles: Sequence[float]) -> list[tuple[int, float, float]]:
    """The central intervals among ``quantiles``: ``(coverage in %, lower, upper)`` for each level
    ``tau < 0.5`` whose ``1 - tau`` is there too, e.g. ``(80, 0.1, 0.9)``."""
    qs = [round(float(q), 6) for q in quantiles]
    pairs = []
    for q in qs:
        if q < 0.5 and round(1 - q, 6) in qs:
            pct = round(100 * (1 - 2 * q), 4)
            pairs.append((int(pct) if pct == int(pct) else pct, q, round(1 - q, 6)))
    return pairs


def score_quantiles(
    quantiles_of: Callable[[Sequence[float]], np.ndarray],
    truth: np.ndarray,
    quantiles: Sequence[float],
    *,
    dense: Sequence[float] = DENSE_LEVELS,
    chunk: int = 11,
) -> pd.DataFrame:
    """Per-lead pinball loss, coverage and mean width of each central interval, and CRPS.

    Parameters
    ----------
    quantiles_of : callable
        ``quantiles_of(taus) -> array (len(taus), *truth.shape)``: the forecast quantiles at any
        levels (called on chunks of ``dense`` for the CRPS, so that memory stays bounded).
    truth : numpy.ndarray, shape (issued, lead, ...)
    quantiles : sequence of float
        The levels scored by the pinball loss and the intervals (see :func:`central_pairs`).
    dense : sequence of float
        The levels of the CRPS (:func:`crps_quantiles`).

    Returns
    -------
    pandas.DataFrame
        Index ``lead`` = 1..H; columns ``pinball`` (mean over ``quantiles``), ``coverage_<p>`` and
        ``width_<p>`` for each central interval of ``p`` %, ``crps``.
    """
    truth = np.asarray(truth, dtype=np.float64)
    leads = truth.shape[1]
    asked = np.asarray(quantiles_of(list(quantiles)), dtype=np.float64)
    index = {round(float(q), 6): i for i, q in enumerate(quantiles)}
    rows: list[dict[str, float]] = [{} for _ in range(leads)]
    for h in range(leads):
        y = truth[:, h]
        rows[h]["pinball"] = float(
            np.mean([pinball(asked[i, :, h], y, q) for i, q in enumerate(quantiles)])
        )
        for pct, lo, hi in central_pairs(quantiles):
            lower, upper = asked[index[lo], :, h], asked[index[hi], :, h]
            rows[h][f"coverage_{pct}"] = coverage(lower, upper, y)
            rows[h][f"width_{pct}"] = interval_width(lower, upper, y)
    sums = np.zeros(leads)
    for start in range(0, len(dense), chunk):
        taus = list(dense[start : start + chunk])
        block = np.asarray(quantiles_of(taus), dtype=np.float64)
        for h in range(leads):
            sums[h] += sum(pinball(block[i, :, h], truth[:, h], t) for i, t in enumerate(taus))
    for h in range(leads):
        rows[h]["crps"] = 2.0 * sums[h] / len(dense)
    return pd.DataFrame(rows, index=pd.Index(np.arange(1, leads + 1), name="lead"))
