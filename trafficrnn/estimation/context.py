"""Known-in-advance inputs of each target time (historical average of its slot, the value one day or week earlier) and per-cell static channels.

Everything here works on normalised targets ``(T, C, y, x)``. The historical-average channel
of a *training* frame is causal (means of earlier frames of the slot only), so no training
window sees its own target through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from trafficrnn.errors import ConfigError
from trafficrnn.params import check_zone


def parse_context(entries: Sequence[str], cadence: pd.Timedelta, horizon: int) -> list[str]:
    """Validate context entries: ``"ha"`` or a duration at least as long as the forecast horizon.

    Raises
    ------
    ConfigError
        For an unknown entry, or a period so short that the value it points to lies after the
        issue time (it would leak the future).
    """
    out = []
    for entry in entries:
        key = str(entry).strip()
        if key.lower() == "ha":
            out.append("ha")
            continue
        try:
            period = pd.Timedelta(key)
        except ValueError:
            raise ConfigError(
                f"context entry {entry!r} is invalid: expected 'ha' or a duration such as '1D' or '7D'"
            ) from None
        if period < cadence * horizon:
            raise ConfigError(
                f"context period {key} is shorter than the horizon ({horizon} × {cadence}): the value it "
                f"points to would lie after the issue time; use a period >= {cadence * horizon}"
            )
        if period % cadence != pd.Timedelta(0):
            raise ConfigError(f"context period {key} is not a multiple of the cadence {cadence}")
        out.append(key)
    return out


class Context:
    """Future covariates per target time and static per-cell channels, fitted on the training split.

    Parameters
    ----------
    entries : list of str
        ``"ha"`` (historical average of the target's slot of week) and/or durations
        (``"1D"``, ``"7D"``: the observed value that long before the target time, with a
        validity channel).
    cell_mean : bool
        Add each cell's training mean (per band) as a static channel: a per-cell identity signal.
    timezone : str, optional
        IANA zone of the local clock the ``ha`` slots follow (the estimator's ``timezone``, see
        :class:`~trafficrnn.models.baselines.HistoricalAverage`); ``None``: the UTC clock.
    """

    def __init__(
        self, entries: Sequence[str] = (), cell_mean: bool = False, timezone: str | None = None
    ) -> None:
        self.entries = list(entries)
        self.cell_mean = bool(cell_mean)
        self.timezone = timezone

    def fit(
        self,
        y: np.ndarray,
        times: pd.DatetimeIndex,
        cadence: pd.Timedelta,
        naive_zone: str | None = None,
    ) -> Context:
        """Learn the historical-average table and cell means from training targets ``y (T, C, y, x)``.

        ``times``: naive UTC, or wall-clock times of ``naive_zone`` (the stack's ``attrs["timezone"]``).
        """
        from trafficrnn.models.baselines import HistoricalAverage

        self.cadence_ = pd.Timedelta(cadence)
        self.bands_ = int(y.shape[1])
        self.naive_zone_ = naive_zone
        if "ha" in self.entries:
            self.ha_ = HistoricalAverage(by="week", timezone=self.timezone)
            self.ha_.cadence_, self.ha_.timezone_ = self.cadence_, naive_zone
            self.ha_._fit(y.astype(np.float32), pd.DatetimeIndex(times))
        if self.cell_mean:
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(np.where(np.isfinite(y), y, np.nan), axis=0)
            self.cell_mean_ = np.nan_to_num(mean).astype(np.float32)
        return self

    @property
    def future_channels(self) -> int:
        """Channels of :meth:`series` / :meth:`at`: C per ``ha``, C + 1 per period."""
        return sum(self.bands_ if e == "ha" else self.bands_ + 1 for e in self.entries)

    @property
    def static_channels(self) -> int:
        return self.bands_ if self.cell_mean else 0

    def static(self) -> np.ndarray | None:
        """Static channels ``(C_s, y, x)`` or None."""
        return self.cell_mean_ if self.cell_mean else None

    def _lagged(
        self, y: np.ndarray, times: pd.DatetimeIndex, valid: np.ndarray, period: str
    ) -> list[np.ndarray]:
        ns = pd.DatetimeIndex(times).as_unit("ns").asi8
        want = valid.astype("datetime64[ns]").astype(np.int64) - pd.Timedelta(period).value
        idx = np.searchsorted(ns, want)
        found = (idx < len(ns)) & (ns[np.minimum(idx, len(ns) - 1)] == want)
        values = np.where(found[..., None, None, None], y[np.minimum(idx, len(ns) - 1)], np.nan)
        ok = np.isfinite(values).all(axis=-3, keepdims=True)
        return [np.where(ok, values, 0.0), ok.astype(np.float32)]

    def series(self, y: np.ndarray, times: pd.DatetimeIndex, train_stop: int) -> np.ndarray | None:
        """Future covariates of every frame of a series ``(T, C_f, y, x)`` (for training windows).

        The historical average is causal inside ``[0, train_stop)`` and the fitted table after.
        """
        if not self.entries:
            return None
        parts = []
        for entry in self.entries:
            if entry == "ha":
                full = self.ha_.lookup(times.values)
                early = self.ha_.causal(y[:train_stop], pd.DatetimeIndex(times[:train_stop]))
                ha = (
                    np.concatenate([early, full[train_stop:]]) if train_stop < len(times) else early
                )
                ha = np.where(
                    np.isfinite(ha), ha, full
                )  # a slot never seen before: the table's fallback
                parts.append(np.nan_to_num(ha))
            else:
                parts += self._lagged(y, times, times.values, entry)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def at(self, y: np.ndarray, times: pd.DatetimeIndex, valid: np.ndarray) -> np.ndarray | None:
        """Future covariates ``(N, H, C_f, y, x)`` of valid times ``(N, H)``, looking back into ``y (T, ...)``."""
        if not self.entries:
            return None
        parts = []
        for entry in self.entries:
            if entry == "ha":
                ha = self.ha_.lookup(valid.ravel())
                ha = ha.reshape(valid.shape + ha.shape[1:])
                parts.append(np.nan_to_num(ha))
            else:
                parts += self._lagged(y, times, valid, entry)
        return np.concatenate(parts, axis=2).astype(np.float32)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON part (the arrays go to :meth:`arrays`)."""
        out: dict[str, Any] = {
            "entries": self.entries,
            "cell_mean": self.cell_mean,
            "timezone": self.timezone,
        }
        if hasattr(self, "cadence_"):
            out.update(
                cadence=self.cadence_.isoformat(),
                bands=self.bands_,
                naive_zone=getattr(self, "naive_zone_", None),
            )
        if hasattr(self, "ha_"):
            out["ha_slots_per_day"] = int(self.ha_.slots_per_day_)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays, for a safetensors file."""
        out = {}
        if hasattr(self, "ha_"):
            out["context.ha_table"] = np.ascontiguousarray(self.ha_.table_, dtype=np.float32)
        if self.cell_mean:
            out["context.cell_mean"] = np.ascontiguousarray(self.cell_mean_)
        return out

    @classmethod
    def restore(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Context:
        """Rebuild a fitted Context from :meth:`to_dict` and :meth:`arrays`.

        Raises
        ------
        ConfigError
            If a key or array is missing.
        """
        from trafficrnn.models.baselines import HistoricalAverage

        try:
            # saved before the context had a timezone: its slots read the naive times as they were
            ctx = cls(spec["entries"], spec["cell_mean"], spec.get("timezone"))
            for zone in (ctx.timezone, spec.get("naive_zone")):
                if zone is not None:
                    check_zone(zone)  # an unknown zone: a ConfigError, a ValueError
            if "cadence" in spec:
                ctx.cadence_, ctx.bands_ = pd.Timedelta(spec["cadence"]), int(spec["bands"])
                ctx.naive_zone_ = spec.get("naive_zone")
            if "ha" in ctx.entries:
                ctx.ha_ = HistoricalAverage(by="week", timezone=ctx.timezone)
                ctx.ha_.cadence_, ctx.ha_.timezone_ = (
                    ctx.cadence_,
                    getattr(ctx, "naive_zone_", None),
                )
                ctx.ha_.slots_per_day_ = int(spec["ha_slots_per_day"])
                ctx.ha_.table_ = np.asarray(arrays["context.ha_table"], dtype=np.float32)
            if ctx.cell_mean:
                ctx.cell_mean_ = np.asarray(arrays["context.cell_mean"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"context spec {spec!r:.120} or its arrays are incomplete ({exc!r})"
            ) from None
        return ctx
