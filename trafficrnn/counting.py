"""Point-supervised counting for the image path: fine density targets from vehicle points (or a
fine density raster), the counting loss, and the two stages of the training that uses them —
encoder pretraining on single frames (stage A) and the frozen encoder's cached cell features
(stage B).

Shapes: images ``(T, C, H, W)`` pixels, cells ``(T, C_t, rows, cols)`` with ``H = rows * s``,
fine density ``(T, C_t, H / u, W / u)`` on sub-cells of ``u`` pixels (``u`` divides ``s``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from affine import Affine

from trafficrnn.errors import ConfigError, GridError, VectorError
from trafficrnn.grid import Grid

log = logging.getLogger(__name__)

#: cumulative stride (px) of the encoder stage the density map is read from: 4 m sub-cells at 1 m
COUNT_STRIDE_PX = 4
#: normalisation of the tile encoder trained by counting supervision
COUNT_NORM = "batch"
#: Gaussian smoothing of the point counts, in sub-cells
SIGMA = 0.5
#: share of ``max_time`` that the encoder pretraining may use, its validations included, unless
#: ``trainer_kwargs["count_share"]`` sets it: from scratch, and fine-tuning the packaged count front
#: to a new city's points. The share is of what the set-up left less the estimated time of encoding
#: every frame (:func:`encode_seconds`), so that stage B, a few epochs of a pretrained forecaster
#: when the run starts from one, keeps its part on a slower CPU too
PRETRAIN_SHARE, FINETUNE_SHARE = 0.5, 0.75
#: the packaged count front: stem, stages up to the count stage and count head of an encoder that
#: learned to count on synthetic cities at 1 m (``benchmarks/count_front.py`` writes it)
FRONT = Path(__file__).parent / "weights" / "count_front_1m.safetensors"
#: relative GSD difference up to which the packaged front is used
FRONT_GSD_TOLERANCE = 0.05
#: side, in pixels, of the random crops of the pretraining (at least one cell): many small crops
#: give many more optimiser steps for the same compute than whole frames do
CROP_PX = 128
#: weight of the per-cell count-consistency term and of the feature probe
CELL_WEIGHT, PROBE_WEIGHT = 1.0, 0.5
#: every this many training frames, one is held out of stage A's training for its validation
HOLDOUT_EVERY = 7


def fine_grid(images: xr.DataArray, sub: int) -> Grid:
    """The grid of ``sub`` x ``sub`` pixel sub-cells of ``images`` (same CRS and origin)."""
    transform = images.rio.transform() * Affine.scale(sub)
    return Grid(
        images.rio.crs, transform, (images.sizes["y"] // sub, images.sizes["x"] // sub), sub
    )


def check_vehicles(points: Any, grid: Grid, what: str = "vehicles", time_col: str = "time") -> None:
    """Refuse a vehicles layer that cannot supervise counting on ``grid``.

    Parameters
    ----------
    points : geopandas.GeoDataFrame
        Vehicle points with a ``time_col`` column.
    grid : Grid
        The cell grid of the images.
    what : str
        How to name the layer in messages (a file name, or ``"vehicles"``).

    Raises
    ------
    VectorError
        Not a GeoDataFrame, no CRS, no ``time_col`` column, or no point inside the image extent.
    """
    import geopandas as gpd

    if not isinstance(points, gpd.GeoDataFrame):
        raise VectorError(
            f"{what} must be a GeoDataFrame of points (read_vectors(path)), got {type(points).__name__}"
        )
    if points.crs is None:
        raise VectorError(
            f"{what} has no CRS: set it with gdf.set_crs(...) (the images are {grid.crs})"
        )
    if time_col not in points.columns:
        raise VectorError(
            f"{what} has no {time_col!r} column (columns: {', '.join(map(str, points.columns))}): "
            f"expected the timestamp of the frame each vehicle was seen in; add a {time_col!r} column"
        )
    left, bottom, right, top = grid.bounds
    pts = points.to_crs(grid.crs) if points.crs != grid.crs else points
    x, y = pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy()
    inside = (x >= left) & (x < right) & (y > bottom) & (y <= top)
    if not inside.any():
        found = pts.total_bounds.round(1).tolist() if len(pts) else "none (empty layer)"
        raise VectorError(
            f"{what}: none of its {len(points)} point(s) lies inside the image extent "
            f"{[round(v, 1) for v in (left, bottom, right, top)]} ({grid.crs}); the points span "
            f"{found}: check the layer's CRS, or that it covers this scene"
        )


def count_vehicles(
    points: Any, grid: Grid, times: Any, *, what: str = "vehicles", freq: Any = None
) -> xr.DataArray:
    """Vehicles per cell of ``grid`` and frame of ``times``, once :func:`check_vehicles` has
    accepted the layer (``freq``: as :func:`~trafficrnn.io.rasterize_points`).

    Raises
    ------
    VectorError
        As :func:`check_vehicles`.
    """
    from trafficrnn.io import rasterize_points

    check_vehicles(points, grid, what)
    return rasterize_points(points, grid, times=times, freq=freq)


def fine_target(
    images: xr.DataArray,
    grid: Grid,
    unit: int,
    *,
    vehicles: Any = None,
    raster: xr.DataArray | None = None,
) -> tuple[np.ndarray, int]:
    """Counts per sub-cell of every frame, from points or from a fine density raster.

    Parameters
    ----------
    images : xarray.DataArray
        ``(time, band, y, x)``, cropped to ``grid``.
    grid : Grid
        The cell grid.
    unit : int
        Sub-cell side in pixels of the model's density map.
    vehicles : geopandas.GeoDataFrame, optional
        Points with a ``time`` column, rasterised on sub-cells of ``unit`` pixels.
    raster : xarray.DataArray, optional
        ``(time, band, y, x)`` counts on sub-cells of ``d`` pixels (``d`` divides the tile size),
        already aligned to the frames of ``images``.

    Returns
    -------
    counts : numpy.ndarray, shape (T, C_t, H / u, W / u)
        float32, NaN where unknown.
    u : int
        The supervised sub-cell side in pixels: ``unit``, or ``d`` for a coarser raster.
    """
    from trafficrnn.io import rasterize_points

    if vehicles is not None:
        da = rasterize_points(vehicles, fine_grid(images, unit), times=images.time.values)
        return np.asarray(da.values, dtype="float32"), unit
    d = int(round(images.sizes["y"] / raster.sizes["y"]))
    values = np.asarray(raster.values, dtype="float32")
    if d >= unit:
        return values, d
    k = unit // d
    t, c, h, w = values.shape
    return values.reshape(t, c, h // k, k, w // k, k).sum(axis=(3, 5)), unit


def split_target(
    target: xr.DataArray, images: xr.DataArray, grid: Grid
) -> tuple[xr.DataArray, xr.DataArray | None]:
    """A cell target as is; a fine density raster (the image grid scaled by a divisor ``d`` of the
    tile size) as its sum per cell, and the raster itself.

    Raises
    ------
    GridError
        If the target is neither on the cell grid nor on such a sub-cell grid.
    """
    rows = target.sizes["y"]
    if rows <= grid.shape[0]:  # the cell grid, or another one (refused by the alignment check)
        return target, None
    d = images.sizes["y"] // rows if rows else 0
    fine = Grid.from_dataarray(target, tile_size=max(d, 1))
    if d < 1 or d >= grid.tile_size or grid.tile_size % d or not fine.matches(fine_grid(images, d)):
        raise GridError(
            f"target of {rows} x {target.sizes['x']} on {fine.transform[:6]} does not match the image "
            f"grid {grid} (cells) nor on a sub-cell grid of the images (pixel size times a divisor of "
            f"tile_size={grid.tile_size}): rasterise it on Grid.from_image(images, {grid.tile_size})"
        )
    s = grid.tile_size // d
    t, c, h, w = target.shape
    values = np.asarray(target.values, dtype="float32")[
        :, :, : grid.shape[0] * s, : grid.shape[1] * s
    ]
    values = values.reshape(t, c, grid.shape[0], s, grid.shape[1], s).sum(axis=(3, 5))
    cells = grid.attach(
        xr.DataArray(
            values,
            dims=target.dims,
            coords={"time": target.time.values, "band": target.band.values},
        )
    )
    cells.attrs.update(target.attrs)
    return cells, target


def smooth(counts: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Gaussian smoothing that keeps the total of each map: every sub-cell's mass is spread by a
    kernel truncated to the map and renormalised there.

    Parameters
    ----------
    counts : Tensor, shape (N, C, h, w)
        Finite counts.

    Returns
    -------
    Tensor, shape (N, C, h, w)
    """
    r = max(1, math.ceil(3 * sigma))
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=counts.dtype) ** 2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :]) / g.sum() ** 2
    n, c, h, w = counts.shape
    k = kernel[None, None]
    flat = counts.reshape(n * c, 1, h, w)
    reach = F.conv2d(torch.ones(1, 1, h, w, dtype=counts.dtype), k, padding=r)  # kernel mass inside
    return F.conv2d(flat / reach, k, padding=r).reshape(n, c, h, w)


def counting_loss(
    density: torch.Tensor,
    fine: torch.Tensor,
    fine_ok: torch.Tensor,
    counts: torch.Tensor,
    cells: torch.Tensor,
    cells_ok: torch.Tensor,
    pool: int = 1,
) -> torch.Tensor:
    """Masked density MSE (scaled to cell units) plus the per-cell count-consistency MSE.

    Parameters
    ----------
    density : Tensor, shape (N, C, h*f, w*f)
        Predicted density (``f`` sub-cells per cell side).
    fine, fine_ok : Tensor, shape (N, C, h*f/pool, w*f/pool)
        Smoothed target density and where it carries weight.
    counts, cells, cells_ok : Tensor, shape (N, C, h, w)
        Predicted counts (the density summed per cell), the true counts, where they carry weight.
    pool : int
        Sub-cells of ``density`` per side of a target sub-cell.

    Returns
    -------
    Tensor, scalar
    """
    if pool > 1:
        density = F.avg_pool2d(density, pool) * pool * pool
    scale = (density.shape[-1] / counts.shape[-1]) ** 2  # sub-cells per cell
    m = fine_ok.to(density.dtype)
    dense = ((density - fine) ** 2 * m).sum() / m.sum().clamp_min(1.0) * scale
    mc = cells_ok.to(density.dtype)
    cell = ((counts - cells) ** 2 * mc).sum() / mc.sum().clamp_min(1.0)
    return dense + CELL_WEIGHT * cell


def prepare_fine(fine: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalise (divide by the target scale of each band) and smooth a fine count stack; NaN
    frames stay NaN. ``(T, C, h, w)`` -> same shape, float32."""
    known = np.isfinite(fine)
    values = torch.from_numpy(
        np.where(known, fine, 0).astype("float32") / scale.reshape(1, -1, 1, 1)
    )
    out = torch.cat([smooth(v) for v in values.split(64)]).numpy()
    return np.where(known, out, np.nan).astype("float32")


class _Frames:
    """Crops of frames (images, cell targets, fine targets) as tensors with their masks."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, fine: np.ndarray, tile: int, unit: int
    ) -> None:
        self.x, self.y, self.fine, self.tile, self.unit = x, y, fine, tile, unit

    def get(
        self,
        frames,
        r0: int = 0,
        c0: int = 0,
        rows: int | None = None,
        cols: int | None = None,
        turn: int = 0,
        flip: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        rows = self.y.shape[2] - r0 if rows is None else rows
        cols = self.y.shape[3] - c0 if cols is None else cols
        t, k = self.tile, self.tile // self.unit
        imgs = torch.from_numpy(
            np.ascontiguousarray(
                self.x[frames, :, r0 * t : (r0 + rows) * t, c0 * t : (c0 + cols) * t]
            )
        )
        cells = torch.from_numpy(
            np.ascontiguousarray(self.y[frames, :, r0 : r0 + rows, c0 : c0 + cols])
        )
        fine = torch.from_numpy(
            np.ascontiguousarray(
                self.fine[frames, :, r0 * k : (r0 + rows) * k, c0 * k : (c0 + cols) * k]
            )
        )
        out = [imgs, cells, fine]
        if turn:
            out = [torch.rot90(v, turn, dims=(-2, -1)) for v in out]
        if flip:
            out = [torch.flip(v, dims=(-1,)) for v in out]
        imgs, cells, fine = out
        valid = torch.isfinite(imgs).all(1, keepdim=True).float()
        cells_ok = (F.avg_pool2d(valid, t) > 0.999) & torch.isfinite(cells)
        fine_ok = (F.avg_pool2d(valid, self.unit) > 0.999) & torch.isfinite(fine)
        return imgs, torch.nan_to_num(cells), cells_ok, torch.nan_to_num(fine), fine_ok


def _frame_loss(net, probe, batch, pool: int) -> torch.Tensor:
    imgs, cells, cells_ok, fine, fine_ok = batch
    c = cells.shape[1]
    dens, feats = net.density(imgs[:, None])
    dens, feats = dens[:, 0], feats[:, 0]
    loss = counting_loss(dens, fine, fine_ok, feats[:, -c:], cells, cells_ok, pool)
    if probe is not None:
        guess = F.softplus(probe(feats[:, :-c]))
        m = cells_ok.to(guess.dtype)
        loss = loss + PROBE_WEIGHT * ((guess - cells) ** 2 * m).sum() / m.sum().clamp_min(1.0)
    return loss


def _snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s weights and buffers (the best ones so far, restored at the end)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _validate(net, frames: _Frames, idx: np.ndarray, pool: int, batch: int) -> float | None:
    if len(idx) == 0:
        return None
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(idx), batch):
            chunk = idx[i : i + batch]
            total += float(_frame_loss(net, None, frames.get(chunk), pool)) * len(chunk)
    return total / len(idx)


class _Pretraining:
    """One run of stage A: its frames, crops, optimiser, random draws, timings and best weights."""

    def __init__(
        self,
        net,
        x,
        y,
        fine,
        train,
        val,
        *,
        unit,
        batch_size,
        lr,
        weight_decay,
        max_epochs,
        max_seconds,
        seed,
        initial,
        started,
    ) -> None:
        """Set up the crops, the probe (drawn from the seeded torch RNG) and the optimiser."""
        tile = net.tile_encoder.tile_size
        self.net, self.train, self.val = net, train, val
        self.initial, self.started = initial, started
        self.batch_size, self.lr = batch_size, lr
        self.max_epochs, self.max_seconds = max_epochs, max_seconds
        self.pool = unit // (tile // net.count_factor)
        self.frames = _Frames(x, y, fine, tile, unit)
        self.rows, self.cols = y.shape[2:]
        crop = max(1, CROP_PX // tile)
        self.cr, self.cc = min(crop, self.rows), min(crop, self.cols)
        self.per_frame = max(1, (self.rows * self.cols) // (self.cr * self.cc))
        c = y.shape[1]
        self.probe = torch.nn.Conv2d(net.feature_channels - c, c, 1)
        params = (
            list(net.tile_encoder.parameters())
            + list(net.nowcast_head.parameters())
            + list(self.probe.parameters())
        )
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.rng = np.random.default_rng(seed)
        self.steps = math.ceil(len(train) * self.per_frame / batch_size)
        self.best, self.best_state, self.bad, self.spent = None, None, 0, 0.0
        self.step_seconds, self.val_seconds, self.trained = [], None, 0

    def no_time(self) -> bool:
        """The next step and the validation after it would end past ``max_seconds`` (estimates).
        From scratch at least one step trains; a front may keep its weights untouched."""
        if self.max_seconds is None or (
            self.trained == 0 and (not self.initial or self.val_seconds is None)
        ):
            return False
        if self.trained:
            recent = sorted(self.step_seconds[-5:])
            step = recent[len(recent) // 2]
        else:  # a training step of crops: about 3 times their forward pass, timed on the validation frames
            step = 3 * self.val_seconds * self.batch_size / max(1, len(self.val) * self.per_frame)
        # before a validation is timed: half a step per crop of the whole validation frames
        check = (
            self.val_seconds
            if self.val_seconds is not None
            else 0.5 * step * self.per_frame * math.ceil(len(self.val) / self.batch_size)
        )
        return time.perf_counter() - self.started + step + 1.2 * check > self.max_seconds

    def validate(self) -> float | None:
        """The counting loss of the whole validation frames (timed), the net back in training mode."""
        self.net.eval()
        began = time.perf_counter()
        score = _validate(self.net, self.frames, self.val, self.pool, self.batch_size)
        self.val_seconds = time.perf_counter() - began
        self.net.train()
        return score

    def score_start(self) -> None:
        """Score the starting weights (a packaged front) and keep them as the best so far."""
        self.best = self.validate()
        if self.best is not None:
            self.best_state = _snapshot(self.net)
        log.info("counting pretraining start: val count loss %s", self.best)

    def step(self, epoch: int, i: int, chunk: np.ndarray) -> None:
        """One optimiser step on a random crop of the frames ``chunk`` (cosine learning rate)."""
        began = time.perf_counter()
        progress = max(
            (epoch - 1 + i / self.steps) / self.max_epochs,
            self.spent / self.max_seconds if self.max_seconds else 0.0,
        )
        for group in self.opt.param_groups:
            group["lr"] = self.lr * (
                0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            )
        rng, cr, cc = self.rng, self.cr, self.cc
        r0, c0 = int(rng.integers(0, self.rows - cr + 1)), int(rng.integers(0, self.cols - cc + 1))
        turn = int(rng.integers(0, 4)) if cr == cc else 2 * int(rng.integers(0, 2))
        batch = self.frames.get(chunk, r0, c0, cr, cc, turn, bool(rng.integers(0, 2)))
        loss = _frame_loss(self.net, self.probe, batch, self.pool)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_seconds.append(time.perf_counter() - began)
        self.trained += 1
        self.spent = time.perf_counter() - self.started

    def epoch(self, epoch: int) -> int:
        """Train one epoch of crops (cut where time runs out); returns the steps it made."""
        order = self.rng.permutation(np.repeat(self.train, self.per_frame))
        done = 0
        for i in range(self.steps):
            chunk = np.sort(order[i * self.batch_size : (i + 1) * self.batch_size])
            if len(chunk) == 0 or self.no_time():
                break
            self.step(epoch, i, chunk)
            done += 1
            if self.max_seconds is not None and self.spent > self.max_seconds:
                break
        return done

    def keep_best(self, score: float | None) -> None:
        """Keep the weights of a better validation score; count the epochs without one."""
        if score is not None and (self.best is None or score < self.best):
            self.best, self.bad = score, 0
            self.best_state = _snapshot(self.net)
        elif score is not None:
            self.bad += 1


def pretrain_encoder(
    net: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    fine: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    unit: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    max_epochs: int,
    max_seconds: float | None,
    patience: int,
    seed: int,
    initial: bool = False,
) -> dict[str, Any]:
    """Stage A: train the tile encoder and its count head on single frames with the counting loss.

    Random crops of about ``CROP_PX`` x ``CROP_PX`` pixels (whole cells) of the training frames, flipped and
    turned by multiples of 90 degrees; an epoch draws as many crops as cover each frame once. A
    temporary 1x1 probe from the cell features to the counts trains the layers after the count
    stage too. Early stopping on the counting loss of the whole validation frames; the best
    weights are restored into ``net``.

    Parameters
    ----------
    net : EncoderForecaster
        With an image encoder and ``count_head``; updated in place.
    x : numpy.ndarray, shape (T, C, H, W)
        Normalised images, NaN where invalid.
    y : numpy.ndarray, shape (T, C_t, rows, cols)
        Normalised cell counts, NaN where unknown.
    fine : numpy.ndarray, shape (T, C_t, H / unit, W / unit)
        Normalised, smoothed sub-cell counts (see :func:`prepare_fine`).
    train, val : numpy.ndarray of int
        Frame indices of the two splits.
    unit : int
        Pixels per side of a ``fine`` sub-cell (a multiple of the density map's).
    max_seconds : float, optional
        Wall-time limit of the stage, its validations included: no step starts that would leave no
        time for the validation after it (from scratch at least one step trains; with ``initial``
        the starting weights may stay untouched).
    initial : bool
        Score the starting weights on the validation frames first, and keep them unless an
        epoch beats them (``net`` starts from a trained count front).

    Returns
    -------
    dict
        ``epochs`` (a fraction when the time limit cut the last one), ``seconds``,
        ``best_val_count_loss`` (None without validation frames), ``sub_cell_px``.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    run = _Pretraining(
        net,
        x,
        y,
        fine,
        train,
        val,
        unit=unit,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        max_epochs=max_epochs,
        max_seconds=max_seconds,
        seed=seed,
        initial=initial,
        started=started,
    )
    if initial:  # a starting point worth keeping (a packaged front): score it before training
        run.score_start()
    net.train()
    epoch, done, steps = 0, 0, run.steps
    for epoch in range(1, max_epochs + 1):
        done = run.epoch(epoch)
        if done == 0:  # cut before its first step: nothing new to validate
            break
        score = run.validate()
        log.info("counting pretraining epoch %d: val count loss %s", epoch, score)
        run.keep_best(score)
        if (patience and run.bad >= patience) or done < steps or run.no_time():
            break
    if run.best_state is not None:
        net.load_state_dict(run.best_state)
    net.eval()
    from trafficrnn.training import epoch_fraction

    epochs = (
        epoch_fraction((epoch - 1) * steps + done, steps) if steps else epoch
    )  # the last one cut: a fraction
    return {
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 2),
        "best_val_count_loss": run.best,
        "sub_cell_px": int(unit),
        "from_front": bool(initial),
    }


def encode_seconds(net: torch.nn.Module, x: np.ndarray, sample: int = 4) -> float:
    """The wall seconds :func:`encode_frames` would take on all of ``x``, from the time it takes on
    its first ``sample`` frames (the time of a first call in the process included: an
    overestimate rather than less)."""
    k = min(sample, len(x))
    if k == 0:
        return 0.0
    began = time.perf_counter()
    encode_frames(net, x[:k])
    return (time.perf_counter() - began) * len(x) / k


def encode_frames(net: torch.nn.Module, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """Stage B: the frozen encoder's per-cell features of every frame, computed once.

    Parameters
    ----------
    x : numpy.ndarray, shape (T, C, H, W)
        Normalised images.

    Returns
    -------
    numpy.ndarray, shape (T, feature_channels, rows, cols)
        float32, what ``net.forward(..., encoded=True)`` reads.
    """
    out = []
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(
                net.encode(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))[None])[
                    0
                ].numpy()
            )
    return np.concatenate(out).astype("float32", copy=False)


def freeze_encoder(net: torch.nn.Module) -> None:
    """Stop the gradient of the tile encoder and its count head (stage B)."""
    for module in (net.tile_encoder, net.nowcast_head):
        for p in module.parameters():
            p.requires_grad_(False)


def check_counting(est) -> None:
    """Settings that counting supervision cannot use.

    Raises
    ------
    ConfigError
        ``count_head=False`` or ``log1p=True`` (the counts must add up per cell).
    """
    if not est.count_head:
        raise ConfigError(
            "counting supervision (vehicles= or a fine density target, counting=True) trains the "
            "count head: set count_head=True, or counting=False for the forecast loss only"
        )
    if est.log1p:
        raise ConfigError(
            "counting supervision needs counts that add up per cell: log1p=True breaks that; "
            "use log1p=False, or counting=False"
        )


def front_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The count front of ``net``: the tile encoder's layers up to its count stage and the count
    head (what counting needs), as a state dict."""
    end = net.tile_encoder._stages[net.count_stage][0]
    keep = {f"tile_encoder.body.{i}." for i in range(end)} | {"nowcast_head."}
    return {
        k: v.detach().clone()
        for k, v in net.state_dict().items()
        if any(k.startswith(p) for p in keep)
    }


def _stage_px(strides: list[int], stage: int) -> int:
    """Cumulative stride, in pixels, of the output of encoder stage ``stage``."""
    return math.prod(strides[: stage + 1])


def save_front(net: torch.nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Write the count front of ``net`` with ``meta`` (JSON-able: ``gsd``, ``target_scale``, ...)."""
    from safetensors.torch import save_file

    from trafficrnn.io.atomic import atomic_output

    meta = {
        **meta,
        "encoder": net.tile_encoder.config,
        "count_stage_px": _stage_px(net.tile_encoder.strides, net.count_stage),
        "density_per_cell": bool(net.density_per_cell),
    }
    with atomic_output(path, overwrite=True) as tmp:
        save_file(front_state(net), str(tmp), metadata={"trafficrnn": json.dumps(meta)})


def read_front(path: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Weights and metadata of a count front (default: the packaged :data:`FRONT`), or ``None``
    without one at ``path``.

    Raises
    ------
    ModelFileError
        If the file is not a readable safetensors file with trafficrnn metadata.
    """
    from safetensors import SafetensorError, safe_open

    from trafficrnn.errors import ModelFileError

    path = Path(FRONT if path is None else path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["trafficrnn"])
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ModelFileError(
            f"{path} is not a count front (a safetensors file with trafficrnn metadata): {exc}; "
            "reinstall trafficrnn, or rebuild it with benchmarks/count_front.py"
        ) from None
    return state, meta


def front_fits(
    meta: dict[str, Any],
    encoder: dict[str, Any],
    count_stage: int,
    bands: int,
    targets: int,
    gsd: float | None,
) -> bool:
    """Whether a count front of ``meta`` can initialise an encoder of config ``encoder`` (the
    :class:`TileEncoder` arguments) counting at stage ``count_stage`` on images of ``bands`` bands
    and ``gsd`` metres, for ``targets`` target bands: same layers up to the count stage, GSD within
    ``FRONT_GSD_TOLERANCE``."""
    enc = meta["encoder"]
    same = all(
        enc.get(k, d) == encoder.get(k, d)
        for k, d in (
            ("width", 32),
            ("depth", 1),
            ("stem", True),
            ("norm", "channel"),
            ("max_width", 256),
        )
    )
    stride = _stage_px(encoder.get("strides") or [], count_stage)
    return (
        same
        and bands == enc["in_channels"]
        and targets == 1
        and meta["count_stage_px"] == stride
        and meta.get("density_per_cell", False)  # as the counting models are built
        and gsd is not None
        and abs(gsd - meta["gsd"]) <= FRONT_GSD_TOLERANCE * meta["gsd"]
    )


def use_front_scaling(norm: Any, meta: dict[str, Any], tolerance: float = 3.0) -> bool:
    """Give a fitted ``standard`` input :class:`~trafficrnn.windows.Normalizer` the count front's
    per-band mean and scale, where they are alike (each band's std within a factor ``tolerance`` of
    the front's, and its mean within ``tolerance`` front stds): the front reads pixels on the scale
    it was trained with, whichever hours and places a stack holds. Returns whether it did; other
    radiometry (16-bit, reflectance) is left as it is, and the front is not used."""
    mean, scale = np.asarray(meta["input_mean"]), np.asarray(meta["input_scale"])
    own_mean, own_scale = np.ravel(norm.mean_), np.ravel(norm.scale_)
    if own_mean.shape != mean.shape:
        return False
    if not (
        np.all(own_scale <= tolerance * scale)
        and np.all(own_scale >= scale / tolerance)
        and np.all(np.abs(own_mean - mean) <= tolerance * scale)
    ):
        return False
    norm.mean_ = mean.reshape(np.shape(norm.mean_)).astype(np.asarray(norm.mean_).dtype)
    norm.scale_ = scale.reshape(np.shape(norm.scale_)).astype(np.asarray(norm.scale_).dtype)
    return True


def load_front(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a count front's weights into ``net`` (checked by :func:`front_fits`)."""
    own = net.state_dict()
    for key, value in state.items():
        own[key].copy_(value)


def split_indices(split: dict[str, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices stage A trains and validates on: with a validation part, the training part less
    every ``HOLDOUT_EVERY``-th frame, and those frames with the validation part. Counting is judged
    frame by frame, so its validation frames spread over the training period's hours and days, not
    only over the hours the chronological validation part covers (a night of sparse traffic, say).
    Without a validation part, every training frame and none."""
    train = np.arange(split["train"].start or 0, split["train"].stop)
    if split["val"].stop <= (split["val"].start or 0):
        return train, np.zeros(0, dtype=np.int64)
    val = np.arange(split["val"].start or 0, split["val"].stop)
    held = train[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY]
    return np.setdiff1d(train, held), np.concatenate([held, val])


__all__ = [
    "COUNT_STRIDE_PX",
    "COUNT_NORM",
    "FRONT",
    "front_state",
    "save_front",
    "read_front",
    "front_fits",
    "use_front_scaling",
    "load_front",
    "fine_grid",
    "check_vehicles",
    "count_vehicles",
    "fine_target",
    "split_target",
    "smooth",
    "counting_loss",
    "prepare_fine",
    "pretrain_encoder",
    "encode_frames",
    "encode_seconds",
    "freeze_encoder",
]
