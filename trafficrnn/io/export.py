"""GIS layers out: Cloud-Optimised GeoTIFF, one GeoTIFF per time step, CF-NetCDF, GeoPackage; all written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
import xarray as xr
from affine import Affine
from rasterio.io import MemoryFile

from trafficrnn.errors import ExportError, GridError, MissingCRSError, OutputExistsError
from trafficrnn.grid import Grid, check_north_up
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.io.qml import (
    check_sidecar,
    class_breaks,
    raster_qml,
    styles_table,
    vector_qml,
    write_qml,
)
from trafficrnn.io.vector import aggregate_to_segments, column_names

__all__ = [
    "to_geotiff",
    "write_stack",
    "to_geopackage",
    "write_geopackage",
    "check_georeference",
    "as_4d",
]


def check_georeference(da: xr.DataArray, what: str = "array") -> Grid:
    """The grid of ``da``, after checking it has a CRS, a north-up transform, and coords that agree with it.

    Raises
    ------
    MissingCRSError
        ``da`` has no CRS.
    GridError
        The transform is not north-up, or disagrees with the ``x``/``y`` coordinates.
    """
    if "x" not in da.dims or "y" not in da.dims:
        raise GridError(f"{what} has dims {da.dims}; expected spatial dims named y and x")
    if da.rio.crs is None:
        raise MissingCRSError(
            f"{what} has no CRS; set it with da.rio.write_crs('EPSG:...') (or build it with Grid.attach)"
        )
    transform = da.rio.transform()  # from the x/y coordinates when they exist
    check_north_up(transform, f"{what} transform")
    mapping = da.coords.get(da.rio.grid_mapping)
    stored = mapping.attrs.get("GeoTransform") if mapping is not None else None
    if stored:
        cached = Affine.from_gdal(*(float(v) for v in str(stored).split()))
        if not transform.almost_equals(cached, precision=1e-6 * abs(transform.a)):
            raise GridError(
                f"{what}: its stored transform {tuple(cached[:6])} disagrees with its x/y coordinates "
                f"{tuple(transform[:6])}; rebuild it with Grid.attach or da.rio.write_transform"
            )
    return Grid(
        da.rio.crs, transform, (da.sizes["y"], da.sizes["x"]), int(da.attrs.get("tile_size", 1))
    )


def as_4d(da: xr.DataArray) -> xr.DataArray:
    """View ``(y, x)``, ``(band, y, x)`` or ``(time|lead, band, y, x)`` as 4-D ``(step, band, y, x)``;
    a quantile forecast ``(quantile, lead, band, y, x)`` as one band per band and quantile
    (:func:`~trafficrnn.io.quantiles.flatten_quantiles`)."""
    from trafficrnn.io.quantiles import flatten_quantiles

    da = flatten_quantiles(da)
    if da.ndim == 2:
        da = da.expand_dims(band=[da.name or "value"])
    if da.ndim == 3:
        if da.dims[0] in ("time", "lead"):
            da = da.expand_dims(band=[da.name or "value"], axis=1)
        else:
            da = da.expand_dims(step=[0])
    if da.ndim != 4 or da.dims[2:] != ("y", "x"):
        raise ExportError(
            f"cannot write an array with dims {da.dims}; expected (time|lead, band, y, x), (band, y, x) or (y, x)"
        )
    if "band" not in da.coords:
        da = da.assign_coords(band=[f"band{i + 1}" for i in range(da.sizes["band"])])
    return da


def iso_time(value, zone: str | None = None) -> str:
    """ISO 8601 with its zone spelt out: ``2024-05-01T09:00:00Z``, or ``...-04:00`` in ``zone``.

    Naive times (the package's convention) are read as UTC, or as wall-clock times of ``zone``
    (the IANA zone a stack records in ``attrs["timezone"]``); aware times keep their own zone.
    """
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(zone or "UTC", ambiguous=True, nonexistent="shift_forward")
    text = ts.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") and str(ts.tzinfo) in ("UTC", "utc") else text


def write_band_meta(dst, da: xr.DataArray) -> None:
    """Band descriptions, band and dataset tags, and GDAL's band unit type of a forecast or stack
    ``da`` on an open rasterio dataset ``dst`` with one band per (lead ×) band of ``da``."""
    descriptions, band_tags = _band_meta(da)
    for i, (text, tags) in enumerate(zip(descriptions, band_tags), start=1):
        dst.set_band_description(i, text)
        dst.update_tags(i, **tags)
    dst.update_tags(**_dataset_tags(da))
    if da.attrs.get("units"):
        dst.units = [str(da.attrs["units"])] * dst.count


def _band_meta(da: xr.DataArray) -> tuple[list[str], list[dict[str, str]]]:
    """Human band descriptions and machine band tags, in band order (step-major)."""
    from trafficrnn.io.quantiles import quantile_coords

    step = da.dims[0]
    bands = [str(b) for b in da["band"].values]
    zone = da.attrs.get("timezone")
    levels = quantile_coords(da)  # a quantile forecast: the level and the band of each band
    descriptions, tags = [], []
    for i in range(da.sizes[step]):
        for j, band in enumerate(bands):
            tag = {"band": band}
            if levels is not None:
                tag.update(band=str(levels[1][j]), quantile=f"{float(levels[0][j]):g}")
            if step == "time":
                # observed frames of a stack with a zone stay wall-clock times beside its `timezone` tag:
                # read_stack reads them back that way
                stamp = pd.Timestamp(da["time"].values[i])
                text = tag["time"] = stamp.isoformat() if zone else iso_time(stamp)
                if len(bands) > 1:
                    text += f" {band}"
            elif step == "lead":
                lead = pd.Timedelta(da["lead"].values[i])
                tag["lead"] = lead.isoformat()
                text = f"lead +{lead.total_seconds() / 60:g}min"
                if "valid_time" in da.coords:
                    tag["valid_time"] = iso_time(da["valid_time"].values[i], zone)
                    text += f", valid {tag['valid_time']}"
                if len(bands) > 1 or levels is not None:
                    text += f", {band}"
            else:
                text = band
            descriptions.append(text)
            tags.append(tag)
    return descriptions, tags


def _dataset_tags(da: xr.DataArray) -> dict[str, str]:
    tags = {
        k: str(v)
        for k, v in da.attrs.items()
        if isinstance(v, (str, int, float, np.number))
        and k not in ("tile_size",)
        and not k.startswith("_")
    }
    tags.setdefault("software", "trafficrnn")
    if tags.get("issued"):
        tags["issued"] = iso_time(tags["issued"], da.attrs.get("timezone"))
    stamp = da.attrs.get("issued")
    if stamp is None and da.dims[0] == "time" and da.sizes["time"] == 1:
        stamp = pd.Timestamp(da["time"].values[0]).isoformat()
    if stamp:
        tags["TIFFTAG_DATETIME"] = pd.Timestamp(stamp).strftime("%Y:%m:%d %H:%M:%S")
    return tags


def _profile(da: xr.DataArray, grid: Grid, dtype, nodata, compress: str) -> dict:
    dtype = np.dtype(dtype or (np.float32 if np.issubdtype(da.dtype, np.floating) else da.dtype))
    if nodata is None and np.issubdtype(dtype, np.floating):
        nodata = np.nan
    count = da.sizes[da.dims[0]] * da.sizes["band"]
    return dict(
        driver="GTiff",
        width=grid.shape[1],
        height=grid.shape[0],
        count=count,
        dtype=dtype.name,
        crs=grid.crs,
        transform=grid.transform,
        nodata=nodata,
        compress=compress,
    )


def _check_jpeg(profile: dict) -> None:
    """Refuse JPEG for anything but uint8 with 1 or 3 bands (what the codec holds).

    Raises
    ------
    ExportError
    """
    if profile["compress"] == "jpeg" and (
        profile["dtype"] != "uint8" or profile["count"] not in (1, 3)
    ):
        raise ExportError(
            f"JPEG compression needs uint8 with 1 or 3 bands, got {profile['dtype']} with "
            f"{profile['count']} bands; convert to uint8 or use compress='deflate'"
        )


def _gtiff_options(profile: dict, grid: Grid) -> dict:
    """Creation options of a plain (not cloud-optimised) GeoTIFF of ``profile``: tiled from 256 px,
    JPEG RGB in YCbCr, a predictor for the deflate-like codecs."""
    options = dict(profile, tiled=grid.shape[0] >= 256 and grid.shape[1] >= 256)
    compress = profile["compress"]
    if compress == "jpeg" and profile["count"] == 3:
        options["photometric"] = "YCBCR"  # chroma subsampling: ~2.7x smaller RGB files
    if compress in ("deflate", "lzw", "zstd"):
        options["predictor"] = 3 if np.issubdtype(np.dtype(profile["dtype"]), np.floating) else 2
    return options


def as_stored(
    images: xr.DataArray, compress: str = "jpeg", nodata: float | None = 0
) -> xr.DataArray:
    """``images`` as :func:`write_stack` stores each frame with ``compress`` and reads it back: the
    same values, dtype and coordinates, with the codec's losses (JPEG in YCbCr halves the colour
    resolution and smears objects of a few pixels, such as vehicles at 1 m).

    Models that learn from simulated or lossless frames and then read JPEG files see other pixels;
    train them on ``as_stored(images)``. Frames are round-tripped one at a time in memory.

    Raises
    ------
    ExportError
        For a codec the writer does not offer, or JPEG on anything but uint8 with 1 or 3 bands.
    GridError
        If ``images`` carries no georeferencing (:func:`check_georeference`).
    """
    if compress not in ("jpeg", "deflate", "lzw", "zstd", "none"):
        raise ExportError(
            f"compress={compress!r} is not a codec of write_stack: expected 'jpeg', 'deflate', "
            "'lzw', 'zstd' or 'none'"
        )
    da = as_4d(images)
    grid = check_georeference(da, "images")
    profile = _profile(da.isel({da.dims[0]: [0]}), grid, da.dtype, nodata, compress)
    _check_jpeg(profile)
    options = _gtiff_options(profile, grid)
    values = np.asarray(da.values)
    out = np.empty_like(values)
    for i in range(values.shape[0]):
        with MemoryFile() as mem:
            with mem.open(**options) as dst:
                dst.write(values[i])
            with mem.open() as src:
                out[i] = src.read()
    return images.copy(data=out.reshape(images.shape))


def _write_tiff(
    da: xr.DataArray, target: Path, grid: Grid, *, dtype, nodata, compress: str, cog: bool
) -> None:
    profile = _profile(da, grid, dtype, nodata, compress)
    values = np.asarray(da.values).reshape(profile["count"], *grid.shape)
    if np.issubdtype(np.dtype(profile["dtype"]), np.integer) and np.issubdtype(
        values.dtype, np.floating
    ):
        fill = profile["nodata"] if profile["nodata"] is not None else 0
        values = np.where(np.isfinite(values), values, fill)
    values = values.astype(profile["dtype"], copy=False)
    _check_jpeg(profile)

    def fill_dataset(dst) -> None:
        dst.write(values)
        write_band_meta(dst, da)
        if profile["count"] == 3 and profile["dtype"] == "uint8":
            from rasterio.enums import ColorInterp

            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]

    if not cog:
        with rasterio.open(target, "w", **_gtiff_options(profile, grid)) as dst:
            fill_dataset(dst)
        return
    with MemoryFile() as mem:
        with mem.open(**dict(profile, compress="none")) as tmp:
            fill_dataset(tmp)
        with mem.open() as src:
            options = dict(
                compress=compress,
                blocksize=512 if min(grid.shape) >= 512 else 256,
                overviews="AUTO",
                resampling="AVERAGE" if compress != "jpeg" else "BILINEAR",
            )
            if compress in ("deflate", "lzw", "zstd"):
                options["predictor"] = "YES"
            rasterio.shutil.copy(src, target, driver="COG", **options)


def to_geotiff(
    da: xr.DataArray,
    path,
    *,
    overwrite: bool = False,
    dtype=None,
    nodata=None,
    compress: str = "deflate",
    style: bool = True,
) -> Path:
    """Write a grid or image array as a Cloud-Optimised GeoTIFF, one band per time step or lead (× band).

    Band descriptions carry the ISO time, or the lead and valid time (plus the band name when
    there are several bands); band tags carry ``time`` / ``lead`` / ``valid_time`` / ``band``
    for machines; dataset tags carry the array's scalar attrs (``issued``, ``model``, ``units``),
    and ``units`` is also each band's unit type (``gdalinfo``: *Unit Type*). Times spell out
    their zone (see :func:`iso_time`): ``2024-05-01T09:00:00Z``, or the offset of
    ``attrs["timezone"]``; observed frames of a stack with a ``timezone`` stay wall-clock times
    beside its ``timezone`` tag, as :func:`~trafficrnn.io.read_stack` reads them.

    Parameters
    ----------
    da : xarray.DataArray
        ``(time|lead, band, y, x)``, ``(band, y, x)`` or ``(y, x)`` with CRS and transform.
    path : path-like
        ``.tif`` / ``.tiff`` output.
    overwrite : bool
        Replace an existing file.
    dtype, nodata : optional
        Output data type (default float32 for floats) and nodata (default NaN for floats).
    compress : str
        ``deflate`` (default), ``lzw``, ``zstd``, ``jpeg`` (uint8 RGB) or ``none``.
    style : bool
        Also write the QGIS style ``<name>.qml`` beside the file (QGIS loads it with the layer):
        band 1 in the colour classes of :func:`~trafficrnn.io.qml.class_breaks`, one scale for
        all leads of the first band. Not written for uint8 RGB images. It obeys ``overwrite`` as
        the file does, and neither file is replaced unless both are written.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputExistsError, ExportError, MissingCRSError, GridError
    """
    path = check_output(path, overwrite=overwrite, suffixes=(".tif", ".tiff"))
    da = as_4d(da)
    grid = check_georeference(da)
    qml = _tiff_style(da, path, dtype=dtype, overwrite=overwrite) if style else None
    with atomic_output(path, overwrite=overwrite) as tmp:
        _write_tiff(da, tmp, grid, dtype=dtype, nodata=nodata, compress=compress, cog=True)
        if qml is not None:  # renamed just before the GeoTIFF, once both are written
            write_qml(qml[1], qml[0], overwrite=overwrite)
    return path


def _tiff_style(da: xr.DataArray, path: Path, *, dtype, overwrite: bool) -> tuple[Path, str] | None:
    """The sidecar QGIS style of a COG and its text, or None for a uint8 RGB image (QGIS shows
    those in true colour)."""
    out = np.dtype(dtype or (np.float32 if np.issubdtype(da.dtype, np.floating) else da.dtype))
    if out == np.uint8 and da.sizes[da.dims[0]] * da.sizes["band"] == 3:
        return None
    target = check_sidecar(path, overwrite=overwrite)
    return target, raster_qml(class_breaks(da.isel(band=0).values))


def write_stack(
    da: xr.DataArray,
    directory,
    *,
    pattern: str = "{time:%Y%m%dT%H%M%S}.tif",
    overwrite: bool = False,
    dtype=None,
    compress: str = "deflate",
    nodata=None,
) -> list[Path]:
    """Write ``(time, band, y, x)`` as one GeoTIFF per time step, readable back by ``read_stack``.

    Each file carries ``TIFFTAG_DATETIME`` and band descriptions from the ``band`` coordinate.

    Parameters
    ----------
    da : xarray.DataArray
        ``(time, band, y, x)`` with CRS and transform.
    directory : path-like
        Output folder (created if missing).
    pattern : str
        File name, formatted with ``time`` (a Timestamp) and ``i`` (frame index).
    overwrite, dtype, compress, nodata
        As in :func:`to_geotiff`; existing files are checked before anything is written.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    OutputExistsError, ExportError, MissingCRSError, GridError
    """
    if da.ndim != 4 or da.dims[0] != "time":
        raise ExportError(f"write_stack expects (time, band, y, x), got dims {da.dims}")
    grid = check_georeference(da)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    times = pd.DatetimeIndex(da["time"].values)
    paths = [directory / pattern.format(time=t, i=i) for i, t in enumerate(times)]
    if len(set(paths)) != len(paths):
        raise ExportError(
            f"pattern {pattern!r} gives the same file name to several frames; include the time to the second"
        )
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{len(existing)} file(s) exist already in {directory} (e.g. {existing[0].name}); "
            "pass overwrite=True to replace them"
        )
    for i, path in enumerate(paths):
        frame = da.isel(time=slice(i, i + 1))
        with atomic_output(path, overwrite=overwrite) as tmp:
            _write_tiff(frame, tmp, grid, dtype=dtype, nodata=nodata, compress=compress, cog=False)
    return paths


#: GeoPackage version written: GDAL 3.11+ defaults to 1.4, which GDAL 3.6 and older QGIS builds
#: open with a "partially supported" warning; 1.2 is read by every GDAL since 2.2
GPKG_VERSION = "1.2"


def _write_layers(
    path: Path, layers: list[tuple], *, overwrite: bool, styles: dict[str, str] | None = None
) -> Path:
    """Write ``(gdf, layer, metadata)`` triples into one new GeoPackage, atomically, and the
    default QGIS ``styles`` of layers (layer name -> QML) into its ``layer_styles`` table."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        for k, (gdf, layer, metadata) in enumerate(layers):
            options = {"dataset_options": {"VERSION": GPKG_VERSION}} if k == 0 else {}
            gdf.to_file(
                tmp,
                layer=layer,
                driver="GPKG",
                engine="pyogrio",
                metadata={key: str(v) for key, v in (metadata or {}).items()} or None,
                **options,
            )
        if styles:
            _write_styles(tmp, styles)
    return path


def _write_styles(target: Path, styles: dict[str, str]) -> None:
    import pyogrio

    rows = [
        (name, pyogrio.read_info(target, layer=name)["geometry_name"], qml)
        for name, qml in styles.items()
    ]
    pyogrio.write_dataframe(
        styles_table(rows), target, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"}
    )


def _gpkg_styles(gdf, da: xr.DataArray, layer: str) -> dict[str, str]:
    """Graduated QGIS styles of the wide layer (its first column) and the long one (its first
    band), in the classes of the first band over all steps, as the COG's style."""
    first = [name for name, _, j in column_names(da) if j == 0]
    values = gdf[first].to_numpy(dtype="float64")
    edges = class_breaks(values)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (None, None)
    geometry = "line" if gdf.geom_type.str.contains("LineString").any() else "polygon"
    styles = {layer: vector_qml(edges, first[0], geometry=geometry, low=low, high=high)}
    step = da.dims[0]
    if step in ("lead", "time"):
        field = "valid_time" if step == "lead" and "valid_time" in da.coords else None
        field = "time" if step == "time" else field
        axis = da[step].values
        minutes = pd.Timedelta(axis[1] - axis[0]).total_seconds() / 60 if len(axis) > 1 else 0
        band = str(da["band"].values[0])
        styles[f"{layer}_by_time"] = vector_qml(
            edges,
            band,
            geometry=geometry,
            low=low,
            high=high,
            time_field=field,
            step_minutes=minutes,
        )
    return styles


def write_geopackage(
    gdf, path, *, layer: str | None = None, overwrite: bool = False, metadata: dict | None = None
) -> Path:
    """Write a GeoDataFrame to a GeoPackage (version 1.2) atomically (temp file + rename).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false (the whole file is replaced when true).
    ExportError
        Wrong extension, or a layer without CRS.
    """
    path = check_output(path, overwrite=overwrite, suffixes=(".gpkg",))
    if gdf.crs is None:
        raise MissingCRSError(f"{path}: layer has no CRS; set it with gdf.set_crs('EPSG:...')")
    return _write_layers(path, [(gdf, layer or path.stem, metadata)], overwrite=overwrite)


def utc_times(values, zone: str | None = None) -> pd.DatetimeIndex:
    """Timezone-aware UTC times from naive ones (UTC, or wall-clock times of ``zone``) or aware ones."""
    index = pd.DatetimeIndex(np.atleast_1d(values))
    if index.tz is None:
        index = index.tz_localize(
            zone or "UTC", ambiguous=np.ones(len(index), bool), nonexistent="shift_forward"
        )
    return index.tz_convert("UTC")


def _by_time(wide, da: xr.DataArray):
    """The long form of a wide layer: one feature per cell (or segment) and step, a time column
    (``valid_time`` and ``lead_minutes`` for a forecast, ``time`` for observations) and one value
    column per band, so that QGIS's temporal controller can animate it."""
    import geopandas as gpd

    names = column_names(da)
    bands = [str(b) for b in da["band"].values]
    base = wide.drop(columns=[name for name, _, _ in names])
    step = da.dims[0]
    zone = da.attrs.get("timezone")
    pieces = []
    for i in range(da.sizes[step]):
        part = base.copy()
        if step == "lead":
            part["lead_minutes"] = pd.Timedelta(da["lead"].values[i]).total_seconds() / 60
            if "valid_time" in da.coords:
                part["valid_time"] = utc_times(da["valid_time"].values[i], zone)[0]
        elif step == "time":
            part["time"] = utc_times(da["time"].values[i], zone)[0]
        for name, k, j in names:
            if k == i:
                part[bands[j]] = wide[name].to_numpy()
        pieces.append(part)
    return gpd.GeoDataFrame(
        pd.concat(pieces, ignore_index=True), geometry=wide.geometry.name, crs=wide.crs
    )


def to_geopackage(
    da: xr.DataArray,
    path,
    *,
    layer: str | None = None,
    segments=None,
    overwrite: bool = False,
    style: bool = True,
) -> Path:
    """Write a grid array as GeoPackage cell polygons (or road segments): one wide layer with a
    column per lead / time, and its long form with a time column for QGIS's temporal controller.

    The wide layer (``cells`` or ``segments``) has columns named ``lead_30min`` (or
    ``t_20240501T083000`` for observed times), prefixed with the band name when there are
    several bands (``inflow_lead_30min``); cells carry ``row`` and ``col``. The long layer
    (``cells_by_time`` or ``segments_by_time``) holds one feature per cell and step with a UTC
    ``valid_time`` (and ``lead_minutes``; ``time`` for observations) and one column per band;
    in QGIS: *Layer Properties ▸ Temporal ▸ Single Field with Date/Time* on ``valid_time``.
    The layers' metadata hold ``issued``, ``model`` and ``units``. The file is GeoPackage 1.2.

    Parameters
    ----------
    da : xarray.DataArray
        ``(lead|time, band, y, x)`` or ``(band, y, x)`` with CRS and transform.
    path : path-like
        ``.gpkg`` output.
    layer : str, optional
        Name of the wide layer (default ``"cells"`` or ``"segments"``); the long one adds
        ``_by_time``.
    segments : geopandas.GeoDataFrame, optional
        Road segments: write the length-weighted mean along each segment instead of cells.
    overwrite : bool
        Replace an existing file.
    style : bool
        Store default QGIS styles in the file's ``layer_styles`` table, which QGIS applies when a
        layer is opened: graduated colours of the wide layer's first column and of the long
        layer's first band, in the classes and colours of :func:`to_geotiff`'s style. The long
        layer's style also sets the temporal controller on ``valid_time``; QGIS (3.22 at least)
        applies that part on *Style ▸ Load Style*, not when it loads the default style itself
        (qgis/QGIS#42223).

    Raises
    ------
    OutputExistsError, ExportError, MissingCRSError, GridError, VectorError
    """
    path = check_output(path, overwrite=overwrite, suffixes=(".gpkg",))
    da = as_4d(da)
    grid = check_georeference(da)
    if segments is not None:
        gdf = aggregate_to_segments(da, segments)
        layer = layer or "segments"
    else:
        gdf = grid.cells()
        values = np.asarray(da.values, dtype="float64")
        for name, i, j in column_names(da):
            gdf[name] = values[i, j].ravel()
        layer = layer or "cells"
    meta = {
        k: v
        for k, v in da.attrs.items()
        if k in ("issued", "model", "units", "cadence", "timezone")
    }
    if meta.get("issued"):
        meta["issued"] = iso_time(meta["issued"], da.attrs.get("timezone"))
    layers = [(gdf, layer, meta)]
    if da.dims[0] in ("lead", "time"):
        layers.append((_by_time(gdf, da), f"{layer}_by_time", meta))
    styles = _gpkg_styles(gdf, da, layer) if style else None
    return _write_layers(path, layers, overwrite=overwrite, styles=styles)
