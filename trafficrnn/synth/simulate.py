"""Orchestration of the synthetic city: simulate traffic, place vehicles, render frames, and write them as user files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from tqdm.auto import tqdm

from trafficrnn.errors import ConfigError, OutputExistsError
from trafficrnn.grid import Grid
from trafficrnn.synth.city import make_city
from trafficrnn.synth.render import Renderer
from trafficrnn.synth.traffic import build_network, run_traffic
from trafficrnn.synth.vehicles import place_vehicles, vehicles_frame

logger = logging.getLogger(__name__)
SIM_DT = 2.0  # seconds per cell-transmission step


@dataclass
class SimulationResult:
    """Everything :func:`simulate` produced.

    Attributes
    ----------
    images : xarray.DataArray
        ``(time, band, y, x)`` uint8 RGB, bands ``red, green, blue``; CRS and transform set;
        clouded pixels are 0 (``rio.nodata``); frames in ``missing`` are absent.
    density : xarray.DataArray
        ``(time, band=["density"], y, x)`` float32 vehicles per grid cell, at every time step.
    vehicles : geopandas.GeoDataFrame
        One Point per vehicle and frame: ``time``, ``heading`` (deg from north), ``speed``
        (km/h), ``kind`` (car/van/truck/bus), ``link``.
    roads, landuse : geopandas.GeoDataFrame
        The city (see :func:`trafficrnn.synth.city.make_city`).
    grid : Grid
        The forecast grid (``tile_size`` image pixels per cell).
    cloud_mask : xarray.DataArray
        ``(time, y, x)`` bool, True where a cloud hides the ground; same times as ``images``.
    flows : xarray.Dataset
        ``(time, link)``: ``inflow``/``outflow`` (cumulative vehicles since the first frame)
        and ``count`` (vehicles on the link) of every directed link.
    incidents, events : pandas.DataFrame
        Lane closures and evening events with their start and end (UTC).
    missing : pandas.DatetimeIndex
        Time steps whose image was dropped (``missing_frames``).
    params : dict
        The parameters of the run (JSON-serialisable).
    """

    images: xr.DataArray
    density: xr.DataArray
    vehicles: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    landuse: gpd.GeoDataFrame
    grid: Grid
    cloud_mask: xr.DataArray
    flows: xr.Dataset
    incidents: pd.DataFrame
    events: pd.DataFrame
    missing: pd.DatetimeIndex
    params: dict = field(default_factory=dict)


def _check(size, days, step, tile_size, gsd, cloud_cover, missing_frames) -> pd.Timedelta:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ConfigError(
            f"size={size!r} is invalid: expected an integer number of pixels >= 32, e.g. 512"
        )
    if (
        isinstance(tile_size, bool)
        or not isinstance(tile_size, (int, np.integer))
        or tile_size < 1
        or size % tile_size
    ):
        fits = [
            d for d in (8, 16, 32, 64, 128) if isinstance(size, (int, np.integer)) and size % d == 0
        ]
        hint = "or change size to a multiple of 64"
        if fits:
            hint = (
                f"such as {', '.join(map(str, fits[-3:-1]))} or {fits[-1]}"
                if len(fits) > 1
                else f"such as {fits[0]}"
            )
        raise ConfigError(
            f"tile_size={tile_size!r} is invalid: expected a positive integer dividing size={size}, "
            f"{hint}"
        )
    if not isinstance(days, (int, float)) or not days > 0:
        raise ConfigError(f"days={days!r} is invalid: expected a positive number of days, e.g. 2")
    try:
        step_td = pd.Timedelta(step)
    except (ValueError, TypeError):
        raise ConfigError(
            f"step={step!r} is invalid: expected a duration such as '5min' or '15min'"
        ) from None
    if step_td.total_seconds() < SIM_DT or step_td.total_seconds() % SIM_DT:
        raise ConfigError(
            f"step={step!r} is invalid: expected a positive multiple of {SIM_DT:g} s, such as '5min'"
        )
    if not 0 <= cloud_cover <= 1:
        raise ConfigError(
            f"cloud_cover={cloud_cover!r} is invalid: expected a share in [0, 1], e.g. 0.15"
        )
    if not 0 <= missing_frames < 1:
        raise ConfigError(
            f"missing_frames={missing_frames!r} is invalid: expected a share in [0, 1), e.g. 0.02"
        )
    if not isinstance(gsd, (int, float)) or not 0.1 <= gsd <= 5:
        raise ConfigError(
            f"gsd={gsd!r} is invalid: expected metres per pixel in [0.1, 5], e.g. 0.5"
        )
    return step_td


def simulate(
    size: int = 1024,
    *,
    days: float = 2.0,
    step="5min",
    seed: int = 0,
    tile_size: int = 64,
    gsd: float = 1.0,
    start="2024-06-03",
    clouds: bool = False,
    cloud_cover: float = 0.15,
    missing_frames: float = 0.0,
    demand_scale: float = 1.0,
    incident_rate: float = 0.05,
    event_prob: float = 0.4,
    place: dict | None = None,
    render: bool = True,
    progress: bool = False,
) -> SimulationResult:
    """Simulate and photograph a synthetic city.

    Parameters
    ----------
    size : int
        Image side in pixels (images are ``size`` × ``size``). The defaults (1024 px at 1 m, cells
        of 64 px) make a scene of about 1 km² whose cells hold road length, where density has
        memory a forecaster can learn (``benchmarks/synth_forecastability.py`` checks it).
    days : float
        Simulated duration.
    step : str or pandas.Timedelta
        Cadence of the frames (default 5 minutes).
    seed : int
        Seed of everything; the same arguments give identical outputs.
    tile_size : int
        Image pixels per grid cell side; must divide ``size``.
    gsd : float
        Metres per pixel.
    start : str or timestamp
        UTC time of the first frame (default a Monday).
    clouds : bool
        Add clouds (nodata pixels, see ``cloud_mask``); ``cloud_cover`` sets how many.
    missing_frames : float
        Share of time steps whose image is dropped (the density keeps every step).
    demand_scale, incident_rate, event_prob : float
        Traffic demand multiplier, incidents per lane-km and hour, chance of an event per day.
    place : dict, optional
        Scene centre and CRS (see :func:`trafficrnn.synth.city.make_city`); default Vienna.
    render : bool
        Photograph the frames. ``False`` skips the rendering (the slow part) when only the
        traffic is wanted: ``images`` and ``cloud_mask`` then have no frames.
    progress : bool
        Show progress bars.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ConfigError
        If a parameter is out of range (the message names it and the expected values).
    """
    step_td = _check(size, days, step, tile_size, gsd, cloud_cover, missing_frames)
    t0 = _start_time(start)
    times = _frame_times(t0, days, step, step_td)
    n = len(times)
    city = make_city(size, float(gsd), seed, place=place)
    grid = Grid(
        city.crs, city.transform * Affine.scale(tile_size), (size // tile_size,) * 2, tile_size
    )
    net = build_network(city, SIM_DT)
    run = _traffic(city, net, times, seed, demand_scale, incident_rate, event_prob, progress)
    # the generator of the dropped frames and of every frame's vehicles, drawn in that order
    rng = np.random.default_rng([seed, 3])
    renderer = Renderer(city, seed, clouds=clouds, cloud_cover=cloud_cover)
    missing = _drop_frames(rng, n, missing_frames)
    shot = ~missing & render  # frames photographed
    images, clouds_arr, density, parts = _photograph(
        net, run, grid, renderer, rng, times, shot, size, progress
    )
    images_da, cloud_da = _image_arrays(city, size, images, clouds_arr, times[shot])
    density_da = _density_array(grid, density, times)
    flows = _flows(net, run, times)
    params = {
        "size": int(size),
        "days": float(days),
        "step": step_td.isoformat(),
        "seed": int(seed),
        "tile_size": int(tile_size),
        "gsd": float(gsd),
        "start": t0.isoformat(),
        "clouds": bool(clouds),
        "cloud_cover": float(cloud_cover),
        "missing_frames": float(missing_frames),
        "demand_scale": float(demand_scale),
        "incident_rate": float(incident_rate),
        "event_prob": float(event_prob),
        "place": {k: v for k, v in (place or {}).items()} or "vienna",
    }
    logger.info(
        "simulated %d frames, %d vehicle points, %d incidents, %d events",
        n,
        sum(len(p["x"]) for p in parts),
        len(run.incidents),
        len(run.events),
    )
    return SimulationResult(
        images_da,
        density_da,
        vehicles_frame(parts, times, city.crs),
        city.roads,
        city.landuse,
        grid,
        cloud_da,
        flows,
        run.incidents,
        run.events,
        times[missing],
        params,
    )


def _start_time(start) -> pd.Timestamp:
    """The first frame's time as a naive UTC timestamp (``start`` converted when it has a zone)."""
    try:
        t0 = pd.Timestamp(start)
    except (ValueError, TypeError):
        raise ConfigError(
            f"start={start!r} is invalid: expected a date/time such as '2024-06-03'"
        ) from None
    return t0.tz_convert("UTC").tz_localize(None) if t0.tzinfo else t0


def _frame_times(t0: pd.Timestamp, days, step, step_td: pd.Timedelta) -> pd.DatetimeIndex:
    """The times of the frames: ``days`` from ``t0`` every ``step``, at least two of them."""
    n = int(round(pd.Timedelta(days=days) / step_td))
    if n < 2:
        raise ConfigError(
            f"days={days!r} with step={step!r} gives {n} frame(s): expected at least 2"
        )
    return pd.date_range(t0, periods=n, freq=step_td)


def _traffic(
    city, net, times: pd.DatetimeIndex, seed, demand_scale, incident_rate, event_prob, progress
):
    """Run the cell-transmission traffic over ``times``, with a progress bar."""
    with tqdm(total=len(times), desc="traffic", unit="frame", disable=not progress) as bar:
        return run_traffic(
            city,
            net,
            times,
            seed=seed,
            dt=SIM_DT,
            demand_scale=demand_scale,
            incident_rate=incident_rate,
            event_prob=event_prob,
            progress=lambda k: bar.update(k - bar.n),
        )


def _drop_frames(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Which of ``n`` frames lose their image (never the first or last): a ``share`` of them."""
    missing = np.zeros(n, bool)
    if share > 0:
        missing[1:-1] = rng.random(n - 2) < share
    return missing


def _photograph(net, run, grid: Grid, renderer: Renderer, rng, times, shot, size: int, progress):
    """Place every frame's vehicles, count them per cell and render the frames in ``shot``."""
    n = len(times)
    images = np.zeros((int(shot.sum()), 3, size, size), np.uint8)
    clouds_arr = np.zeros((images.shape[0], size, size), bool)
    density = np.zeros((n, 1, *grid.shape), np.float32)
    parts = []
    k_img = 0
    for k in tqdm(range(n), desc="render", unit="frame", disable=not progress):
        veh = place_vehicles(net, run.cell_n[k], run.cell_speed[k], rng)
        rows, cols = grid.index(veh["x"], veh["y"])
        inside = grid.contains(rows, cols)
        veh = {key: val[inside] for key, val in veh.items()}
        density[k, 0] = np.bincount(
            rows[inside] * grid.shape[1] + cols[inside], minlength=grid.shape[0] * grid.shape[1]
        ).reshape(grid.shape)
        parts.append(veh)
        if shot[k]:
            images[k_img], clouds_arr[k_img] = renderer.render(times[k], veh)
            k_img += 1
    return images, clouds_arr, density, parts


def _image_arrays(
    city, size: int, images, clouds_arr, img_times
) -> tuple[xr.DataArray, xr.DataArray]:
    """The photographed frames and their cloud masks as georeferenced DataArrays."""
    image_grid = Grid(city.crs, city.transform, (size, size), 1)
    images_da = image_grid.attach(
        xr.DataArray(
            images,
            dims=("time", "band", "y", "x"),
            coords={"time": img_times, "band": ["red", "green", "blue"]},
            name="image",
        )
    )
    images_da = images_da.rio.write_nodata(0)
    images_da.attrs.update(units="digital number", source="trafficrnn.synth")
    cloud_da = image_grid.attach(
        xr.DataArray(clouds_arr, dims=("time", "y", "x"), coords={"time": img_times}, name="cloud")
    )
    return images_da, cloud_da


def _density_array(grid: Grid, density: np.ndarray, times) -> xr.DataArray:
    """The vehicles per grid cell at every time step as a georeferenced DataArray."""
    density_da = grid.attach(
        xr.DataArray(
            density,
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
            name="density",
        )
    )
    density_da.attrs["units"] = "vehicles per cell"
    return density_da


def _flows(net, run, times) -> xr.Dataset:
    """Cumulative in- and outflows and vehicle counts of every directed link at every time step."""
    n = len(times)
    counts = np.stack(
        [np.bincount(net.cell_link, run.cell_n[k], minlength=len(net.link)) for k in range(n)]
    )
    flows = xr.Dataset(
        {
            "inflow": (("time", "link"), run.link_in),
            "outflow": (("time", "link"), run.link_out),
            "count": (("time", "link"), counts),
        },
        coords={"time": times, "link": np.arange(len(net.link))},
    )
    flows.attrs.update(entered=run.entered.tolist(), exited=run.exited.tolist())
    return flows


def write_simulation(
    result: SimulationResult,
    out_dir,
    *,
    overwrite: bool = False,
    image_compress: str = "jpeg",
    progress: bool = False,
) -> dict:
    """Write a simulation as the files a user would bring, plus a manifest.

    Writes ``images/`` (one RGB GeoTIFF per time step, nodata 0), ``density/`` (one float32
    GeoTIFF per time step on the grid), ``clouds/`` (cloud masks, when clouds are on),
    ``vehicles.gpkg``, ``roads.gpkg``, ``landuse.gpkg`` and ``manifest.json``.

    Parameters
    ----------
    result : SimulationResult
    out_dir : path-like
        Output folder; created if missing.
    overwrite : bool
        Replace existing outputs; otherwise refuse if any exists.
    image_compress : str
        ``jpeg`` (default, small) or ``deflate`` (lossless).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    OutputExistsError
        If an output exists and ``overwrite`` is false.
    ConfigError
        If ``image_compress`` is not supported.
    """
    if image_compress not in ("jpeg", "deflate"):
        raise ConfigError(
            f"image_compress={image_compress!r} is invalid: expected 'jpeg' or 'deflate'"
        )
    out = Path(out_dir)
    _check_free(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    _write_rasters(result, out, overwrite, image_compress, progress)
    _write_vectors(result, out, overwrite)
    manifest = _manifest(result, image_compress)
    path = out / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return manifest


# write_simulation's steps: refuse to overwrite, write the rasters, the vectors, the manifest
_OUTPUTS = (
    "images",
    "density",
    "clouds",
    "vehicles.gpkg",
    "roads.gpkg",
    "landuse.gpkg",
    "manifest.json",
)


def _check_free(out: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if ``out`` holds an output (a file, or a folder with files) and not ``overwrite``."""
    if out.exists() and not overwrite:
        taken = [
            n
            for n in _OUTPUTS
            if (out / n).exists() and (not (out / n).is_dir() or any((out / n).iterdir()))
        ]
        if taken:
            raise OutputExistsError(
                f"{out} already holds {', '.join(taken)}; pass overwrite=True "
                "(CLI: --overwrite) or choose another folder"
            )


def _write_rasters(
    result: SimulationResult, out: Path, overwrite: bool, image_compress: str, progress: bool
) -> None:
    """Write the images (in chunks of 48 frames), the density and, when clouds are on, the cloud masks."""
    from trafficrnn.io import write_stack

    n = result.images.sizes["time"]
    chunk = 48
    with tqdm(total=n, desc="write", unit="frame", disable=not progress) as bar:
        for i in range(0, n, chunk):
            write_stack(
                result.images.isel(time=slice(i, i + chunk)),
                out / "images",
                overwrite=overwrite,
                compress=image_compress,
                nodata=0,
            )
            bar.update(min(chunk, n - i))
    write_stack(result.density, out / "density", overwrite=overwrite, compress="deflate")
    if result.params.get("clouds"):
        mask = result.cloud_mask.astype(np.uint8).expand_dims(band=["cloud"], axis=1)
        write_stack(mask, out / "clouds", overwrite=overwrite, compress="deflate")


def _write_vectors(result: SimulationResult, out: Path, overwrite: bool) -> None:
    """Write the vehicles, roads and land use as GeoPackages."""
    from trafficrnn.io import write_geopackage

    write_geopackage(
        result.vehicles.assign(kind=result.vehicles["kind"].astype(str)),
        out / "vehicles.gpkg",
        layer="vehicles",
        overwrite=overwrite,
    )
    write_geopackage(result.roads, out / "roads.gpkg", layer="roads", overwrite=overwrite)
    write_geopackage(result.landuse, out / "landuse.gpkg", layer="landuse", overwrite=overwrite)


def _manifest(result: SimulationResult, image_compress: str) -> dict:
    """The manifest: generator, parameters, CRS, image and grid geometry, times, counts, files."""
    from trafficrnn import __version__

    grid = result.grid
    times = pd.DatetimeIndex(result.density["time"].values)
    return {
        "generator": "trafficrnn.synth",
        "package_version": __version__,
        "parameters": result.params,
        "crs": {"epsg": grid.crs.to_epsg(), "wkt": grid.crs.to_wkt()},
        "image": {
            "shape": list(grid.image_shape),
            "transform": list(grid.image_transform[:6]),
            "bands": ["red", "green", "blue"],
            "dtype": "uint8",
            "nodata": 0,
            "compress": image_compress,
        },
        "grid": grid.to_dict(),
        "time": {
            "zone": "UTC",
            "start": times[0].isoformat(),
            "end": times[-1].isoformat(),
            "step": result.params["step"],
            "count": len(times),
            "missing_images": [t.isoformat() for t in result.missing],
        },
        "counts": {
            "vehicles": len(result.vehicles),
            "roads": len(result.roads),
            "incidents": len(result.incidents),
            "events": len(result.events),
        },
        **_happenings(result),
        "files": {
            "images": "images/*.tif",
            "density": "density/*.tif",
            "vehicles": "vehicles.gpkg",
            "roads": "roads.gpkg",
            "landuse": "landuse.gpkg",
            **({"clouds": "clouds/*.tif"} if result.params.get("clouds") else {}),
        },
    }


def _happenings(result: SimulationResult) -> dict:
    """The manifest's ``incidents`` and ``events`` lists: kind, start, end and place of each."""
    return {
        "incidents": [
            {"start": r.start.isoformat(), "end": r.end.isoformat(), "link": int(r.link)}
            for r in result.incidents.itertuples()
        ],
        "events": [
            {
                "kind": r.kind,
                "start": r.start.isoformat(),
                "end": r.end.isoformat(),
                **({"x": float(r.x), "y": float(r.y)} if r.kind == "event" else {}),
            }
            for r in result.events.itertuples()
        ],
    }
