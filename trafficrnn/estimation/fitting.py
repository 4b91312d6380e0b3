"""The steps of ``TrafficForecaster.fit``: prepare (check and scale the data) → build (the network)
→ train (stage A, the counting; stage B, the forecaster: trained, resumed or read back) → store
(``model_`` and ``state_``). Each step is a function of the estimator and the step before's data."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

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
    encode_seconds,
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
from trafficrnn.errors import ConfigError, ModelMismatchError, TimestampError
from trafficrnn.estimation import checkpoints
from trafficrnn.estimation.checks import gsd_of
from trafficrnn.estimation.context import Context, parse_context
from trafficrnn.estimation.covariates import Covariates
from trafficrnn.estimation.inputs import (
    BatchInputs,
    Channels,
    check_covariates_given,
    kept_static,
    naive_zone_of,
    static_layers,
    step_vectors,
)
from trafficrnn.estimation.state import FittedState
from trafficrnn.grid import Grid
from trafficrnn.io.timestamps import check_cadence
from trafficrnn.models.encoder import default_strides
from trafficrnn.models.forecaster import count_stage_for
from trafficrnn.splits import fit_split
from trafficrnn.timeaxis import contiguous_starts
from trafficrnn.windows import Normalizer, WindowDataset, pixel_values

if TYPE_CHECKING:
    from trafficrnn.estimator import TrafficForecaster

log = logging.getLogger("trafficrnn.estimator")


def seconds_down(value: float) -> float:
    """A duration in hundredths of a second, rounded down: a recorded time never exceeds the time
    measured around it (and a part never exceeds the whole it was measured in). Idempotent: a
    recorded time read back (0.29, stored as 0.28999...) stays what it was."""
    return math.floor(round(value * 100, 6)) / 100


def stack_name(images: xr.DataArray) -> str:
    """How a refusal names the stack: its first and last file where read_stack recorded them."""
    if "source" in images.coords and images.sizes.get("time", 0):
        names = [str(v) for v in images["source"].values]
        return (
            f"the stack of files {names[0]} … {names[-1]}"
            if len(set(names)) > 1
            else f"the stack {names[0]}"
        )
    return "the stack"


def encoder_config(tile_size: int, width: int, depth: int, counting: bool) -> dict[str, Any]:
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


# fit's steps: prepare (check and scale the data) → build (the network) → train (stage A, stage B) → store
def fit_paths(
    est, images: xr.DataArray, target: xr.DataArray | None, vehicles: Any
) -> SimpleNamespace:
    """The path of ``fit`` (density-only or images), its grid and the aligned images and target."""
    images = est._check_array(images, "images")
    density_only = target is None and vehicles is None
    fine_raster = None
    if vehicles is not None and est.tile_size in (None, 1):
        raise ConfigError(
            f"vehicles= is for the image path: set tile_size=... (image pixels per cell, e.g. 32), "
            f"got tile_size={est.tile_size}"
        )
    if density_only:
        if est.tile_size not in (None, 1):
            raise ConfigError(
                f"tile_size={est.tile_size} needs a target: pass fit(images, target), or "
                "tile_size=None to forecast the stack's own grids"
            )
        if est.target_inputs:
            raise ConfigError(
                "target_inputs=True is for the image path (images plus a target): a stack of "
                "density grids is read as its own target already; drop target_inputs"
            )
        grid = Grid.from_dataarray(images, tile_size=1)
        target = images
    else:
        if est.tile_size in (None, 1) and images.sizes["y"] == target.sizes["y"]:
            grid = Grid.from_dataarray(images, tile_size=1)
        elif est.tile_size is None:
            raise ConfigError(
                "tile_size=None but images and target differ in size: pass tile_size=... "
                "(image pixels per target cell)"
            )
        else:
            grid = Grid.from_image(images, int(est.tile_size), whole=True)
        images = grid.crop(images) if grid.tile_size > 1 else images
        if target is None:
            target = count_vehicles(vehicles, grid, images.time.values)
        else:
            if vehicles is not None:
                check_vehicles(vehicles, grid)
            if grid.tile_size > 1:
                target, fine_raster = split_target(est._check_array(target, "target"), images, grid)
        target = est._align_target(images, est._check_array(target, "target"), grid)
        if fine_raster is not None:
            fine_raster = fine_raster.reindex(time=images.time.values)
    counting = (
        bool(est.counting)
        and not density_only
        and (vehicles is not None or fine_raster is not None)
    )
    if counting:
        check_counting(est)
    return SimpleNamespace(
        images=images,
        target=target,
        grid=grid,
        density_only=density_only,
        fine_raster=fine_raster,
        counting=counting,
        vehicles=vehicles,
    )


def prepare(
    est, images, target, *, vehicles, static, covariates, checkpoint_dir, resume, init=None
) -> SimpleNamespace:
    """Step 1 of fit: check the parameters and the data; the split, windows, scalings, inputs and context."""
    est._validate_params()
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir=...: the folder of the run to continue")
    data = fit_paths(est, images, target, vehicles)
    images, target, grid, density_only = data.images, data.target, data.grid, data.density_only
    times, cadence, gaps, split, split_choice, starts = fit_windows(est, images, target)
    train_t = split["train"]
    encoder, stride_kw = network_plan(est, grid, data.counting)
    front = (
        count_front(images, target, encoder, stride_kw.get("count_stage"))
        if data.counting
        else None
    )
    tgt_norm, in_norm, front, init = fit_scalings(est, data, train_t, front, init)
    if init is not None and "count_validity" in stride_kw:  # the layout of the model it starts from
        stride_kw["count_validity"] = bool(init.model_.config.get("count_validity", False))
    x, y = scaled_arrays(images, target, density_only, tgt_norm, in_norm)
    data.init = init
    cov, naive_zone, tf, ctx = step_inputs(est, data, times, cadence, train_t, y, covariates)
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


def fit_windows(est, images: xr.DataArray, target: xr.DataArray) -> tuple:
    """The frames' times, cadence and gaps, the split and each part's window starts."""
    times = pd.DatetimeIndex(images.time.values)
    cadence, gaps = check_cadence(times, allow_gaps=True)
    if cadence is None:
        raise TimestampError("the stack has one frame; forecasting needs a time series")
    split, split_choice = fit_split(est, times, images, target, where=stack_name(images))
    span = est.input_steps + est.horizon
    starts = {
        k: contiguous_starts(times, cadence, span, s, est.stride if k == "train" else 1)
        for k, s in split.items()
    }
    if len(starts["train"]) == 0:
        raise ConfigError(
            f"no training window of {span} evenly spaced frames fits in the stack of "
            f"{len(times)} frames ({len(gaps)} gaps): shorten input_steps/horizon or add data"
        )
    return times, cadence, gaps, split, split_choice, starts


def network_plan(est, grid: Grid, counting: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The tile encoder's settings (None on the density path) and the count stage's keywords."""
    encoder = (
        None
        if grid.tile_size == 1
        else encoder_config(grid.tile_size, est.encoder_width, est.encoder_depth, counting)
    )
    stride_kw = {}
    if encoder is not None and est.count_head:
        strides = encoder.get("strides") or default_strides(grid.tile_size)
        stride_kw["count_stage"] = count_stage_for(strides, COUNT_STRIDE_PX if counting else 8)
        if counting:
            stride_kw["density_per_cell"] = True
        stride_kw["count_validity"] = True
    return encoder, stride_kw


def fit_scalings(est, data: SimpleNamespace, train_t: slice, front, init) -> tuple:
    """The target and input scalings (the count front's or ``init``'s), the front kept, ``init``."""
    images, target, density_only = data.images, data.target, data.density_only
    tgt_norm = Normalizer("rms", log1p=est.log1p).fit(target.isel(time=train_t))
    in_norm = tgt_norm if density_only else Normalizer("standard").fit(images.isel(time=train_t))
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
    init = init_model(est, init, images, target, density_only)
    if init is not None:  # its weights were trained on its scalings
        tgt_norm = Normalizer.from_dict(init.state_.target_normalizer.to_dict())
        in_norm = (
            tgt_norm
            if density_only
            else Normalizer.from_dict(init.state_.input_normalizer.to_dict())
        )
    return tgt_norm, in_norm, front, init


def scaled_arrays(images, target, density_only: bool, tgt_norm, in_norm) -> tuple:
    """The scaled inputs ``x`` and targets ``y`` (float32; one array on the density path)."""
    y = tgt_norm.transform(np.asarray(target.values, dtype="float32"), band_axis=1).astype(
        "float32"
    )
    x = y if density_only else in_norm.transform(pixel_values(images), band_axis=1)
    return x, y


def step_inputs(est, data: SimpleNamespace, times, cadence, train_t: slice, y, covariates) -> tuple:
    """The covariates, the naive times' zone, the per-step vectors and the fitted context."""
    cov = init_covariates(data.init, covariates)
    if cov is None and covariates is not None:
        cov = Covariates.fit(covariates, times[train_t])
    naive_zone = naive_zone_of(data.images, data.target)  # None: the naive times are UTC
    tf = step_vectors(
        SimpleNamespace(
            time_features=est.time_features,
            timezone=est.timezone,
            covariates_=cov,
            naive_zone_=naive_zone,
        ),
        times,
        covariates,
    )
    entries = parse_context(est.context, cadence, est.horizon)
    if not data.density_only and any(e != "ha" for e in entries):
        raise ConfigError(
            f"context={tuple(est.context)}: past-value periods need observed targets at "
            "forecast time, which the image path does not have; use context=('ha',)"
        )
    ctx = Context(entries, est.cell_mean, est.timezone).fit(
        y[train_t], times[train_t], cadence, naive_zone
    )
    return cov, naive_zone, tf, ctx


def build(est, data: SimpleNamespace) -> torch.nn.Module:
    """Step 2 of fit: the network, seeded (with the packaged count front's weights where they fit)."""
    from trafficrnn.models import get_model

    torch.manual_seed(est.seed)
    n_out = data.target.sizes["band"]
    channels = Channels.of(
        est,
        bands=n_out,
        context=data.ctx,
        covariates=data.cov,
        static=0 if data.static_all is None else len(data.static_all),
    )
    n_tf = data.tf.shape[1] if data.tf is not None else 0
    if n_tf != channels.vectors:  # the per-step vectors built for training
        raise AssertionError(f"{n_tf} step-vector channels built, {channels.describe()} declared")
    net = get_model(
        est.model,
        in_channels=data.images.sizes["band"],
        out_channels=n_out,
        hidden_channels=[int(h) for h in est.hidden],
        kernel_size=int(est.kernel_size),
        encoder=data.encoder,
        past_covariate_channels=channels.past,
        future_covariate_channels=channels.future,
        static_channels=channels.static,
        residual=bool(est.residual),
        feedback=bool(est.feedback),
        count_head=bool(est.count_head) and data.encoder is not None,
        linear_leads=est.horizon if est.linear_lags else 0,
        linear_lags=max(int(est.linear_lags), 1),
        quantiles=None if est.quantiles is None else [float(q) for q in est.quantiles],
        **data.stride_kw,
    )
    if data.front is not None:
        load_front(net, data.front[0])
    if data.init is not None:
        own, theirs = net.state_dict(), data.init.model_.state_dict()
        differ = [
            f"{k}: {tuple(theirs[k].shape) if k in theirs else 'absent'} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k not in theirs or theirs[k].shape != v.shape
        ] + [f"{k}: absent here" for k in theirs if k not in own]
        if differ:
            raise ConfigError(
                f"init= has another architecture than this model ({len(differ)} weights "
                f"differ, e.g. {'; '.join(differ[:3])}): give init a model with the same "
                "settings (model, hidden, kernel_size, tile_size, encoder, linear_lags, "
                "quantiles, context, covariates, static layers); its settings are "
                "init.get_params()"
            )
        net.load_state_dict(theirs)
    return net


def train(
    est,
    data: SimpleNamespace,
    net: torch.nn.Module,
    *,
    deadline: float | None,
    fit_began: float,
    checkpoint_dir: str | Path | None,
    resume: bool,
) -> SimpleNamespace:
    """Step 3 of fit: stage A (counting), then stage B (the forecaster: trained, resumed or read back)."""
    stage_a, x_win, tile_win = run_stage_a(est, data, net, deadline)
    loaders, validate = window_loaders(est, data, x_win, tile_win)
    module = forecast_module(est, data, net)
    outcome = stage_b(
        est,
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


def run_stage_a(
    est, data: SimpleNamespace, net: torch.nn.Module, deadline: float | None
) -> tuple[dict[str, Any] | None, np.ndarray, int]:
    """Stage A where counting: its summary, the windows' inputs (cached features), their tile size."""
    if not data.counting:
        return None, data.x, data.grid.tile_size
    began = time.perf_counter()
    stage_a, x_win = pretrain(
        est,
        net,
        data.images,
        data.grid,
        data.x,
        data.y,
        data.tgt_norm,
        data.split,
        data.vehicles,
        data.fine_raster,
        from_front=data.front is not None or data.init is not None,
        deadline=deadline,
    )
    stage_a["encode_seconds"] = round(time.perf_counter() - began - stage_a["seconds"], 2)
    return stage_a, x_win, 1


def window_loaders(
    est, data: SimpleNamespace, x_win: np.ndarray, tile_win: int
) -> tuple[dict[str, Any], bool]:
    """The train and val windows' loaders (seeded), and whether there are validation windows."""
    from trafficrnn.training import EpochSampler

    maps = data.ctx.series(data.y, data.times, data.train_t.stop)
    datasets = {
        k: WindowDataset(
            x_win,
            data.y,
            data.starts[k],
            est.input_steps,
            est.horizon,
            time_feats=data.tf,
            future_maps=maps,
            tile_size=tile_win,
            crop=est.crop if k == "train" else None,
            seed=est.seed,
        )
        for k in ("train", "val")
    }
    loaders = {
        k: torch.utils.data.DataLoader(
            ds,
            batch_size=est.batch_size,
            sampler=EpochSampler(ds, est.seed) if k == "train" else None,
        )
        for k, ds in datasets.items()
    }
    return loaders, len(datasets["val"]) > 0


def forecast_module(est, data: SimpleNamespace, net: torch.nn.Module):
    """The Lightning module of stage B around ``net`` (its loss, optimiser settings and inputs)."""
    from trafficrnn.training import ForecastModule

    return ForecastModule(
        net,
        horizon=est.horizon,
        lr=est.lr,
        weight_decay=est.weight_decay,
        max_epochs=est.max_epochs,
        nowcast_weight=est.nowcast_weight if data.encoder and not data.counting else 0.0,
        encoded=data.counting,
        inputs=BatchInputs(
            time_features=data.tf is not None,
            static=data.static_all,
            context_inputs=est.context_inputs,
            target_inputs=est.target_inputs,
        ),
        bptt_steps=est.bptt_steps,
    )


def stage_b(
    est,
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
    record, bands, input_bands = stage_b_record(est, data)
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resume_from, finished = (
        checkpoints.prepare(root, record, resume) if root is not None else (None, None)
    )
    if (
        finished is not None
    ):  # a resumed run that had already ended with these settings: read it back
        epochs, seconds, best_score, wall = read_back(root, finished, module)
    else:
        epochs, seconds, best_score, wall = fit_lightning(
            est,
            module,
            loaders,
            validate,
            record=record,
            root=root,
            resume_from=resume_from,
            deadline=deadline,
            fit_began=fit_began,
        )
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


def stage_b_record(est, data: SimpleNamespace) -> tuple[dict[str, Any], list[str], list[str]]:
    """The run record of ``checkpoint_dir`` (settings and data), the target and the input bands."""
    from trafficrnn.params import resolve

    times, cov = data.times, data.cov
    bands, input_bands = (
        [str(b) for b in data.target.band.values],
        [str(b) for b in data.images.band.values],
    )
    record = checkpoints.run_record(
        resolve(
            est.get_params()
        ),  # every option flat, defaults included: compared option by option
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
    return record, bands, input_bands


def read_back(root: Path, finished: dict[str, Any], module) -> tuple:
    """A finished run read back into ``module``: its epochs, seconds, best score and wall time."""
    checkpoints.load_state(root / finished["best"], module)
    module.history = list(finished.get("history") or [])
    epochs, seconds, best_score = (
        finished["epochs"],
        float(finished["train_seconds"]),
        finished["best_score"],
    )
    wall = finished.get("wall_seconds")  # the run's, as its other figures (older records: none)
    return epochs, seconds, best_score, wall


def fit_lightning(
    est,
    module,
    loaders: dict,
    validate: bool,
    *,
    record: dict[str, Any],
    root: Path | None,
    resume_from,
    deadline: float | None,
    fit_began: float,
) -> tuple:
    """Train (or resume) stage B in Lightning: its epochs, seconds, best score and wall time."""
    from trafficrnn.training import epochs_trained, quiet_lightning

    with (
        tempfile.TemporaryDirectory(prefix="trafficrnn-") as tmp,
        quiet_lightning(log.getEffectiveLevel() > logging.INFO),
    ):
        trainer, checkpoint = stage_b_trainer(
            est, root if root is not None else Path(tmp), validate, deadline
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
            None if checkpoint.best_model_score is None else float(checkpoint.best_model_score)
        )
        wall = seconds_down(
            time.perf_counter() - fit_began
        )  # all of fit: what follows takes milliseconds
        if root is not None and trainer.is_global_zero:
            checkpoints.finish(
                root,
                record,
                {
                    "epochs": epochs,
                    "train_seconds": seconds_down(seconds),
                    "best_score": best_score,
                    "best": Path(best).name if best else None,
                    "history": list(module.history),
                    "wall_seconds": wall,
                },
            )
        # under DDP every rank reads rank 0's best.ckpt: none may leave (and delete a temporary
        # checkpoint folder) before all have read it
        trainer.strategy.barrier()
    return epochs, seconds, best_score, wall


def stage_b_trainer(est, run_root: Path, validate: bool, deadline: float | None) -> tuple:
    """The Lightning Trainer of stage B and its checkpoint callback (given what time is left)."""
    from trafficrnn.training import make_trainer, resolve_precision

    max_time = est.max_time
    if deadline is not None:  # the Trainer gets what the set-up (and stage A, the encoding) left
        max_time = max((deadline - time.perf_counter()) / 60, 1e-4)
    return make_trainer(
        root=run_root,
        max_epochs=est.max_epochs,
        patience=est.patience,
        max_time=max_time,
        precision=resolve_precision(est.precision, est.accelerator),
        accelerator=est.accelerator,
        devices=est.devices,
        strategy=est.strategy,
        num_nodes=est.num_nodes,
        progress=est.progress,
        validate=validate,
        deadline=deadline,
    )


def store(est, data: SimpleNamespace, outcome: SimpleNamespace, fit_began: float) -> None:
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
        "train_seconds": seconds_down(seconds),
        # without a validation split the checkpoint monitors the training loss: no validation score then
        "best_val_loss": best_val,
        "period": [str(times[0]), str(times[-1])],
        "split": split_times,
        "split_source": data.split_choice.describe(),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    if stage_a is not None:
        summary["train_seconds"] = seconds_down(seconds + stage_a["seconds"])
        summary["counting"] = {
            "stage_a": stage_a,
            "stage_b": {
                "epochs": epochs,
                "seconds": seconds_down(seconds),
                "best_val_loss": best_val,
            },
        }
    wall = outcome.wall
    summary["wall_seconds"] = (
        seconds_down(time.perf_counter() - fit_began) if wall is None else wall
    )
    est.model_ = model
    est.state_ = FittedState(
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


def init_covariates(init, covariates) -> Covariates | None:
    """The covariate scaling of ``init`` (its weights read the values so scaled), or None without
    ``init``; checked against the table given to ``fit``.

    Raises
    ------
    ModelMismatchError
        If ``init`` reads covariates and none are given, or the other way round.
    """
    if init is None:
        return None
    check_covariates_given(init, covariates, what="init=")
    return None if init.covariates_ is None else Covariates.from_dict(init.covariates_.to_dict())


def init_model(est, init, images, target, density_only) -> TrafficForecaster | None:
    """The fitted model ``fit(init=...)`` starts from (loaded when a folder), checked against the data."""
    if init is None:
        return None
    if isinstance(init, (str, Path)):
        init = type(est).load(init)
    if not isinstance(init, type(est)):
        raise ConfigError(
            f"init= takes a fitted TrafficForecaster or the folder of a saved one, got "
            f"{type(init).__name__}"
        )
    init._check_fitted()
    if init.model != est.model:
        raise ConfigError(
            f"init= is a {init.model!r} model, this one is {est.model!r}: start a "
            f"TrafficForecaster({init.model!r}, ...) from it, or give a {est.model!r} model"
        )
    state = init.state_
    found = {
        "path": "density grids" if density_only else "images",
        "input bands": images.sizes["band"],
        "target bands": target.sizes["band"],
    }
    expected = {
        "path": "density grids" if state.density_only else "images",
        "input bands": len(state.input_bands),
        "target bands": len(state.bands),
    }
    if found != expected:
        raise ConfigError(
            f"init= was trained on {expected}, this stack has {found}: give a model trained "
            "on stacks like this one"
        )
    if not density_only:
        own, theirs = gsd_of(images), state.gsd
        if not np.allclose(own, theirs, rtol=0.05):
            raise ModelMismatchError(
                f"init= was trained on images of {theirs[0]:g} x {theirs[1]:g} pixels (GSD), "
                f"this stack has {own[0]:g} x {own[1]:g}: resample the images to its GSD "
                "(trafficrnn.estimation.checks.resample_to_gsd(images, init.gsd_)), or train "
                "without init"
            )
    return init


def count_front(images, target, encoder, count_stage):
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


def pretrain(
    est,
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
    # a share of the time left (of max_time, less the set-up) once every frame is encoded: the
    # rest trains stage B, whatever the speed of the CPU
    share = est.count_share or (FINETUNE_SHARE if from_front else PRETRAIN_SHARE)
    budget = None
    if deadline is not None:
        encoding = encode_seconds(net, x)
        budget = max(deadline - time.perf_counter() - encoding, 0.0) * share
    summary = pretrain_encoder(
        net,
        x,
        y,
        fine,
        train,
        val,
        unit=unit,
        batch_size=est.batch_size,
        lr=est.lr,
        weight_decay=est.weight_decay,
        max_epochs=est.max_epochs,
        max_seconds=budget,
        patience=est.patience,
        seed=est.seed,
        initial=from_front,
    )
    freeze_encoder(net)
    feats = encode_frames(net, x)
    net.train()
    return summary, feats
