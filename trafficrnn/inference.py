"""Large-area forecasts in bounded memory: spatial windows with a halo, blended and written window by
window into a Cloud-Optimised GeoTIFF, in this process or as tasks on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
import xarray as xr
from distributed import WorkerPlugin

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, SchedulerError
from trafficrnn.estimation.inputs import check_covariates_given, static_for
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.io.export import write_band_meta
from trafficrnn.io.qml import check_sidecar, class_breaks, raster_qml, write_qml
from trafficrnn.tiling import (
    BLENDS,
    Window,
    global_layer_names,
    networks,
    plan_windows,
    receptive_field,
    receptive_halo,
)

__all__ = [
    "forecast_large",
    "receptive_halo",
    "receptive_field",
    "connect",
    "plan_windows",
    "SchedulerError",
    "BLENDS",
]

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}  # models shipped to this (worker) process by _ModelPlugin, by token

#: values (the first band at every lead) the COG's QGIS style takes its class breaks from exactly,
#: as ``to_geotiff`` does; a larger area takes them from an even sample of this many (~160 MB peak)
STYLE_VALUES = 1 << 23


# -- dask -----------------------------------------------------------------------------------
def connect(scheduler: str | None = None, timeout: float = 10.0, **local: Any):
    """A ``dask.distributed`` Client: on ``scheduler`` (e.g. ``"tcp://host:8786"``), or on a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        Scheduler address; ``None`` starts a ``LocalCluster(**local)`` owned by the client
        (closing the client closes it; scripts that start worker processes need an
        ``if __name__ == "__main__":`` guard).
    timeout : float
        Seconds to wait for the scheduler.

    Returns
    -------
    distributed.Client

    Raises
    ------
    SchedulerError
        If the scheduler does not answer within ``timeout`` seconds or the address is invalid.
    """
    from distributed import Client

    if scheduler is None:
        # the nanny writes OMP_NUM_THREADS=1 (and others) into this process's os.environ for its
        # workers; put the caller's environment back so later subprocesses are not throttled
        saved = dict(os.environ)
        try:
            return Client(**local)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise SchedulerError(
            f"no dask scheduler answered at {scheduler!r} within {timeout:g} s ({exc}); start "
            "one with `dask scheduler` and pass its address, e.g. tcp://host:8786, or "
            "leave the address out to run on this machine"
        ) from None


class _ModelPlugin(WorkerPlugin):
    """Ships the model to each worker once (also to workers that join or restart after a crash)."""

    def __init__(self, token: str, model: Any) -> None:
        self.token, self.model = token, model

    def setup(self, worker: Any) -> None:
        _MODELS[self.token] = self.model
        gc.collect()
        gc.freeze()  # the worker's own objects live as long as it does: keep per-window collections cheap

    def teardown(self, worker: Any) -> None:
        _MODELS.pop(self.token, None)


class _Box:
    """Carries a lazy window to a worker without dask treating it as a collection of the graph."""

    def __init__(self, data: Any) -> None:
        self.data = data


def _predict(model: Any, images: Any, extra: dict, horizon: int) -> xr.DataArray:
    """``model.predict`` on one window; ``extra``: its static layers and the covariate table."""
    images = images.compute(scheduler="synchronous")  # reads this window only
    forecast = model.predict(images, horizon=horizon, **extra)
    # rioxarray's accessor and the array it caches on form reference cycles: without a collection
    # here every window's input frames would stay allocated until Python's cyclic GC happens to
    # run, and the peak memory would grow with the number of windows instead of staying flat
    # (cheap: the long-lived objects of the process are frozen out of the collection, see _frozen_gc)
    del images
    gc.collect()
    return forecast


@contextlib.contextmanager
def _frozen_gc():
    """Move every object alive now out of the cyclic GC's reach while the block runs, so that the
    collection after each window scans only that window's objects (a full collection in a
    process with torch, xarray and dask loaded takes ~0.25 s; a frozen one, microseconds)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _predict_remote(token: str, box: _Box, extra: dict, horizon: int) -> xr.DataArray:
    return _predict(_MODELS[token], box.data, extra, horizon)


# -- main entry -----------------------------------------------------------------------------
def _check_size(name: str, value: Any, area: tuple[int, int], *, zero: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < (0 if zero else 1)
    ):
        raise ConfigError(
            f"{name}={value!r} is invalid: expected a {'non-negative' if zero else 'positive'} "
            "integer number of grid cells"
        )
    if value > max(area):
        raise GridError(
            f"{name}={value} cells is larger than the area of {area[0]} × {area[1]} cells: pass "
            f"{name} <= {max(area)}, or use model.predict(...) for an area this small"
        )
    return int(value)


def _default_window(model: Any, frames: int, halo: int, budget: float = 256e6) -> int:
    """Core size (cells) whose float32 window of input frames stays under ``budget`` bytes."""
    tile, bands = model.grid_.tile_size, len(model.input_bands_)
    side = (
        int(math.sqrt(budget / (4 * frames * bands * 4))) // tile
    )  # x4: normalised copies, features
    return max(8, side - 2 * halo, 2 * halo)


def forecast_large(
    model: Any,
    source: Any,
    out_path: str | Path,
    *,
    window: int | None = None,
    halo: int | None = None,
    chunks: Any = None,
    client: Any = None,
    static: xr.DataArray | None = None,
    horizon: int | None = None,
    overwrite: bool = False,
    blend: str = "cosine",
    retries: int = 2,
    covariates: Any = None,
    style: bool = True,
) -> Path:
    """Forecast a large area window by window and write it as a COG or a Zarr store, never holding
    the whole area.

    The area is split into cores of at most ``window`` × ``window`` cells. Each task reads its
    core plus ``halo`` cells on each side (at the area edge the read window slides inward, so
    every task reads the same extent and peak memory depends on the window alone), only the last
    ``input_steps`` frames, runs ``model.predict`` on it, and the client writes the weighted
    forecast into a tiled GeoTIFF in the target folder, converted block by block to a COG (or a
    CF Zarr store, as :func:`~trafficrnn.io.to_zarr` writes it) at the end and renamed into
    place (a failed run leaves no file).

    Halo rule: a cell's forecast depends on the cells within ``r = receptive_halo(model)``
    (see there: ``p · (T_in + L · H)`` for kernel ``2p + 1``, ``L`` layers, feedback), plus the
    tile encoder's reach on the image path. With ``halo >= r`` a core cell never sees the zero
    padding of its window's inner edges (at the real area edge window and area edges coincide),
    so cutting the halo off gives the whole-area result to float tolerance and cores are not
    blended. With ``halo < r`` the result is approximate: neighbouring windows are cross-faded
    with a ``blend`` ramp over their overlap so that no seam shows, and a warning says so.
    Models with layers that pool statistics over the whole image (a GroupNorm, say; the tile
    encoder's norms act per pixel, BatchNorm at inference included) can never be tiled exactly; they are blended and
    warned about too. Memory: every window reads the same extent, and its frames are freed
    (collected) before the next window is read, so peak memory is set by ``window`` alone.

    Parameters
    ----------
    model : TrafficForecaster
        Fitted, without ``cell_mean`` or the ``"ha"`` context (maps tied to the training grid).
    source : xarray.DataArray or path, glob, list of paths
        Stack ``(time, band, y, x)`` with the model's bands, CRS, resolution and cadence; a path
        is opened lazily with ``read_stack(source, chunks=chunks)``.
    out_path : path-like
        ``.tif`` output: ``(lead × band)`` bands, band descriptions and tags as ``to_geotiff``;
        or ``.zarr``: the layout of ``to_zarr``, chunks of 256 × 256 cells per lead.
    window : int, optional
        Core side in cells; default: what keeps a window's input frames near 256 MB.
    halo : int, optional
        Cells read around each core; default ``receptive_halo(model)`` (exact).
    chunks : dict or int, optional
        dask chunks for a path ``source`` (default 512 px): windows read only the chunks they touch.
    client : distributed.Client, optional
        Run each window as a task on this cluster (see :func:`connect`); the model is shipped
        once per worker by a worker plugin, tasks are retried ``retries`` times.
    static : xarray.DataArray, optional
        ``(band, y, x)`` static layers on the area's grid, as in ``predict`` (left out: the layers
        the model kept from ``fit``, when the area is its training grid).
    covariates : pandas.DataFrame, optional
        The covariate table of a model fitted with one, as in ``predict``.
    horizon : int, optional
        Leads to forecast (default: the model's).
    overwrite : bool
        Replace an existing ``out_path``.
    blend : {"cosine", "linear", "none"}
        Ramp of the cross-fade when ``halo < r`` (``"none"``: hard cut at core boundaries).
    retries : int
        Retries of a failed task on a cluster (a dead worker's tasks are rescheduled by dask).
    style : bool
        Also write the QGIS style ``<name>.qml`` beside a ``.tif`` (not a ``.zarr``), as
        ``to_geotiff`` does: band 1 in the colour classes of
        :func:`~trafficrnn.io.qml.class_breaks` of the first band at every lead, read back from
        the finished COG block by block (from an even sample of :data:`STYLE_VALUES` values
        when there are more). It obeys ``overwrite`` as the COG does (checked before any work),
        and neither file is replaced unless both are written.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    GridError
        ``window`` or ``halo`` larger than the area.
    ConfigError
        Invalid ``window``, ``halo``, ``blend`` or ``horizon``.
    ModelMismatchError, NotFittedError
        A stack the model cannot forecast (bands, CRS, resolution, cadence, too few frames), or
        a model tied to its training grid.
    OutputExistsError, ExportError
        ``out_path`` (or, with ``style``, its ``.qml``) exists without ``overwrite``, wrong
        suffix, missing folder.
    """
    out_path, zarr_out, qml_path = _check_request(
        out_path, overwrite=overwrite, style=style, blend=blend
    )
    images, grid, horizon = _checked_stack(model, source, chunks, horizon)
    plan = _plan_tiling(model, images, grid, horizon, window=window, halo=halo, blend=blend)
    check_covariates_given(model, covariates)
    static = static_for(
        model, static, grid
    )  # left out: the layers the model kept (its training grid only)
    task_args = _window_task(images, plan.frames, grid.tile_size, static, covariates)
    log.info(
        "forecast_large: %d windows of <= %d cells + halo %d on a %s grid (%s)",
        len(plan.windows),
        plan.window,
        plan.halo,
        grid.shape,
        "exact" if plan.exact else "blended",
    )
    _write_output(
        model,
        plan,
        task_args,
        client,
        horizon,
        retries,
        grid,
        out_path,
        zarr_out=zarr_out,
        qml_path=qml_path,
        overwrite=overwrite,
    )
    return out_path


def _check_request(
    out_path: str | Path, *, overwrite: bool, style: bool, blend: str
) -> tuple[Path, bool, Path | None]:
    """Check the output path, its QGIS sidecar, the Zarr library and ``blend`` before any work."""
    out_path = check_output(out_path, overwrite=overwrite, suffixes=(".tif", ".tiff", ".zarr"))
    zarr_out = out_path.suffix.lower() == ".zarr"
    qml_path = check_sidecar(out_path, overwrite=overwrite) if style and not zarr_out else None
    if zarr_out:
        from trafficrnn.io.zarrstore import check_zarr

        check_zarr()
    if blend not in BLENDS:
        raise ConfigError(f"blend={blend!r} is invalid: expected one of {', '.join(BLENDS)}")
    return out_path, zarr_out, qml_path


def _checked_stack(
    model: Any, source: Any, chunks: Any, horizon: int | None
) -> tuple[xr.DataArray, Any, int]:
    """Open ``source`` lazily and check that the model can forecast it window by window."""
    from trafficrnn.io.stack import read_stack

    images = (
        source
        if isinstance(source, xr.DataArray)
        else read_stack(source, chunks=chunks or {"y": 512, "x": 512})
    )
    checked = model.check_stack(images, horizon=horizon)
    images, grid, horizon = checked.images, checked.grid, checked.horizon
    if getattr(model, "target_inputs", False):
        raise ModelMismatchError(
            "the model reads observed targets beside the images (target_inputs=True); "
            "forecast_large streams images only: use model.predict(images, target=...)"
        )
    if model.cell_mean or "ha" in model.context_.entries:
        raise ModelMismatchError(
            "the model uses maps of its training grid (cell_mean=True or context 'ha'); it "
            "cannot forecast windows of another area: use model.predict on the training grid"
        )
    if images.sizes["time"] < model.input_steps:
        raise ModelMismatchError(
            f"the stack has {images.sizes['time']} frame(s); the model reads "
            f"input_steps={model.input_steps}"
        )
    return images, grid, horizon


class _Plan(NamedTuple):
    """The tiling of a forecast: frames read, halo and core size (cells), exactness, windows."""

    frames: slice
    halo: int
    window: int
    exact: bool
    windows: list[Window]


def _plan_tiling(
    model: Any,
    images: xr.DataArray,
    grid: Any,
    horizon: int,
    *,
    window: int | None,
    halo: int | None,
    blend: str,
) -> _Plan:
    """Choose the frames, halo and window, warn when the result is approximate, plan the windows."""
    lags = any(e != "ha" for e in model.context_.entries)
    frames = slice(None) if lags else slice(images.sizes["time"] - model.input_steps, None)
    needed = max(receptive_field(net, int(model.input_steps), horizon) for net in networks(model))
    halo = (
        min(needed, max(grid.shape))
        if halo is None
        else _check_size("halo", halo, grid.shape, zero=True)
    )
    n_frames = images.sizes["time"] if lags else model.input_steps
    window = (
        _default_window(model, n_frames, halo)
        if window is None
        else _check_size("window", window, grid.shape)
    )
    window = min(window, max(grid.shape))
    global_layers = global_layer_names(model)
    # a halo as long as the area makes every window the whole area: exact even below the receptive field
    exact = halo >= min(needed, max(grid.shape)) and not global_layers
    if not exact:
        why = (
            f"its {', '.join(global_layers)} layers pool statistics over the whole image"
            if global_layers
            else f"halo={halo} cells is below the receptive field r={needed} cells"
        )
        warnings.warn(
            f"tiled forecast is approximate: {why}; windows are blended ({blend}) to hide seams"
            + ("" if global_layers else f"; pass halo>={needed} for the exact whole-area result"),
            stacklevel=3,  # the caller of forecast_large
        )
    windows = plan_windows(grid.shape, window, halo, blend="none" if exact else blend)
    return _Plan(frames, halo, window, exact, windows)


def _window_task(
    images: xr.DataArray, frames: slice, tile: int, static: Any, covariates: Any
) -> Callable[[Window], tuple[Any, dict]]:
    """The function that cuts a window's task arguments: its lazy frames, ``predict`` extras."""

    def task_args(win: Window) -> tuple[Any, dict]:
        (r0, r1), (c0, c1) = win.rows, win.cols
        part = images.isel(
            time=frames, y=slice(r0 * tile, r1 * tile), x=slice(c0 * tile, c1 * tile)
        )
        if part.chunks is not None:
            import dask

            (part,) = dask.optimize(part)  # cull the graph to this window's chunks
        stat = None if static is None else static.isel(y=slice(r0, r1), x=slice(c0, c1))
        return part, {"static": stat, "covariates": covariates}

    return task_args


def _write_output(
    model: Any,
    plan: _Plan,
    task_args: Callable[[Window], tuple[Any, dict]],
    client: Any,
    horizon: int,
    retries: int,
    grid: Any,
    out_path: Path,
    *,
    zarr_out: bool,
    qml_path: Path | None,
    overwrite: bool,
) -> None:
    """Forecast the windows into an accumulator; write the COG (and style) or Zarr atomically."""
    with atomic_output(out_path, overwrite=overwrite, directory=zarr_out) as tmp:
        acc = tmp.with_name(tmp.name + ".acc.tif")
        try:
            with _frozen_gc():
                template = _run(
                    model,
                    plan.windows,
                    task_args,
                    client,
                    horizon,
                    retries,
                    acc,
                    grid,
                    blended=not plan.exact,
                )
            if zarr_out:
                _to_zarr(acc, tmp, template, grid)
            else:
                _to_cog(acc, tmp, grid.shape)
                if qml_path is not None:  # renamed just before the COG, once both are written
                    edges = _style_breaks(tmp, len(model.bands_))
                    write_qml(raster_qml(edges), qml_path, overwrite=overwrite)
        finally:
            acc.unlink(missing_ok=True)


def _style_breaks(path: Path, bands: int, limit: int | None = None) -> np.ndarray:
    """:func:`~trafficrnn.io.qml.class_breaks` of the first of ``bands`` bands at every lead of
    the GeoTIFF ``path`` (bands 1, 1 + ``bands``, ...), as ``to_geotiff`` styles the same array:
    read block by block, and from an even sample (every k-th finite value) above ``limit`` values
    (default :data:`STYLE_VALUES`), so that memory stays bounded whatever the area."""
    limit = STYLE_VALUES if limit is None else limit
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path) as src:
        indexes = range(1, src.count + 1, bands)
        total = len(indexes) * src.width * src.height
        step = max(1, math.ceil(total / limit))
        kept = np.empty(math.ceil(total / step), dtype="float32")
        n = seen = 0
        for index in indexes:
            for _, win in src.block_windows(index):
                values = src.read(index, window=win).ravel()
                values = values[np.isfinite(values)]
                start, seen = (-seen) % step, seen + values.size  # every step-th across blocks
                values = values[start::step]
                kept[n : n + values.size] = values
                n += values.size
    return class_breaks(kept[:n])


def _results(
    model: Any, windows: list[Window], task_args: Any, client: Any, horizon: int, retries: int
):
    """Yield ``(window, forecast)`` as they are ready, in this process or from the cluster."""
    if client is None:
        for win in windows:
            part, extra = task_args(win)
            yield win, _predict(model, part, extra, horizon)
        return
    from distributed import as_completed

    token = uuid.uuid4().hex
    name = f"trafficrnn-model-{token}"
    client.register_plugin(_ModelPlugin(token, model), name=name)
    futures = {}
    try:
        for i, win in enumerate(windows):
            part, extra = task_args(win)
            fut = client.submit(
                _predict_remote,
                token,
                _Box(part),
                extra,
                horizon,
                key=f"trafficrnn-window-{token}-{i}",
                retries=retries,
                pure=False,
            )
            futures[fut.key] = (fut, win)
        for fut, result in as_completed([f for f, _ in futures.values()], with_results=True):
            yield futures.pop(fut.key)[1], result
    finally:
        for fut, _ in futures.values():
            fut.cancel()
        try:
            client.unregister_worker_plugin(name)
        except Exception as exc:  # the run's outcome matters more than the clean-up of a plugin
            log.warning("could not unregister worker plugin %s: %s", name, exc)


def _run(
    model: Any,
    windows: list[Window],
    task_args: Any,
    client: Any,
    horizon: int,
    retries: int,
    acc: Path,
    grid: Any,
    *,
    blended: bool,
) -> None:
    """Write every window's weighted forecast into the tiled GeoTIFF ``acc`` (read-add-write when
    blended); return a one-cell slice of a window's forecast (its coordinates and attributes)."""
    count = horizon * len(model.bands_)
    block = 256 if min(grid.shape) >= 256 else 16 * max(1, math.ceil(min(grid.shape) / 16))
    profile = dict(
        driver="GTiff",
        width=grid.shape[1],
        height=grid.shape[0],
        count=count,
        dtype="float32",
        crs=grid.crs,
        transform=grid.transform,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        BIGTIFF="IF_SAFER",
        SPARSE_OK=False,
    )
    template = None
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(acc, "w+", **profile) as dst:
        for win, fc in _results(model, windows, task_args, client, horizon, retries):
            if template is None:
                template = fc.isel(y=slice(0, 1), x=slice(0, 1))
            r0, r1, c0, c1 = win.write
            (y0, x0) = (r0 - win.rows[0], c0 - win.cols[0])
            w = (win.wy[y0 : y0 + r1 - r0, None] * win.wx[None, x0 : x0 + c1 - c0]).astype(
                "float32"
            )
            values = np.asarray(fc.values, dtype="float32").reshape(count, *fc.shape[2:])
            values = values[:, y0 : y0 + r1 - r0, x0 : x0 + c1 - c0]
            region = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
            if blended:
                values = dst.read(window=region) + values * w
            dst.write(values, window=region)
        write_band_meta(dst, template)
        dst.nodata = float("nan")
    return template


def _to_zarr(acc: Path, target: Path, template: xr.DataArray, grid: Any) -> None:
    """Stream the tiled GeoTIFF into a CF Zarr store (``to_zarr``'s layout), a block of 256 × 256
    cells (every lead and band) at a time."""
    import rioxarray

    from trafficrnn.io.zarrstore import write_store

    block = min(256, grid.shape[0]), min(256, grid.shape[1])
    src = rioxarray.open_rasterio(
        acc, chunks={"band": -1, "y": block[0], "x": block[1]}, lock=False
    )
    lead, band = template.sizes["lead"], template.sizes["band"]
    data = src.data.reshape(lead, band, *grid.shape)
    coords = {k: v for k, v in template.coords.items() if k not in ("y", "x", "spatial_ref")}
    da = xr.DataArray(
        data,
        dims=("lead", "band", "y", "x"),
        coords={**coords, "y": src["y"].values, "x": src["x"].values},
        attrs=dict(template.attrs),
    )
    write_store(da.rio.write_crs(grid.crs).rio.write_transform(grid.transform), target)
    src.close()


def _to_cog(acc: Path, target: Path, shape: tuple[int, int]) -> None:
    """Stream the tiled GeoTIFF into a COG (deflate, overviews), block by block."""
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(acc) as src:
        rasterio.shutil.copy(
            src,
            target,
            driver="COG",
            compress="deflate",
            predictor="YES",
            blocksize=512 if min(shape) >= 512 else 256,
            overviews="AUTO",
            resampling="AVERAGE",
            BIGTIFF="IF_SAFER",
        )
