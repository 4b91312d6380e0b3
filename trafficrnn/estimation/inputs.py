"""Model inputs besides the frames: calendar channels, known-in-advance maps, static layers; for training batches and for prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError
from trafficrnn.grid import Grid
from trafficrnn.timeaxis import CALENDAR_CHANNELS, time_features
from trafficrnn.windows import pixel_values


@dataclass(frozen=True)
class Channels:
    """The forecaster's input channels beside the frames, as each provider declares them.

    The encoder reads, per input frame and in this order: the calendar channels and the covariates
    (per-step vectors), the context maps of the frame (``context_inputs``), and the observed
    targets with their validity (``target_inputs``: 2 per band). The forecaster reads, per lead:
    the calendar channels, the covariates and the context maps of its time. Both read the static
    layers (the user's, then the context's cell means). :class:`BatchInputs` builds the tensors in
    that order; the model is sized from :attr:`past`, :attr:`future` and :attr:`static`.
    """

    calendar: int
    covariates: int
    context: int
    context_inputs: bool
    targets: int
    static: int

    @classmethod
    def of(cls, est: Any, *, bands: int, context: Any, covariates: Any, static: int) -> Channels:
        """The channels of estimator ``est`` (its ``time_features``, ``context_inputs`` and
        ``target_inputs``) for ``bands`` target bands, its fitted ``context`` (a
        :class:`~trafficrnn.estimation.context.Context`), ``covariates`` (a
        :class:`~trafficrnn.estimation.covariates.Covariates` or None) and ``static`` layers in
        all."""
        return cls(
            calendar=CALENDAR_CHANNELS if est.time_features else 0,
            covariates=0 if covariates is None else len(covariates),
            context=context.future_channels,
            context_inputs=bool(est.context_inputs),
            targets=2 * bands if est.target_inputs else 0,
            static=static,
        )

    @property
    def vectors(self) -> int:
        """Per-step vector channels (calendar, then covariates)."""
        return self.calendar + self.covariates

    @property
    def past(self) -> int:
        """Channels the encoder reads beside each frame's features."""
        return self.vectors + (self.context if self.context_inputs else 0) + self.targets

    @property
    def future(self) -> int:
        """Known-in-advance channels the forecaster reads at each lead."""
        return self.vectors + self.context

    def describe(self) -> str:
        return (
            f"{self.calendar} calendar, {self.covariates} covariate, {self.context} context, "
            f"{self.targets} observed-target, {self.static} static"
        )


class BatchInputs:
    """Maps a batch of :class:`~trafficrnn.windows.WindowDataset` items to the model's keyword arguments.

    Picklable (plain attributes), so DDP workers can rebuild it.

    Parameters
    ----------
    time_features : bool
        Pass the ``tf_in`` / ``tf_out`` vectors (calendar channels and exogenous covariates).
    context_inputs : bool
        Also pass the known-in-advance maps of the input frames (``ctx_in``) to the encoder, so
        that it sees each observed frame beside its historical average or its value a day before.
    target_inputs : bool
        Image path: also pass the observed targets of the input frames (``y_in`` and its validity
        ``mask_in``) to the encoder, and the last one as ``last_target`` (NaN where unobserved).
    static : numpy.ndarray, shape (C_s, rows, cols), optional
        Static layers on the whole grid; cut per item at its crop ``origin``.
    """

    def __init__(
        self,
        *,
        time_features: bool,
        static: np.ndarray | None = None,
        context_inputs: bool = False,
        target_inputs: bool = False,
    ) -> None:
        self.time_features = time_features
        self.context_inputs = bool(context_inputs)
        self.target_inputs = bool(target_inputs)
        self.static = (
            None
            if static is None
            else torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32))
        )

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kw: dict[str, torch.Tensor] = {}
        future = batch.get("ctx_out")  # (N, H, C_f, h, w) maps
        past = batch.get("ctx_in") if self.context_inputs else None  # (N, T_in, C_f, h, w)
        if self.target_inputs:
            seen = batch["mask_in"]
            observed = torch.cat([batch["y_in"], seen.to(batch["y_in"].dtype)], dim=2)
            past = observed if past is None else torch.cat([past, observed], dim=2)
            kw["last_target"] = torch.where(seen[:, -1], batch["y_in"][:, -1], float("nan"))
        if self.time_features:
            # (N, steps, F) calendar + covariate vectors, broadcast over the grid by the model unless
            # joined to maps here
            past, future = _join(batch["tf_in"], past), _join(batch["tf_out"], future)
        if past is not None:
            kw["past_covariates"] = past
        if future is not None:
            kw["future_covariates"] = future
        if self.static is not None:
            h, w = batch["y"].shape[-2:]
            kw["static"] = torch.stack(
                [self.static[:, r : r + h, c : c + w] for r, c in batch["origin"].tolist()]
            )
        return kw


def _join(vectors: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """Calendar vectors ``(N, S, F)`` alone, or broadcast over the grid and put before ``maps (N, S, C, h, w)``."""
    if maps is None:
        return vectors
    h, w = maps.shape[-2:]
    return torch.cat([vectors[..., None, None].expand(*vectors.shape, h, w), maps], dim=2)


def static_layers(
    static: xr.DataArray | None,
    grid: Grid,
    *,
    names: list[str] | None = None,
    scale: list[float] | None = None,
) -> tuple[np.ndarray | None, list[str], list[float]]:
    """Validate user static layers on ``grid`` and scale each band by its largest absolute value.

    Parameters
    ----------
    static : xarray.DataArray ``(band, y, x)`` or None
    grid : Grid
        The grid of the forecast.
    names, scale : optional
        Band names and scales fitted before (prediction); refused when they differ.

    Returns
    -------
    values ``(C, rows, cols)`` float32 or None, band names, scales.

    Raises
    ------
    ModelMismatchError
        Missing static layers the model was trained with, or other bands.
    GridError
        Layers not on the forecast grid.
    """
    if static is None:
        if names:
            raise ModelMismatchError(
                f"the model was trained with static layers {names} and saved without "
                "them (before trafficrnn kept them): pass static=... (CLI: --roads) on "
                "the forecast grid"
            )
        return None, [], []
    if not isinstance(static, xr.DataArray) or static.dims != ("band", "y", "x"):
        raise ConfigError(
            f"static must be a DataArray (band, y, x) such as rasterize_lines returns, got "
            f"{getattr(static, 'dims', type(static).__name__)}"
        )
    found = [str(b) for b in static.band.values]
    if names is not None and found != names:
        raise ModelMismatchError(
            f"static bands {found} differ from the model's {names}: pass the same layers"
        )
    if static.rio.crs is None or not Grid.from_dataarray(static).matches(grid):
        raise GridError(
            f"static layers of shape {static.shape[1:]} are not on the forecast grid {grid}: "
            "rasterise them with rasterize_lines(roads, grid)"
        )
    values = np.nan_to_num(np.asarray(static.values, dtype=np.float32))
    if scale is None:
        scale = [float(np.abs(b).max()) or 1.0 for b in values]
    return values / np.asarray(scale, dtype=np.float32)[:, None, None], found, list(scale)


def kept_static(static: xr.DataArray | None, grid: Grid, names: list[str]) -> xr.DataArray | None:
    """The static layers a model keeps from ``fit`` (checked by :func:`static_layers` first): ``static``
    as float32 ``(band, y, x)`` on ``grid``, for ``predict`` / ``evaluate`` and the saved model folder."""
    if static is None:
        return None
    values = np.asarray(static.values, dtype=np.float32)
    return grid.attach(
        xr.DataArray(values, dims=("band", "y", "x"), coords={"band": list(names)}, name="static")
    )


def static_for(est: Any, static: xr.DataArray | None, grid: Grid) -> xr.DataArray | None:
    """``static`` where given; else the layers the model kept from ``fit`` (``est.static_``, saved with
    it), which lie on its training grid: used when ``grid`` is that grid.

    Raises
    ------
    ModelMismatchError
        The model keeps static layers and ``grid`` is not its training grid.
    """
    if static is not None or not est.static_bands_:
        return static
    kept = getattr(est, "static_", None)
    if kept is None:  # a model saved before it kept its layers: static_layers asks for them
        return None
    if not grid.matches(est.grid_):
        raise ModelMismatchError(
            f"the model keeps its static layers {est.static_bands_} on its training grid "
            f"{est.grid_}, but the stack is on {grid}: pass static=... rasterised on the "
            "stack's grid (CLI: --roads ROADS.gpkg), or forecast on the training grid"
        )
    return kept


def normalised_inputs(est: Any, images: xr.DataArray) -> np.ndarray:
    """The model inputs ``(T, C, y, x)`` of a stack, normalised as in training (once per prediction call)."""
    norm = est.target_normalizer_ if est.density_only_ else est.input_normalizer_
    return norm.transform(pixel_values(images), band_axis=1).astype("float32", copy=False)


def data_kwargs(static: Any = None, covariates: Any = None) -> dict[str, Any]:
    """``static=`` and ``covariates=`` for ``fit`` / ``predict`` / ``evaluate``, only those given."""
    return {k: v for k, v in (("static", static), ("covariates", covariates)) if v is not None}


def has_vectors(est: Any) -> bool:
    """Whether the model reads per-step vectors (calendar channels and/or covariates)."""
    return bool(est.time_features) or est.covariates_ is not None


#: names of the UTC clock: naive times read on it need no zone
_UTC = {
    "UTC",
    "Etc/UTC",
    "Etc/Universal",
    "Universal",
    "Etc/Zulu",
    "Zulu",
    "GMT",
    "Etc/GMT",
    "Etc/GMT0",
    "GMT0",
}


def naive_zone_of(*stacks: Any) -> str | None:
    """The IANA zone whose wall clock the naive times of a stack read: its ``attrs["timezone"]`` (written
    by :func:`~trafficrnn.io.read_stack` from the files' ``timezone`` tag, or by a dataset such as
    :func:`~trafficrnn.datasets.nyc_bike`), the first of ``stacks`` that records one; ``None``: UTC.

    Raises
    ------
    ConfigError
        If the recorded zone is not an IANA zone name.
    """
    from trafficrnn.params import known_zone

    for da in stacks:
        zone = getattr(da, "attrs", {}).get("timezone") if da is not None else None
        if zone:
            if not known_zone(zone):
                raise ConfigError(
                    f"the stack's attrs['timezone'] = {zone!r} is not a known IANA zone: set it to the "
                    "zone whose wall clock its naive times read (e.g. 'America/New_York'), or "
                    "remove it for UTC times"
                )
            return None if str(zone) in _UTC else str(zone)
    return None


def check_naive_zone(est: Any, *stacks: Any) -> None:
    """Refuse stacks whose naive times read another clock (``attrs["timezone"]``) than the training stack's
    (``est.naive_zone_``): the calendar channels and slots would be shifted by the difference."""
    found = naive_zone_of(*stacks)
    fitted = getattr(est, "naive_zone_", None)
    if found is not None and found != fitted:
        raise ModelMismatchError(
            f"the stack's naive times are wall-clock times of {found} (attrs['timezone']), "
            f"the model was trained on times of {fitted or 'UTC'}: give the times on that "
            "clock (the same kind of stack as in training)"
        )


def step_vectors(est: Any, times: Any, covariates: pd.DataFrame | None = None) -> np.ndarray | None:
    """Per-step vectors ``(len(times), F)`` float32 of a (fitting or fitted) estimator: its calendar
    channels (``time_features`` on the local clock of ``timezone``; ``times`` are naive UTC, or wall-clock
    times of the training stack's zone ``naive_zone_``) then its exogenous covariates (``covariates_``,
    read from the table ``covariates`` at ``times``); ``None`` when it has neither."""
    parts = []
    if est.time_features:
        parts.append(
            time_features(
                times, timezone=est.timezone, naive_zone=getattr(est, "naive_zone_", None)
            )
        )
    if est.covariates_ is not None:
        parts.append(est.covariates_.at(covariates, times))
    return np.concatenate(parts, axis=1) if parts else None


def check_covariates_given(est: Any, covariates: Any, what: str = "the model") -> None:
    """Refuse a covariate table for a model trained without one, and the reverse (``what`` names
    the model in the message: ``"init="`` when fine-tuning one)."""
    if est.covariates_ is not None and covariates is None:
        raise ModelMismatchError(
            f"{what} was trained with the covariates {est.covariates_.columns}: pass "
            "covariates=<DataFrame> (CLI: --covariates FILE.csv) covering the input frames "
            "and the lead times"
        )
    if est.covariates_ is None and covariates is not None:
        raise ModelMismatchError(
            f"{what} was trained without covariates, yet covariates were given: drop them, "
            "or refit with fit(..., covariates=...)"
        )


def prediction_batch(
    est: Any,
    x: np.ndarray,
    times: pd.DatetimeIndex,
    ends: np.ndarray,
    horizon: int,
    y: np.ndarray | None = None,
    covariates: pd.DataFrame | None = None,
    encoded: bool = False,
) -> dict[str, torch.Tensor]:
    """Tensors for forecasts issued at frames ``ends`` of the normalised inputs ``x`` taken at ``times``
    (and, for a model with ``target_inputs``, the normalised observed targets ``y`` of the same frames;
    for a model with covariates, the covariate table). ``encoded``: ``x`` holds the tile encoder's
    per-cell features of each frame (``(T, F, rows, cols)``) instead of its pixels."""
    xs = np.stack([x[e - est.input_steps + 1 : e + 1] for e in ends])
    tile = 1 if encoded else est.grid_.tile_size  # encoded: x holds the per-cell features already
    rows, cols = xs.shape[-2] // tile, xs.shape[-1] // tile
    batch = {
        "x": torch.from_numpy(np.ascontiguousarray(xs)),  # NaN = missing, masked by the model
        "y": torch.zeros(len(ends), horizon, len(est.bands_), rows, cols),
        "origin": torch.zeros(len(ends), 2, dtype=torch.int64),
    }
    if y is not None:
        ys = np.stack([y[e - est.input_steps + 1 : e + 1] for e in ends]).astype(np.float32)
        batch["y_in"] = torch.from_numpy(np.nan_to_num(ys, nan=0.0, posinf=0.0, neginf=0.0))
        batch["mask_in"] = torch.from_numpy(np.isfinite(ys))
    valid = (
        times.values[ends][:, None]
        + est.cadence_.to_timedelta64() * np.arange(1, horizon + 1)[None, :]
    )
    if has_vectors(est):
        seen_at = times[(ends[:, None] + np.arange(1 - est.input_steps, 1)[None, :]).ravel()]
        batch["tf_in"] = torch.from_numpy(
            step_vectors(est, seen_at, covariates).reshape(len(ends), est.input_steps, -1)
        )
        batch["tf_out"] = torch.from_numpy(
            step_vectors(est, valid.ravel(), covariates).reshape(len(ends), horizon, -1)
        )
    maps = est.context_.at(x, times, valid)
    if maps is not None:
        batch["ctx_out"] = torch.from_numpy(maps)
        if getattr(est, "context_inputs", False):
            seen = (
                times.values[ends][:, None]
                - est.cadence_.to_timedelta64() * np.arange(est.input_steps)[::-1][None, :]
            )
            batch["ctx_in"] = torch.from_numpy(est.context_.at(x, times, seen))
    return batch
