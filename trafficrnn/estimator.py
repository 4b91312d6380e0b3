"""TrafficForecaster: fit a ConvLSTM / ConvGRU on a georeferenced stack, predict georeferenced forecasts, save and load safely.

Follows the scikit-learn estimator contract: ``__init__`` stores parameters, ``fit`` validates
and returns ``self``, learned state ends in ``_``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from trafficrnn.counting import (
    encode_frames,
)
from trafficrnn.errors import ConfigError, ModelMismatchError, NotFittedError
from trafficrnn.estimation import fitting
from trafficrnn.estimation.checks import InputChecks
from trafficrnn.estimation.inputs import (
    BatchInputs,
    check_covariates_given,
    check_naive_zone,
    has_vectors,
    normalised_inputs,
    prediction_batch,
    static_for,
    static_layers,
)
from trafficrnn.estimation.quantile_head import HEAD_METHODS
from trafficrnn.estimation.state import state_attribute
from trafficrnn.numerics import flush_denormals
from trafficrnn.params import DEFAULTS as _D  # shared with the CLI's options
from trafficrnn.params import GROUPS
from trafficrnn.timeaxis import make_forecast

log = logging.getLogger(__name__)


#: the constructor's parameters, in order: what most users set, then the two option groups
PARAMS = (*_D, *GROUPS)


class _GroupOption:
    """A read-only attribute of the estimator for one option of a group (``est.lr``): its value in the
    group's dict (``trainer_kwargs``), else its default. Set it with ``set_params``."""

    def __init__(self, group: str, name: str) -> None:
        self.group, self.name, self.default = group, name, GROUPS[group][name]

    def __get__(self, est: Any, owner: type | None = None) -> Any:
        if est is None:
            return self
        options = getattr(est, self.group, None)
        return options.get(self.name, self.default) if options else self.default

    def __set__(self, est: Any, value: Any) -> None:
        raise AttributeError(
            f"{self.name} is a {self.group} option, read-only here: set it with "
            f"est.set_params({self.group}={{**(est.{self.group} or {{}}), {self.name!r}: {value!r}}})"
        )


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
    context : tuple of str
        Known-in-advance maps of each target time fed to the forecaster: ``"ha"`` (historical
        average of its slot of week, fitted on the training split; causal inside it) and/or
        periods such as ``"1D"``, ``"7D"`` (the observed value that long before; density-only
        path). They keep later leads from collapsing to the average.
    seed : int
    progress : bool
        Show progress bars.
    model_kwargs : dict, optional
        The architecture options, each checked at construction (an unknown key is refused, naming
        the valid ones); those left out, and all with ``None``, take their defaults
        (:data:`trafficrnn.params.MODEL_DEFAULTS`). E.g. ``model_kwargs={"hidden": (64, 64),
        "linear_lags": 3}``. The options:

        hidden : list of int
            Channels of each stacked recurrent layer.
        kernel_size : int
        encoder_width, encoder_depth : int
            Size of the CNN tile encoder (image path).
        residual : bool
            Predict the change from the last observed frame.
        feedback : bool
            Feed each lead's prediction back into the forecaster as the next lead's input (errors of
            earlier leads then reach later ones). With ``False`` every lead is decoded directly from
            the encoder state and the known-in-advance inputs of its target time (calendar, covariates,
            context), which is faster; ``benchmarks/README.md`` says how the two compared.
        time_features : bool
            Add time-of-day / day-of-week channels (from the real timestamps, DST-aware).
        cell_mean : bool
            Add each cell's training mean as a static channel (which cell is which). Ties the model
            to its training grid.
        context_inputs : bool
            Feed the ``context`` maps of the input frames to the encoder too (each observed frame
            beside its historical average, its value a day before ...), so that the model reads
            departures from the usual directly.
        count_head : bool
            Image path: count vehicles as the sum over each cell of a finer density map (additive,
            translation-equivariant), and feed the counts to the recurrent encoder beside the features.
        target_inputs : bool
            Image path: the model also reads the observed targets (e.g. vehicle detections) of its
            input frames, beside the images; ``predict`` then needs ``target=`` for those frames. Where
            an observation is missing the images' nowcast stands in. For users who have recent
            detections: the model then knows at least what persistence and the baselines know.
        linear_lags : int
            With ``k > 0``, add to each lead's forecast a linear term of its own (the autoregressive
            component of LSTNet, Lai et al., 2018): a per-cell linear map of the last ``k`` observed
            frames (image path: the last target or its nowcast, and the nowcasts of the frames
            before), that lead's known-in-advance inputs (calendar, covariates, ``context`` maps) and
            the static layers, learnt with the network and starting at zero. ``0``: none.
        counting : bool
            Image path, when ``fit`` gets vehicle points (``vehicles=``) or a fine density raster:
            point-supervised counting (see :mod:`trafficrnn.counting`). Stage A trains the tile
            encoder and its count head on single frames of the training split against the points'
            counts per sub-cell of the encoder stage of stride about 4 px (Gaussian-smoothed), plus
            the counts per cell, with early stopping on the validation frames and every 7th
            training frame (held out of stage A, so that its checks cover the day's hours), in up to
            ``count_share`` of ``max_time`` (see ``trainer_kwargs``); that encoder has a full-resolution stem, stride-2
            stages and BatchNorm; stage B freezes the encoder, encodes every frame once and trains the
            recurrent forecaster on windows of the cached features. ``False``, or without points or
            fine raster: one stage, the forecast loss plus the ``nowcast_weight`` auxiliary loss.
        log1p : bool
            Normalise targets with ``log1p`` before scaling.
        quantiles : tuple of float, optional
            Probability levels in (0, 1), sorted and unique, e.g. ``(0.1, 0.5, 0.9)``: the network
            gains a quantile head, a 1×1 convolution over the hidden states the point head reads
            that gives, per lead, band and level, an offset from the point forecast, trained with
            the pinball loss (mean over the levels, on the normalised scale, added to the point
            loss with weight 1). Its gradient reaches the head alone (features and point forecast
            detached), so the point forecast trains exactly as without it. ``predict(...,
            quantiles=...)`` then works without :meth:`calibrate`. ``None``: no head.
    trainer_kwargs : dict, optional
        The training and hardware options, checked as ``model_kwargs``; defaults:
        :data:`trafficrnn.params.TRAINER_DEFAULTS`. E.g. ``trainer_kwargs={"lr": 1e-3,
        "max_epochs": 50}``. The options:

        lr, weight_decay, batch_size, max_epochs, patience : training settings.
        stride : int
            Step between training windows.
        nowcast_weight : float
            Weight of the auxiliary loss that teaches the encoder to count vehicles in the current frames.
        count_share : float, optional
            Share of ``max_time`` that point-supervised counting's stage A may take
            (``model_kwargs["counting"]``): of what the set-up left, less the estimated time of
            encoding every frame after it; the rest trains the forecaster. ``None``:
            :data:`trafficrnn.counting.PRETRAIN_SHARE` (a half) from scratch,
            :data:`trafficrnn.counting.FINETUNE_SHARE` (three quarters) when stage A starts from
            the packaged count front (:data:`trafficrnn.counting.FRONT`), sized for a fine-tuning
            of minutes; over half an hour or more, a quarter leaves the forecaster its time.
        crop : int, optional
            Train on random spatial crops of ``crop`` × ``crop`` cells (bounded memory on large areas).
        bptt_steps : int, optional
            Truncated backpropagation through time: training backpropagates through the recurrent
            encoder's last ``bptt_steps`` input frames only; the earlier ones still set its state
            (forward, without a graph), so forecasts read every frame. Each training step is cheaper
            (a shorter backward pass), so a time budget holds more epochs. ``None``: through all
            ``input_steps`` frames.
        precision : str
            Lightning precision; ``"auto"`` picks bf16-mixed on GPUs that have it, fp32 on CPU.
        accelerator, devices, strategy, num_nodes : Lightning Trainer options (DDP past one device).

    Each option of a group is also a read-only attribute (``est.lr``, ``est.hidden``): its value in
    the group's dict, else its default; change it with ``set_params``. An option given as a
    parameter of its own (``TrafficForecaster(lr=1e-3)``) is refused with a ``ConfigError`` naming
    its group.

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
    calibration_ = state_attribute("calibration")

    def __init__(
        self,
        model: str = _D["model"],
        *,
        input_steps: int = _D["input_steps"],
        horizon: int = _D["horizon"],
        tile_size: int | None = _D["tile_size"],
        max_time: float | None = _D["max_time"],
        val: float | str | None = _D["val"],
        test: float | str | None = _D["test"],
        timezone: str | None = _D["timezone"],
        context: tuple[str, ...] = _D["context"],
        seed: int = _D["seed"],
        progress: bool = _D["progress"],
        model_kwargs: dict[str, Any] | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        **misplaced: Any,
    ) -> None:
        from trafficrnn.params import check_params

        _refuse_misplaced(misplaced)
        given = locals()
        params = {name: given[name] for name in PARAMS}
        check_params(params)  # each value on its own; fit checks the combinations and the data
        for name, value in params.items():  # stored as given (scikit-learn contract)
            setattr(self, name, value)

    # -- scikit-learn plumbing ----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn contract), the group dicts as given."""
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params: Any) -> TrafficForecaster:
        """Set constructor parameters, each checked as by the constructor (nothing is set if one is refused).

        A group parameter (``model_kwargs=``, ``trainer_kwargs=``) replaces that group's dict; the
        nested form ``trainer_kwargs__lr=1e-3`` changes one option and keeps the group's others.

        Raises
        ------
        ConfigError
            For an unknown name (a ``ValueError`` too), an option of a group given on its own
            (``lr=``: the message names its group), or a value the constructor refuses.
        """
        from trafficrnn.params import GROUP_OF, check_params, misplaced

        params = dict(params)
        for key in [k for k in params if "__" in k]:
            group, _, option = key.partition("__")
            if group not in GROUPS:
                raise ConfigError(
                    f"unknown parameter {key!r}: the nested form is <group>__<option> with a group "
                    f"of {', '.join(GROUPS)}, e.g. trainer_kwargs__lr=0.001"
                )
            current = params.get(group, getattr(self, group))
            params[group] = {**(current or {}), option: params.pop(key)}
        unknown = [key for key in params if key not in PARAMS]
        for key in unknown:
            if key in GROUP_OF:
                raise misplaced(key, params[key])
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r}: expected one of {', '.join(PARAMS)}"
            )
        check_params(params, self.get_params())
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        params = self.get_params()
        changed = [
            f"{k}={v!r}" for k, v in params.items() if k == "model" or (k in _D and v != _D[k])
        ]
        for group, defaults in GROUPS.items():  # the options away from their defaults
            options = {k: v for k, v in (params[group] or {}).items() if v != defaults.get(k)}
            if options:
                changed.append(f"{group}={options!r}")
        status = "fitted" if self.is_fitted else "not fitted"
        extra = ""
        if self.is_fitted:
            extra = f", grid={self.grid_.shape}, bands={self.bands_}, cadence={self.cadence_}"
        return f"TrafficForecaster({', '.join(changed)}) [{status}{extra}]"

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
        init: TrafficForecaster | str | Path | None = None,
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
        init : TrafficForecaster or path, optional
            A fitted model, or the folder of a saved one, whose network starts the training instead
            of a random one (fine-tuning, e.g. of a model pretrained on another city). It must have
            this model's architecture (model, ``hidden``, ``kernel_size``, ``tile_size``, encoder,
            ``input_steps``/``horizon`` where they size the network, and the same input channels);
            the data (and covariates: ``covariates=`` with its columns exactly when it reads some)
            are scaled with its normalisers, on which its weights were trained. The context maps
            (historical average, cell means) are fitted on this stack as usual.

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
            truncated, tampered with or not a checkpoint; an ``init`` folder that is not a saved
            model.
        ModelMismatchError
            An ``init`` trained on images of another GSD, or reading covariates where none are
            given (or none where a table is given).
        """
        fit_began = (
            time.perf_counter()
        )  # max_time bounds all of fit, from here (importing Lightning too) to its return
        import trafficrnn.training  # noqa: F401  (Lightning's import counts against max_time, as the set-up)

        deadline = fit_began + self.max_time * 60 if self.max_time else None
        data = fitting.prepare(
            self,
            images,
            target,
            vehicles=vehicles,
            static=static,
            covariates=covariates,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            init=init,
        )
        net = fitting.build(self, data)
        with flush_denormals():
            outcome = fitting.train(
                self,
                data,
                net,
                deadline=deadline,
                fit_began=fit_began,
                checkpoint_dir=checkpoint_dir,
                resume=resume,
            )
        fitting.store(self, data, outcome, fit_began)
        return self

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
        quantiles: tuple[float, ...] | None = None,
    ) -> xr.DataArray:
        """Forecasts issued at several frames of ``images`` → ``(issued, lead, band, y, x)``.

        ``target``: the observed targets of the frames of ``images`` (models with ``target_inputs``);
        ``covariates``: the covariate table (models fitted with one), covering the input frames and
        the lead times. ``align``: as :meth:`predict`. ``quantiles``: as :meth:`predict`, the
        forecasts gain a leading ``quantile`` dimension.

        Raises
        ------
        NotFittedError, ModelMismatchError, ConfigError, CalibrationError
        """
        quantiles, method = self._quantile_plan(quantiles)
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
        with flush_denormals():
            values, heads = self._network_forecasts(
                x, times, ends, horizon, y, covariates, inputs, batch_size, method in HEAD_METHODS
            )
        if not len(values):
            values = np.zeros((0, horizon, len(self.bands_), *grid.shape), "float32")
            if method in HEAD_METHODS:
                levels = len(self.model_.quantiles)
                heads = np.zeros((0, horizon, levels, len(self.bands_), *grid.shape), "float32")
        values = np.clip(self.target_normalizer_.inverse_transform(values, band_axis=2), 0, None)
        fc = make_forecast(
            values,
            grid,
            issued=times[ends],
            cadence=self.cadence_,
            bands=self.bands_,
            model=self.model,
            units=self.units_,
            issued_dim=True,
        )
        return self._quantile_forecast(fc, method, quantiles, heads)

    def _network_forecasts(
        self, x, times, ends, horizon, y, covariates, inputs, batch_size, head
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the network on the windows ending at ``ends`` (normalised inputs ``x``) in batches:
        the point forecasts (N, H, C, y, x), and with ``head`` the quantile head's outputs
        (N, H, Q, C, y, x), both normalised; None without ``head``."""
        # several forecasts share input frames: encode each image once, then run the windows on features
        encoded = self.model_.tile_encoder is not None and len(ends) > 1
        if encoded:
            needed = np.unique(
                (ends[:, None] + np.arange(1 - self.input_steps, 1)[None, :]).ravel()
            )
            feats = encode_frames(self.model_, x[needed])
            x = np.zeros((len(x), *feats.shape[1:]), dtype=feats.dtype)
            x[needed] = feats
        out, heads = [], []
        extra = {"return_quantiles": True} if head else {}
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
                pred = self.model_(
                    batch["x"], horizon=horizon, encoded=encoded, **inputs(batch), **extra
                )
                if head:
                    pred, quantiles = pred
                    heads.append(quantiles.float().numpy())
                out.append(pred.float().numpy())
        values = np.concatenate(out) if out else np.zeros((0,), "float32")
        return values, (np.concatenate(heads) if heads else None)

    def _quantile_plan(self, quantiles: Any) -> tuple[tuple[float, ...] | None, str | None]:
        """``(None, None)`` without ``quantiles``; else the levels, checked, and how they are made:
        ``"calibration"`` (it wins), ``"conformal head"`` (calibrated with ``adaptive="head"``) or
        ``"head"`` (the quantile head; for both, the levels within its trained ones).

        Raises
        ------
        ConfigError, CalibrationError, NotFittedError
        """
        if quantiles is None:
            return None, None
        from trafficrnn.estimation.calibration import check_quantiles
        from trafficrnn.estimation.quantile_head import quantile_plan

        check_quantiles(quantiles)  # bad levels are refused before an unfitted model is
        self._check_fitted()
        return quantile_plan(self, quantiles)

    def _quantile_forecast(self, fc, method, quantiles, heads) -> xr.DataArray:
        """The point forecasts ``fc`` (``method`` None), or their quantiles (checked levels) by the
        calibration or the quantile head (its outputs ``heads``, normalised; plus the conformal
        shifts of a calibration with ``adaptive="head"``) along a leading ``quantile`` dimension."""
        if method is None:
            return fc
        from trafficrnn.estimation.calibration import quantile_forecast
        from trafficrnn.estimation.quantile_head import head_forecast, head_values

        if method == "calibration":
            return quantile_forecast(fc, self.calibration_, quantiles)
        values = head_values(heads, self.target_normalizer_)
        if method == "conformal head":
            from trafficrnn.estimation.conformal_head import METHOD_LABEL, conformalise

            values = conformalise(values, self.calibration_.shifts)
            return head_forecast(fc, values, self.model_.quantiles, quantiles, METHOD_LABEL)
        return head_forecast(fc, values, self.model_.quantiles, quantiles)

    def predict(
        self,
        images: xr.DataArray,
        *,
        horizon: int | None = None,
        static: xr.DataArray | None = None,
        target: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        align: str = "exact",
        quantiles: tuple[float, ...] | None = None,
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
        ``quantiles``: probability levels, e.g. ``(0.1, 0.5, 0.9)``: the forecast gains a leading
        ``quantile`` dimension. They come from the model's split-conformal calibration
        (:meth:`calibrate`; see :func:`trafficrnn.estimation.calibration.quantile_forecast`) where
        it has one, which wins over a quantile head; else from its quantile head (trained with
        ``model_kwargs={"quantiles": (...)}``): the trained levels as the head gives them, sorted
        in each cell and clipped at 0, and levels between two trained ones interpolated linearly;
        levels beyond the outermost trained ones are refused (see
        :mod:`trafficrnn.estimation.quantile_head`). A model calibrated with ``adaptive="head"``:
        the head's quantiles plus their conformal shifts, sorted and clipped at 0 (see
        :mod:`trafficrnn.estimation.conformal_head`).

        Returns
        -------
        xarray.DataArray
            ``(lead, band, y, x)`` (``(quantile, lead, band, y, x)`` with ``quantiles``) with
            ``valid_time``, attrs ``issued``, ``model``, ``units``, and the CRS and grid transform of
            ``images``.

        Raises
        ------
        NotFittedError, ModelMismatchError
            Before fit; a stack whose bands, CRS, GSD (with ``align="exact"``) or cadence differ from
            the model's; a horizon longer than trained; fewer frames than ``input_steps``.
        ConfigError, CalibrationError
            Quantiles outside (0, 1), unsorted or repeated, or beyond a quantile head's trained
            levels; quantiles of a model with neither calibration nor quantile head.
        """
        self._quantile_plan(quantiles)  # refused before the stack is read
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
            quantiles=quantiles,
        ).isel(issued=0)
        issued = pd.Timestamp(fc["issued"].values).isoformat()
        fc = fc.drop_vars("issued")
        fc.attrs.update(issued=issued, model=self.model, units=self.units_)
        return fc

    def calibrate(
        self,
        images: xr.DataArray,
        target: xr.DataArray | None = None,
        *,
        frames: Any = "val",
        horizon: int | None = None,
        static: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        align: str = "exact",
        adaptive: str | None = None,
    ) -> TrafficForecaster:
        """Split-conformal calibration on held-out frames before the test part, for ``predict(quantiles=...)``.

        ``frames="val"`` (default): the windows of the validation part of ``images`` (the stack the
        model was fitted on, or one holding those days); ``(first, last)``: the windows whose valid
        times lie between two times, which must precede the test part. Stores ``calibration_``
        (saved with the model). ``adaptive="level"`` scales the intervals by the square root of
        the forecast; ``adaptive="head"`` (a model with a quantile head) shifts the head's own
        quantiles by their conformal shifts (conformalised quantile regression);
        ``adaptive="spread"`` is for ensembles (refused here). See
        :func:`trafficrnn.estimation.calibration.calibrate`.

        Returns
        -------
        self

        Raises
        ------
        CalibrationError
            Frames that overlap the test part, or no full window in them.
        NotFittedError, ModelMismatchError, ConfigError
            As :meth:`evaluate`.
        """
        from trafficrnn.estimation.calibration import calibrate

        self._check_fitted()
        self.calibration_ = calibrate(
            self,
            images,
            target,
            frames=frames,
            horizon=horizon,
            static=static,
            covariates=covariates,
            align=align,
            adaptive=adaptive,
        )
        return self

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
        quantiles: tuple[float, ...] | None = None,
    ) -> pd.DataFrame:
        """Per-lead MAE / RMSE / MAPE of the model and every baseline on the same issue times.

        ``split="test"`` scores the windows of the chronological test split (the part never
        trained on); ``None`` scores every window of the given stack. Baselines are fitted on
        the frames before the split. ``align``: as :meth:`predict` (``"exact"``, ``"resample"``
        or ``"reproject"`` onto the model's grid). A progress bar counts the forecasts when the
        model's ``progress`` is true, as in :meth:`fit`. ``quantiles`` (a calibrated model, or one with
        a quantile head; the calibration wins): also the pinball loss, interval coverage and width,
        and CRPS, beside two probabilistic baselines. See
        :func:`trafficrnn.estimation.evaluation.evaluate`.
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
            quantiles=quantiles,
        )

    def save(self, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
        """Save weights (safetensors; float16 with ``half``) and ``config.json`` to the folder ``path``;
        see :mod:`trafficrnn.estimation.persist`."""
        from trafficrnn.estimation.persist import save_model

        return save_model(self, path, overwrite=overwrite, half=half)

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

    def export_onnx(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the network as ONNX to ``path`` and a sidecar ``path + ".json"`` (grid,
        normalisation, inputs ...) for deployment; run it with :class:`trafficrnn.onnx.OnnxForecaster`.
        See :func:`trafficrnn.onnx.export_onnx` (needs ``pip install 'trafficrnn[onnx]'``).

        Raises
        ------
        NotFittedError, OutputExistsError, ExportError, MissingDependencyError
        """
        from trafficrnn.onnx import export_onnx

        return export_onnx(self, path, overwrite=overwrite)


for _group, _options in GROUPS.items():  # est.lr, est.hidden ...: read-only views of the groups
    for _name in _options:
        setattr(TrafficForecaster, _name, _GroupOption(_group, _name))


def _refuse_misplaced(given: dict[str, Any]) -> None:
    """Refuse keyword arguments that are not constructor parameters: an option of a group given on its
    own (``lr=``) with a ConfigError naming its group, any other name as Python would (TypeError)."""
    from trafficrnn.params import GROUP_OF, misplaced

    for name, value in given.items():
        if name in GROUP_OF:
            raise misplaced(name, value)
    if given:
        raise TypeError(
            f"TrafficForecaster.__init__() got an unexpected keyword argument {next(iter(given))!r}"
        )
