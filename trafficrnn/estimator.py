"""TrafficForecaster: fit a ConvLSTM / ConvGRU on a georeferenced stack, predict georeferenced forecasts, save and load safely.

Follows the scikit-learn estimator contract: ``__init__`` stores parameters, ``fit`` validates
and returns ``self``, learned state ends in ``_``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from trafficrnn.counting import (
    COUNT_NORM,
    COUNT_STRIDE_PX,
    FINETUNE_SHARE,
    PRETRAIN_SHARE,
    check_counting,
    check_vehicles,
    count_vehicles,
    encode_frames,
    fine_target,
    freeze_encoder,
    front_fits,
    load_front,
    prepare_fine,
    pretrain_encoder,
    read_front,
    split_indices,
    split_target,
    use_front_scaling,
)
from trafficrnn.errors import ConfigError, ModelMismatchError, NotFittedError, TimestampError
from trafficrnn.estimation import checkpoints
from trafficrnn.estimation.checks import InputChecks, gsd_of
from trafficrnn.estimation.context import Context, parse_context
from trafficrnn.estimation.covariates import Covariates
from trafficrnn.estimation.inputs import (
    BatchInputs,
    Channels,
    check_covariates_given,
    check_naive_zone,
    has_vectors,
    kept_static,
    naive_zone_of,
    normalised_inputs,
    prediction_batch,
    static_for,
    static_layers,
    step_vectors,
)
from trafficrnn.estimation.state import FittedState, state_attribute
from trafficrnn.grid import Grid
from trafficrnn.io.timestamps import check_cadence
from trafficrnn.models.encoder import default_strides
from trafficrnn.models.forecaster import count_stage_for
from trafficrnn.params import DEFAULTS as _D  # shared with the CLI's options
from trafficrnn.splits import fit_split
from trafficrnn.timeaxis import contiguous_starts, make_forecast
from trafficrnn.windows import Normalizer, WindowDataset

log = logging.getLogger(__name__)


def _seconds(value: float) -> float:
    """A duration in hundredths of a second, rounded down: a recorded time never exceeds the time
    measured around it (and a part never exceeds the whole it was measured in)."""
    return math.floor(value * 100) / 100


PARAMS = (
    "model",
    "input_steps",
    "horizon",
    "tile_size",
    "hidden",
    "kernel_size",
    "encoder_width",
    "encoder_depth",
    "time_features",
    "residual",
    "timezone",
    "lr",
    "weight_decay",
    "batch_size",
    "max_epochs",
    "max_time",
    "patience",
    "val",
    "test",
    "stride",
    "nowcast_weight",
    "log1p",
    "seed",
    "precision",
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "progress",
    "crop",
    "context",
    "cell_mean",
    "context_inputs",
    "feedback",
    "count_head",
    "target_inputs",
    "linear_lags",
    "bptt_steps",
    "counting",
)


def _stack_name(images: xr.DataArray) -> str:
    """How a refusal names the stack: its first and last file where read_stack recorded them."""
    if "source" in images.coords and images.sizes.get("time", 0):
        names = [str(v) for v in images["source"].values]
        return (
            f"the stack of files {names[0]} … {names[-1]}"
            if len(set(names)) > 1
            else f"the stack {names[0]}"
        )
    return "the stack"


def _encoder_config(tile_size: int, width: int, depth: int, counting: bool) -> dict[str, Any]:
    """TileEncoder settings for power-of-two tiles >= 8.

    With counting supervision: a full-resolution stem, stride-2 stages and BatchNorm, so that the
    density map (read at ``COUNT_STRIDE_PX``) sees each vehicle at full resolution. Without it: no
    stem and a first stride of 4 (several times faster on large images)."""
    config: dict[str, Any] = {"tile_size": int(tile_size), "width": int(width), "depth": int(depth)}
    if tile_size >= 8 and tile_size & (tile_size - 1) == 0:
        if counting:
            config.update(stem=True, strides=default_strides(tile_size), norm=COUNT_NORM)
        else:
            config.update(stem=False, strides=[4] + [2] * (int(tile_size).bit_length() - 3))
    return config


class TrafficForecaster(InputChecks):
    """Forecast traffic density grids with a ConvLSTM or ConvGRU encoder–forecaster.

    Parameters
    ----------
    model : {"convgru", "convlstm"}
        Recurrent cell family.
    input_steps, horizon : int
        Frames read, lead steps forecast.

        The defaults (:data:`trafficrnn.params.DEFAULTS`, the same for the CLI's ``train`` and
        ``compare``): ``"convgru"``, 8 frames in, 6 leads, ``max_time=5`` minutes of ``fit`` (a
        laptop's budget; ``None`` trains until ``max_epochs`` or early stopping).
    tile_size : int or None
        Image pixels per grid cell. ``None`` (or 1) when the stack already holds density / flow
        grids: then no image encoder is used (the density-only path).
    hidden : list of int
        Channels of each stacked recurrent layer.
    kernel_size : int
    encoder_width, encoder_depth : int
        Size of the CNN tile encoder (image path).
    time_features : bool
        Add time-of-day / day-of-week channels (from the real timestamps, DST-aware).
    residual : bool
        Predict the change from the last observed frame.
    feedback : bool
        Feed each lead's prediction back into the forecaster as the next lead's input (errors of
        earlier leads then reach later ones). With ``False`` every lead is decoded directly from
        the encoder state and the known-in-advance inputs of its target time (calendar, covariates,
        context), which is faster; ``benchmarks/README.md`` says how the two compared.
    timezone : str, optional
        IANA zone of the place (e.g. ``"Europe/Vienna"``): the calendar channels (time of day, day
        of week) and the slots of the ``ha`` context read the local wall clock there, DST-aware, so
        that a peak at 08:00 local keeps its channels across a DST change. Naive stack times are
        UTC (as :func:`~trafficrnn.io.read_stack` reads ``TIFFTAG_DATETIME`` and file names, and
        converts offsets), unless the stack records the zone whose wall clock they read
        (``attrs["timezone"]``, e.g. :func:`~trafficrnn.datasets.nyc_bike`'s
        ``America/New_York``): those are read as they are when it is ``timezone``. ``None``: the
        naive times as they read (the UTC clock for UTC times). ``evaluate`` and ``compare`` give it
        to the historical-average and ridge baselines too. A model keeps the zone of its training
        stack's times (``naive_zone_``) and refuses a stack that records another.
    lr, weight_decay, batch_size, max_epochs, patience : training settings.
    linear_lags : int
        With ``k > 0``, add to each lead's forecast a linear term of its own (the autoregressive
        component of LSTNet, Lai et al., 2018): a per-cell linear map of the last ``k`` observed
        frames (image path: the last target or its nowcast, and the nowcasts of the frames
        before), that lead's known-in-advance inputs (calendar, covariates, ``context`` maps) and
        the static layers, learnt with the network and starting at zero. ``0``: none.
    bptt_steps : int, optional
        Truncated backpropagation through time: training backpropagates through the recurrent
        encoder's last ``bptt_steps`` input frames only; the earlier ones still set its state
        (forward, without a graph), so forecasts read every frame. Each training step is cheaper
        (a shorter backward pass), so a time budget holds more epochs. ``None``: through all
        ``input_steps`` frames.
    counting : bool
        Image path, when ``fit`` gets vehicle points (``vehicles=``) or a fine density raster:
        point-supervised counting (see :mod:`trafficrnn.counting`). Stage A trains the tile
        encoder and its count head on single frames of the training split against the points'
        counts per sub-cell of the encoder stage of stride about 4 px (Gaussian-smoothed), plus
        the counts per cell, with early stopping on the validation frames, in up to
        ``PRETRAIN_SHARE`` of ``max_time`` (``FINETUNE_SHARE`` when it starts from the packaged
        count front, see :data:`trafficrnn.counting.FRONT`); that encoder has a full-resolution stem, stride-2
        stages and BatchNorm; stage B freezes the encoder, encodes every frame once and trains the
        recurrent forecaster on windows of the cached features. ``False``, or without points or
        fine raster: one stage, the forecast loss plus the ``nowcast_weight`` auxiliary loss.
    max_time : float, optional
        Time limit of ``fit`` in minutes, from its call to its return: the set-up, both counting
        stages and the encoding of the frames, training and its last validation and checkpoints.
        Training stops after the last batch that leaves time for the validation after it (at
        least one batch trains, so a limit shorter than a batch and a validation is exceeded);
        ``training_summary_["epochs"]`` is then a fraction (``0.5``: half the batches of an epoch)
        and ``training_summary_["wall_seconds"]`` the time of all of ``fit``.
    val, test : float, datetime-like or None
        The validation and test parts (chronological, test last): fractions of the series at its
        end, or the first time of each part (``"2016-10-12"``). ``None`` (default): that boundary
        of the data's published split where it carries one (``attrs["split"]``, e.g.
        :func:`~trafficrnn.datasets.nyc_bike` and stacks written by ``trafficrnn datasets export``),
        else 0.15. A value given wins (``val=0`` keeps the published test part and trains on the
        validation days too). With a published split, ``fit`` refuses a stack that holds only its
        held-out (validation / test) days (:class:`~trafficrnn.errors.SplitError`); see
        :mod:`trafficrnn.splits`. ``training_summary_["split_source"]`` says which split was used.
    stride : int
        Step between training windows.
    nowcast_weight : float
        Weight of the auxiliary loss that teaches the encoder to count vehicles in the current frames.
    count_head : bool
        Image path: count vehicles as the sum over each cell of a finer density map (additive,
        translation-equivariant), and feed the counts to the recurrent encoder beside the features.
    target_inputs : bool
        Image path: the model also reads the observed targets (e.g. vehicle detections) of its
        input frames, beside the images; ``predict`` then needs ``target=`` for those frames. Where
        an observation is missing the images' nowcast stands in. For users who have recent
        detections: the model then knows at least what persistence and the baselines know.
    log1p : bool
        Normalise targets with ``log1p`` before scaling.
    seed : int
    precision : str
        Lightning precision; ``"auto"`` picks bf16-mixed on GPUs that have it, fp32 on CPU.
    accelerator, devices, strategy, num_nodes : Lightning Trainer options (DDP past one device).
    progress : bool
        Show progress bars.
    crop : int, optional
        Train on random spatial crops of ``crop`` × ``crop`` cells (bounded memory on large areas).
    context : tuple of str
        Known-in-advance maps of each target time fed to the forecaster: ``"ha"`` (historical
        average of its slot of week, fitted on the training split; causal inside it) and/or
        periods such as ``"1D"``, ``"7D"`` (the observed value that long before; density-only
        path). They keep later leads from collapsing to the average.
    cell_mean : bool
        Add each cell's training mean as a static channel (which cell is which). Ties the model
        to its training grid.
    context_inputs : bool
        Feed the ``context`` maps of the input frames to the encoder too (each observed frame
        beside its historical average, its value a day before ...), so that the model reads
        departures from the usual directly.

    Attributes
    ----------
    model_ : EncoderForecaster
        The fitted network.
    state_ : FittedState
        What the model knows about its data (grid, cadence, bands, units, normalisers, context,
        covariates, static layers, GSD, split, training summary), saved and loaded with it. Its
        fields are also the attributes ``grid_``, ``cadence_``, ``bands_``, ... (see
        :class:`trafficrnn.estimation.state.FittedState`).
    """

    # the fitted attributes: views of state_'s fields
    grid_ = state_attribute("grid")
    cadence_ = state_attribute("cadence")
    gaps_ = state_attribute("gaps")
    gsd_ = state_attribute("gsd")
    bands_ = state_attribute("bands")
    input_bands_ = state_attribute("input_bands")
    units_ = state_attribute("units")
    density_only_ = state_attribute("density_only")
    naive_zone_ = state_attribute("naive_zone")
    target_normalizer_ = state_attribute("target_normalizer")
    input_normalizer_ = state_attribute("input_normalizer")
    context_ = state_attribute("context")
    static_bands_ = state_attribute("static_bands")
    static_scale_ = state_attribute("static_scale")
    static_ = state_attribute("static")
    covariates_ = state_attribute("covariates")
    split_ = state_attribute("split")
    history_ = state_attribute("history")
    training_summary_ = state_attribute("training_summary")

    def __init__(
        self,
        model: str = _D["model"],
        *,
        input_steps: int = _D["input_steps"],
        horizon: int = _D["horizon"],
        tile_size: int | None = None,
        hidden: tuple[int, ...] | list[int] = _D["hidden"],
        kernel_size: int = 3,
        encoder_width: int = 16,
        encoder_depth: int = 1,
        time_features: bool = True,
        residual: bool = True,
        timezone: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = _D["batch_size"],
        max_epochs: int = _D["max_epochs"],
        max_time: float | None = _D["max_time"],
        patience: int = 6,
        val: float | str | None = None,
        test: float | str | None = None,
        stride: int = 1,
        nowcast_weight: float = 0.5,
        log1p: bool = False,
        seed: int = _D["seed"],
        precision: str = _D["precision"],
        accelerator: str = _D["accelerator"],
        devices: Any = _D["devices"],
        strategy: str = _D["strategy"],
        num_nodes: int = _D["num_nodes"],
        progress: bool = True,
        crop: int | None = None,
        context: tuple[str, ...] = (),
        cell_mean: bool = False,
        context_inputs: bool = True,
        feedback: bool = True,
        count_head: bool = True,
        target_inputs: bool = False,
        linear_lags: int = _D["linear_lags"],
        bptt_steps: int | None = None,
        counting: bool = True,
    ) -> None:
        from trafficrnn.params import check_params

        given = locals()
        params = {name: given[name] for name in PARAMS}
        check_params(params)  # each value on its own; fit checks the combinations and the data
        for name, value in params.items():
            setattr(self, name, value)

    # -- scikit-learn plumbing ----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn contract)."""
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params: Any) -> TrafficForecaster:
        """Set constructor parameters, each checked as by the constructor (nothing is set if one is refused).

        Raises
        ------
        ConfigError
            For an unknown name (a ``ValueError`` too), or a value the constructor refuses.
        """
        from trafficrnn.params import check_params

        unknown = [key for key in params if key not in PARAMS]
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r}: expected one of {', '.join(PARAMS)}"
            )
        check_params(params, self.get_params())
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = TrafficForecaster().get_params()
        changed = ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k] or k == "model"
        )
        status = "fitted" if self.is_fitted else "not fitted"
        extra = ""
        if self.is_fitted:
            extra = f", grid={self.grid_.shape}, bands={self.bands_}, cadence={self.cadence_}"
        return f"TrafficForecaster({changed}) [{status}{extra}]"

    @property
    def history_needed(self) -> int:
        """Frames a forecast reads: ``input_steps``, plus the longest past-period context (e.g. a day back)."""
        self._check_fitted()
        periods = [pd.Timedelta(e) for e in self.context_.entries if e != "ha"]
        back = max((int(p / self.cadence_) for p in periods), default=0)
        return int(self.input_steps + back)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "model_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "this TrafficForecaster is not fitted yet: call fit(...) or TrafficForecaster.load(path)"
            )

    # -- fit ----------------------------------------------------------------------------
    def fit(
        self,
        images: xr.DataArray,
        target: xr.DataArray | None = None,
        *,
        vehicles: Any = None,
        static: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> TrafficForecaster:
        """Train on a stack.

        Parameters
        ----------
        images : xarray.DataArray
            ``(time, band, y, x)`` images (image path, needs ``tile_size``), or density / flow grids
            (density-only path, when ``target`` is None).
        target : xarray.DataArray, optional
            ``(time, band, y, x)`` target grids on ``Grid.from_image(images, tile_size)``; or a
            fine density raster (counts per sub-cell) on the image grid scaled by a divisor ``d``
            of ``tile_size`` (transform ``images.rio.transform() * Affine.scale(d)``): the target
            is then its sum per cell, and with ``counting`` it supervises the encoder's density
            map. ``None`` with ``vehicles``: the counts of the points per cell; ``None`` without
            ``vehicles``: the stack holds density / flow grids, its own target.
        vehicles : geopandas.GeoDataFrame, optional
            Image path: vehicle points with a ``time`` column (as :func:`~trafficrnn.io.rasterize_points` takes),
            binned on the frames of ``images``. They give the target when ``target`` is None and,
            with ``counting``, the per-sub-cell counts of the counting supervision.
        static : xarray.DataArray, optional
            ``(band, y, x)`` layers on the grid (road mask, lanes from ``rasterize_lines``). The
            model keeps them (``static_``, saved with it): ``predict`` and ``evaluate`` use them on
            the training grid when no ``static`` is given there.
        covariates : pandas.DataFrame, optional
            Known-in-advance exogenous series indexed by time, e.g. daily weather and holiday flags
            (one row per day, numeric columns; see :mod:`trafficrnn.estimation.covariates`). Every
            frame and lead time reads the row in force at its time, standardised on the training frames, as
            channels beside the calendar ones. The table must cover the whole stack here, and the
            input frames and lead times in ``predict`` (which then needs ``covariates=`` too).
        checkpoint_dir : path, optional
            Where checkpoints go (``best.ckpt``, ``last.ckpt``, and ``run.json``: the settings, the
            data and, once it ends, the outcome of the run); a temporary folder otherwise. A folder
            that already holds checkpoints is refused unless ``resume``.
        resume : bool
            Continue the run of ``checkpoint_dir`` after an interruption, from its ``last.ckpt``
            (the same settings and data are required; ``max_epochs``, ``max_time``, ``patience`` and
            the hardware may change, e.g. to train for longer). A run that had finished with the very
            same settings is read back instead of trained again. An empty folder starts a new run.

        Returns
        -------
        self

        Raises
        ------
        ConfigError, GridError, TimestampError, CadenceError
            For bad parameters, mismatched grids or times, an irregular cadence, or too short a stack.
        VectorError
            ``vehicles`` without a ``time`` column, without CRS, or with no point inside the images.
        ModelFileError
            ``resume`` into a folder whose run had other settings or data, or whose checkpoint is
            truncated, tampered with or not a checkpoint.
        """
        fit_began = (
            time.perf_counter()
        )  # max_time bounds all of fit, from here (importing Lightning too) to its return
        import trafficrnn.training  # noqa: F401  (Lightning's import counts against max_time, as the set-up)

        deadline = fit_began + self.max_time * 60 if self.max_time else None
        data = self._fit_prepare(
            images,
            target,
            vehicles=vehicles,
            static=static,
            covariates=covariates,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        )
        net = self._fit_build(data)
        outcome = self._fit_train(
            data,
            net,
            deadline=deadline,
            fit_began=fit_began,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        )
        self._fit_store(data, outcome, fit_began)
        return self

    # fit's steps: prepare (check and scale the data) → build (the network) → train (stage A, stage B) → store
    def _fit_paths(
        self, images: xr.DataArray, target: xr.DataArray | None, vehicles: Any
    ) -> SimpleNamespace:
        """The path of ``fit`` (density-only or images), its grid and the aligned images and target."""
        images = self._check_array(images, "images")
        density_only = target is None and vehicles is None
        fine_raster = None
        if vehicles is not None and self.tile_size in (None, 1):
            raise ConfigError(
                f"vehicles= is for the image path: set tile_size=... (image pixels per cell, e.g. 32), "
                f"got tile_size={self.tile_size}"
            )
        if density_only:
            if self.tile_size not in (None, 1):
                raise ConfigError(
                    f"tile_size={self.tile_size} needs a target: pass fit(images, target), or "
                    "tile_size=None to forecast the stack's own grids"
                )
            if self.target_inputs:
                raise ConfigError(
                    "target_inputs=True is for the image path (images plus a target): a stack of "
                    "density grids is read as its own target already; drop target_inputs"
                )
            grid = Grid.from_dataarray(images, tile_size=1)
            target = images
        else:
            if self.tile_size in (None, 1) and images.sizes["y"] == target.sizes["y"]:
                grid = Grid.from_dataarray(images, tile_size=1)
            elif self.tile_size is None:
                raise ConfigError(
                    "tile_size=None but images and target differ in size: pass tile_size=... "
                    "(image pixels per target cell)"
                )
            else:
                grid = Grid.from_image(images, int(self.tile_size), whole=True)
            images = grid.crop(images) if grid.tile_size > 1 else images
            if target is None:
                target = count_vehicles(vehicles, grid, images.time.values)
            else:
                if vehicles is not None:
                    check_vehicles(vehicles, grid)
                if grid.tile_size > 1:
                    target, fine_raster = split_target(
                        self._check_array(target, "target"), images, grid
                    )
            target = self._align_target(images, self._check_array(target, "target"), grid)
            if fine_raster is not None:
                fine_raster = fine_raster.reindex(time=images.time.values)
        counting = (
            bool(self.counting)
            and not density_only
            and (vehicles is not None or fine_raster is not None)
        )
        if counting:
            check_counting(self)
        return SimpleNamespace(
            images=images,
            target=target,
            grid=grid,
            density_only=density_only,
            fine_raster=fine_raster,
            counting=counting,
            vehicles=vehicles,
        )

    def _fit_prepare(
        self, images, target, *, vehicles, static, covariates, checkpoint_dir, resume
    ) -> SimpleNamespace:
        """Step 1 of fit: check the parameters and the data; the split, windows, scalings, inputs and context."""
        self._validate_params()
        if resume and checkpoint_dir is None:
            raise ConfigError(
                "resume=True needs checkpoint_dir=...: the folder of the run to continue"
            )
        data = self._fit_paths(images, target, vehicles)
        images, target, grid, density_only = data.images, data.target, data.grid, data.density_only
        times = pd.DatetimeIndex(images.time.values)
        cadence, gaps = check_cadence(times, allow_gaps=True)
        if cadence is None:
            raise TimestampError("the stack has one frame; forecasting needs a time series")
        split, split_choice = fit_split(self, times, images, target, where=_stack_name(images))
        span = self.input_steps + self.horizon
        starts = {
            k: contiguous_starts(times, cadence, span, s, self.stride if k == "train" else 1)
            for k, s in split.items()
        }
        if len(starts["train"]) == 0:
            raise ConfigError(
                f"no training window of {span} evenly spaced frames fits in the stack of "
                f"{len(times)} frames ({len(gaps)} gaps): shorten input_steps/horizon or add data"
            )
        train_t = split["train"]
        encoder = (
            None
            if grid.tile_size == 1
            else _encoder_config(
                grid.tile_size, self.encoder_width, self.encoder_depth, data.counting
            )
        )
        stride_kw = {}
        if encoder is not None and self.count_head:
            strides = encoder.get("strides") or default_strides(grid.tile_size)
            stride_kw["count_stage"] = count_stage_for(
                strides, COUNT_STRIDE_PX if data.counting else 8
            )
            if data.counting:
                stride_kw["density_per_cell"] = True
        front = (
            self._count_front(images, target, encoder, stride_kw.get("count_stage"))
            if data.counting
            else None
        )
        tgt_norm = Normalizer("rms", log1p=self.log1p).fit(target.isel(time=train_t))
        in_norm = (
            tgt_norm if density_only else Normalizer("standard").fit(images.isel(time=train_t))
        )
        if front is not None and not use_front_scaling(in_norm, front[1]):
            log.info(
                "the images' radiometry (per-band mean %s, std %s) is far from the count front's: counting "
                "starts from scratch",
                np.ravel(in_norm.mean_).round(1),
                np.ravel(in_norm.scale_).round(1),
            )
            front = None
        if front is not None:  # the front predicts counts on its own target scale
            tgt_norm.scale_ = np.full_like(tgt_norm.scale_, front[1]["target_scale"])
        y = tgt_norm.transform(np.asarray(target.values, dtype="float32"), band_axis=1).astype(
            "float32"
        )
        x = (
            y
            if density_only
            else in_norm.transform(np.asarray(images.values, dtype="float32"), band_axis=1)
        )
        cov = None if covariates is None else Covariates.fit(covariates, times[train_t])
        naive_zone = naive_zone_of(images, target)  # None: the naive times are UTC
        tf = step_vectors(
            SimpleNamespace(
                time_features=self.time_features,
                timezone=self.timezone,
                covariates_=cov,
                naive_zone_=naive_zone,
            ),
            times,
            covariates,
        )
        entries = parse_context(self.context, cadence, self.horizon)
        if not density_only and any(e != "ha" for e in entries):
            raise ConfigError(
                f"context={tuple(self.context)}: past-value periods need observed targets at "
                "forecast time, which the image path does not have; use context=('ha',)"
            )
        ctx = Context(entries, self.cell_mean, self.timezone).fit(
            y[train_t], times[train_t], cadence, naive_zone
        )
        user_static, static_names, static_scale = static_layers(static, grid)
        parts = [p for p in (user_static, ctx.static()) if p is not None]
        data.__dict__.update(
            times=times,
            cadence=cadence,
            gaps=gaps,
            split=split,
            split_choice=split_choice,
            starts=starts,
            train_t=train_t,
            encoder=encoder,
            stride_kw=stride_kw,
            front=front,
            tgt_norm=tgt_norm,
            in_norm=in_norm,
            x=x,
            y=y,
            cov=cov,
            naive_zone=naive_zone,
            tf=tf,
            ctx=ctx,
            static=static,
            static_names=static_names,
            static_scale=static_scale,
            static_all=np.concatenate(parts) if parts else None,
        )
        return data

    def _fit_build(self, data: SimpleNamespace) -> torch.nn.Module:
        """Step 2 of fit: the network, seeded (with the packaged count front's weights where they fit)."""
        from trafficrnn.models import get_model

        torch.manual_seed(self.seed)
        n_out = data.target.sizes["band"]
        channels = Channels.of(
            self,
            bands=n_out,
            context=data.ctx,
            covariates=data.cov,
            static=0 if data.static_all is None else len(data.static_all),
        )
        n_tf = data.tf.shape[1] if data.tf is not None else 0
        if n_tf != channels.vectors:  # the per-step vectors built for training
            raise AssertionError(
                f"{n_tf} step-vector channels built, {channels.describe()} declared"
            )
        net = get_model(
            self.model,
            in_channels=data.images.sizes["band"],
            out_channels=n_out,
            hidden_channels=[int(h) for h in self.hidden],
            kernel_size=int(self.kernel_size),
            encoder=data.encoder,
            past_covariate_channels=channels.past,
            future_covariate_channels=channels.future,
            static_channels=channels.static,
            residual=bool(self.residual),
            feedback=bool(self.feedback),
            count_head=bool(self.count_head) and data.encoder is not None,
            linear_leads=self.horizon if self.linear_lags else 0,
            linear_lags=max(int(self.linear_lags), 1),
            **data.stride_kw,
        )
        if data.front is not None:
            load_front(net, data.front[0])
        return net

    def _fit_train(
        self,
        data: SimpleNamespace,
        net: torch.nn.Module,
        *,
        deadline: float | None,
        fit_began: float,
        checkpoint_dir: str | Path | None,
        resume: bool,
    ) -> SimpleNamespace:
        """Step 3 of fit: stage A (counting), then stage B (the forecaster: trained, resumed or read back)."""
        from trafficrnn.training import EpochSampler, ForecastModule

        stage_a, x_win, tile_win = None, data.x, data.grid.tile_size
        if data.counting:
            began = time.perf_counter()
            stage_a, x_win = self._pretrain(
                net,
                data.images,
                data.grid,
                data.x,
                data.y,
                data.tgt_norm,
                data.split,
                data.vehicles,
                data.fine_raster,
                from_front=data.front is not None,
                deadline=deadline,
            )
            stage_a["encode_seconds"] = round(time.perf_counter() - began - stage_a["seconds"], 2)
            tile_win = 1
        maps = data.ctx.series(data.y, data.times, data.train_t.stop)
        datasets = {
            k: WindowDataset(
                x_win,
                data.y,
                data.starts[k],
                self.input_steps,
                self.horizon,
                time_feats=data.tf,
                future_maps=maps,
                tile_size=tile_win,
                crop=self.crop if k == "train" else None,
                seed=self.seed,
            )
            for k in ("train", "val")
        }
        loaders = {
            k: torch.utils.data.DataLoader(
                ds,
                batch_size=self.batch_size,
                sampler=EpochSampler(ds, self.seed) if k == "train" else None,
            )
            for k, ds in datasets.items()
        }
        module = ForecastModule(
            net,
            horizon=self.horizon,
            lr=self.lr,
            weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            nowcast_weight=self.nowcast_weight if data.encoder and not data.counting else 0.0,
            encoded=data.counting,
            inputs=BatchInputs(
                time_features=data.tf is not None,
                static=data.static_all,
                context_inputs=self.context_inputs,
                target_inputs=self.target_inputs,
            ),
            bptt_steps=self.bptt_steps,
        )
        validate = len(datasets["val"]) > 0
        outcome = self._fit_stage_b(
            data,
            module,
            loaders,
            validate,
            deadline=deadline,
            fit_began=fit_began,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        )
        outcome.stage_a = stage_a
        return outcome

    def _fit_stage_b(
        self,
        data: SimpleNamespace,
        module,
        loaders: dict,
        validate: bool,
        *,
        deadline: float | None,
        fit_began: float,
        checkpoint_dir: str | Path | None,
        resume: bool,
    ) -> SimpleNamespace:
        """Stage B: train the forecaster in Lightning (resuming or reading back the run of ``checkpoint_dir``)."""
        from trafficrnn.training import (
            epochs_trained,
            make_trainer,
            quiet_lightning,
            resolve_precision,
        )

        times, cov, max_time = data.times, data.cov, self.max_time
        bands, input_bands = (
            [str(b) for b in data.target.band.values],
            [str(b) for b in data.images.band.values],
        )
        record = checkpoints.run_record(
            self.get_params(),
            {
                "frames": len(times),
                "period": [str(times[0]), str(times[-1])],
                "cadence": data.cadence.isoformat(),
                "grid": data.grid.to_dict(),
                "bands": bands,
                "input_bands": input_bands,
                "static_bands": data.static_names,
                "covariates": None if cov is None else list(cov.columns),
                "counting": data.counting,
            },
        )
        root = Path(checkpoint_dir) if checkpoint_dir is not None else None
        resume_from, finished = (
            checkpoints.prepare(root, record, resume) if root is not None else (None, None)
        )
        if (
            finished is not None
        ):  # a resumed run that had already ended with these settings: read it back
            checkpoints.load_state(root / finished["best"], module)
            module.history = list(finished.get("history") or [])
            epochs, seconds, best_score = (
                finished["epochs"],
                float(finished["train_seconds"]),
                finished["best_score"],
            )
            wall = finished.get(
                "wall_seconds"
            )  # the run's, as its other figures (older records: none)
        else:
            with (
                tempfile.TemporaryDirectory(prefix="trafficrnn-") as tmp,
                quiet_lightning(log.getEffectiveLevel() > logging.INFO),
            ):
                run_root = root if root is not None else Path(tmp)
                if (
                    deadline is not None
                ):  # the Trainer gets what the set-up (and stage A, the encoding) left
                    max_time = max((deadline - time.perf_counter()) / 60, 1e-4)
                trainer, checkpoint = make_trainer(
                    root=run_root,
                    max_epochs=self.max_epochs,
                    patience=self.patience,
                    max_time=max_time,
                    precision=resolve_precision(self.precision, self.accelerator),
                    accelerator=self.accelerator,
                    devices=self.devices,
                    strategy=self.strategy,
                    num_nodes=self.num_nodes,
                    progress=self.progress,
                    validate=validate,
                    deadline=deadline,
                )
                if root is not None and trainer.is_global_zero:
                    checkpoints.write(root, record)
                started = time.perf_counter()
                trainer.fit(
                    module,
                    loaders["train"],
                    loaders["val"] if validate else None,
                    ckpt_path=resume_from,
                )
                seconds = time.perf_counter() - started
                best = checkpoint.best_model_path
                if best:
                    checkpoints.load_state(Path(best), module)
                epochs = epochs_trained(trainer)  # a fraction when the last epoch was cut
                best_score = (
                    None
                    if checkpoint.best_model_score is None
                    else float(checkpoint.best_model_score)
                )
                wall = _seconds(
                    time.perf_counter() - fit_began
                )  # all of fit: what follows takes milliseconds
                if root is not None and trainer.is_global_zero:
                    checkpoints.finish(
                        root,
                        record,
                        {
                            "epochs": epochs,
                            "train_seconds": _seconds(seconds),
                            "best_score": best_score,
                            "best": Path(best).name if best else None,
                            "history": list(module.history),
                            "wall_seconds": wall,
                        },
                    )
                # under DDP every rank reads rank 0's best.ckpt: none may leave (and delete a temporary
                # checkpoint folder) before all have read it
                trainer.strategy.barrier()
        return SimpleNamespace(
            module=module,
            epochs=epochs,
            seconds=seconds,
            best_score=best_score,
            wall=wall,
            validate=validate,
            bands=bands,
            input_bands=input_bands,
        )

    def _fit_store(self, data: SimpleNamespace, outcome: SimpleNamespace, fit_began: float) -> None:
        """Step 4 of fit: ``model_`` and ``state_`` (the training summary included)."""
        times, grid, split, module = data.times, data.grid, data.split, outcome.module
        seconds, epochs, stage_a = outcome.seconds, outcome.epochs, outcome.stage_a
        best_val = outcome.best_score if outcome.validate else None
        model = module.model.cpu().eval()
        split_times = {
            k: [str(times[s.start]), str(times[s.stop - 1])] if s.stop > s.start else None
            for k, s in split.items()
        }
        summary = {
            "frames": len(times),
            "windows": {k: int(len(v)) for k, v in data.starts.items()},
            "epochs": epochs,
            "train_seconds": _seconds(seconds),
            # without a validation split the checkpoint monitors the training loss: no validation score then
            "best_val_loss": best_val,
            "period": [str(times[0]), str(times[-1])],
            "split": split_times,
            "split_source": data.split_choice.describe(),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        if stage_a is not None:
            summary["train_seconds"] = _seconds(seconds + stage_a["seconds"])
            summary["counting"] = {
                "stage_a": stage_a,
                "stage_b": {
                    "epochs": epochs,
                    "seconds": _seconds(seconds),
                    "best_val_loss": best_val,
                },
            }
        wall = outcome.wall
        summary["wall_seconds"] = (
            _seconds(time.perf_counter() - fit_began) if wall is None else wall
        )
        self.model_ = model
        self.state_ = FittedState(
            grid=grid,
            cadence=data.cadence,
            gaps=data.gaps,
            gsd=gsd_of(data.images),
            bands=outcome.bands,
            input_bands=outcome.input_bands,
            units=str(data.target.attrs.get("units", "1")),
            density_only=data.density_only,
            naive_zone=data.naive_zone,
            target_normalizer=data.tgt_norm,
            input_normalizer=data.in_norm,
            context=data.ctx,
            static_bands=data.static_names,
            static_scale=data.static_scale,
            # predict's default; saved with the model
            static=kept_static(data.static, grid, data.static_names),
            covariates=data.cov,
            split=split_times,
            history=list(module.history),
            training_summary=summary,
        )

    @staticmethod
    def _count_front(images, target, encoder, count_stage):
        """The packaged count front (weights, metadata) where it fits these images, else None."""
        found = read_front()
        if found is None or encoder is None or count_stage is None:
            return None
        crs = images.rio.crs
        metres = (
            crs is not None
            and crs.is_projected
            and (crs.linear_units or "").lower() in ("metre", "meter", "m")
        )
        gsd = float(np.mean(gsd_of(images))) if metres else None
        if not front_fits(
            found[1], encoder, count_stage, images.sizes["band"], target.sizes["band"], gsd
        ):
            log.info(
                "the packaged count front does not fit these images (GSD %s m, %d bands): counting "
                "starts from scratch",
                gsd,
                images.sizes["band"],
            )
            return None
        return found

    def _pretrain(
        self,
        net,
        images,
        grid,
        x,
        y,
        tgt_norm,
        split,
        vehicles,
        fine_raster,
        from_front=False,
        deadline=None,
    ):
        """Stage A of counting supervision, then the frozen encoder's cached features (stage B's inputs)."""
        if float(np.nanmin(tgt_norm.mean_)) != 0.0:
            raise ConfigError(
                "counting supervision needs a zero-mean target scaling (counts that add up)"
            )
        unit = grid.tile_size // net.count_factor
        fine, unit = fine_target(images, grid, unit, vehicles=vehicles, raster=fine_raster)
        fine = prepare_fine(fine, tgt_norm.scale_.astype("float32"))
        train, val = split_indices(split)
        # a share of the time left (of max_time, less the set-up): the rest encodes every frame and trains stage B
        share = FINETUNE_SHARE if from_front else PRETRAIN_SHARE
        budget = max(deadline - time.perf_counter(), 0.0) * share if deadline is not None else None
        summary = pretrain_encoder(
            net,
            x,
            y,
            fine,
            train,
            val,
            unit=unit,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            max_seconds=budget,
            patience=self.patience,
            seed=self.seed,
            initial=from_front,
        )
        freeze_encoder(net)
        feats = encode_frames(net, x)
        net.train()
        return summary, feats

    # -- predict ------------------------------------------------------------------------
    def predict_many(
        self,
        images: xr.DataArray,
        issue_indices: Any,
        *,
        horizon: int | None = None,
        static: xr.DataArray | None = None,
        target: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        batch_size: int = 32,
        align: str = "exact",
    ) -> xr.DataArray:
        """Forecasts issued at several frames of ``images`` → ``(issued, lead, band, y, x)``.

        ``target``: the observed targets of the frames of ``images`` (models with ``target_inputs``);
        ``covariates``: the covariate table (models fitted with one), covering the input frames and
        the lead times. ``align``: as :meth:`predict`.

        Raises
        ------
        NotFittedError, ModelMismatchError, ConfigError
        """
        images, grid = self._prepare(images, align)
        check_naive_zone(self, images, target)
        y = self._observed(images, target, grid)
        if self.cell_mean and not grid.matches(self.grid_):
            raise ModelMismatchError(
                f"the model uses per-cell channels (cell_mean=True) of its training grid "
                f"{self.grid_}; the stack is on {grid}: predict on the training grid"
            )
        user, _, _ = static_layers(
            static_for(self, static, grid), grid, names=self.static_bands_, scale=self.static_scale_
        )
        parts = [p for p in (user, self.context_.static()) if p is not None]
        horizon = self._check_horizon(horizon)
        check_covariates_given(self, covariates)
        ends = np.asarray(issue_indices, dtype=np.int64).reshape(-1)
        if ends.size and (ends.min() < self.input_steps - 1 or ends.max() >= images.sizes["time"]):
            raise ConfigError(
                f"issue indices must lie in [{self.input_steps - 1}, {images.sizes['time'] - 1}] "
                f"so that {self.input_steps} input frames exist"
            )
        inputs = BatchInputs(
            time_features=has_vectors(self),
            static=np.concatenate(parts) if parts else None,
            context_inputs=self.context_inputs,
            target_inputs=self.target_inputs,
        )
        x, times = normalised_inputs(self, images), pd.DatetimeIndex(images.time.values)
        # several forecasts share input frames: encode each image once, then run the windows on features
        encoded = self.model_.tile_encoder is not None and len(ends) > 1
        if encoded:
            needed = np.unique(
                (ends[:, None] + np.arange(1 - self.input_steps, 1)[None, :]).ravel()
            )
            feats = encode_frames(self.model_, x[needed])
            x = np.zeros((len(x), *feats.shape[1:]), dtype=feats.dtype)
            x[needed] = feats
        out = []
        with torch.inference_mode():
            for i in range(0, len(ends), batch_size):
                batch = prediction_batch(
                    self,
                    x,
                    times,
                    ends[i : i + batch_size],
                    horizon,
                    y=y,
                    covariates=covariates,
                    encoded=encoded,
                )
                pred = self.model_(batch["x"], horizon=horizon, encoded=encoded, **inputs(batch))
                out.append(pred.float().numpy())
        values = (
            np.concatenate(out)
            if out
            else np.zeros((0, horizon, len(self.bands_), *grid.shape), "float32")
        )
        values = np.clip(self.target_normalizer_.inverse_transform(values, band_axis=2), 0, None)
        return make_forecast(
            values,
            grid,
            issued=times[ends],
            cadence=self.cadence_,
            bands=self.bands_,
            model=self.model,
            units=self.units_,
            issued_dim=True,
        )

    def predict(
        self,
        images: xr.DataArray,
        *,
        horizon: int | None = None,
        static: xr.DataArray | None = None,
        target: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        align: str = "exact",
    ) -> xr.DataArray:
        """Forecast the ``horizon`` frames after the last frame of ``images``.

        ``align``: ``"exact"`` refuses images whose pixel size (GSD) differs from the model's;
        ``"resample"`` first averages them onto the model's GSD (same CRS and origin);
        ``"reproject"`` warps them (bilinear), in any CRS and on any pixels, onto the model's grid
        (its CRS, transform and shape; see :func:`trafficrnn.estimation.checks.reproject_to_grid`); they must
        cover at least half of it.

        ``static``: ``(band, y, x)`` layers on the stack's grid, for a model fitted with them; left
        out, the layers the model kept from ``fit`` (on its training grid only).
        ``target``: observed targets of the input frames, for a model fitted with ``target_inputs``.
        ``covariates``: the covariate table, for a model fitted with one (it must cover the input
        frames and the ``horizon`` lead times: for weather, the forecast of the coming hours).

        Returns
        -------
        xarray.DataArray
            ``(lead, band, y, x)`` with ``valid_time``, attrs ``issued``, ``model``, ``units``,
            and the CRS and grid transform of ``images``.

        Raises
        ------
        NotFittedError, ModelMismatchError
            Before fit; a stack whose bands, CRS, GSD (with ``align="exact"``) or cadence differ from
            the model's; a horizon longer than trained; fewer frames than ``input_steps``.
        """
        n = images.sizes.get("time", 0)
        if n < self.input_steps:
            raise ModelMismatchError(
                f"the stack has {n} frame(s); the model reads input_steps={self.input_steps}"
            )
        fc = self.predict_many(
            images,
            [n - 1],
            horizon=horizon,
            static=static,
            target=target,
            covariates=covariates,
            align=align,
        ).isel(issued=0)
        issued = pd.Timestamp(fc["issued"].values).isoformat()
        fc = fc.drop_vars("issued")
        fc.attrs.update(issued=issued, model=self.model, units=self.units_)
        return fc

    # -- evaluation and persistence -----------------------------------------------------
    def evaluate(
        self,
        images: xr.DataArray,
        target: xr.DataArray | None = None,
        *,
        split: str | None = "test",
        baselines: tuple[str, ...] = ("persistence", "historical_average", "ridge"),
        horizon: int | None = None,
        static: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        align: str = "exact",
    ) -> pd.DataFrame:
        """Per-lead MAE / RMSE / MAPE of the model and every baseline on the same issue times.

        ``split="test"`` scores the windows of the chronological test split (the part never
        trained on); ``None`` scores every window of the given stack. Baselines are fitted on
        the frames before the split. ``align``: as :meth:`predict` (``"exact"``, ``"resample"``
        or ``"reproject"`` onto the model's grid). A progress bar counts the forecasts when the
        model's ``progress`` is true, as in :meth:`fit`. See :func:`trafficrnn.estimation.evaluation.evaluate`.
        """
        from trafficrnn.estimation.evaluation import evaluate

        return evaluate(
            self,
            images,
            target,
            split=split,
            baselines=baselines,
            horizon=horizon,
            static=static,
            covariates=covariates,
            align=align,
        )

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save weights (safetensors) and ``config.json`` to the folder ``path``; see :mod:`trafficrnn.estimation.persist`."""
        from trafficrnn.estimation.persist import save_model

        return save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> TrafficForecaster:
        """Load a saved model safely (no unpickling; config validated; weights checksum verified).

        Raises
        ------
        ModelFileError
            For a missing, tampered, truncated or incompatible model folder.
        """
        from trafficrnn.estimation.persist import load_model

        return load_model(cls, path)
