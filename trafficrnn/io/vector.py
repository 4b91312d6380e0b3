"""Vector layers onto the grid: vehicle points → counts per cell and time, road lines → static layers, grid → road segments."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, InputFileError, VectorError
from trafficrnn.grid import Grid

log = logging.getLogger(__name__)

_GEOMETRIES = {"point": ("Point",), "line": ("LineString", "MultiLineString"), None: None}


def read_vectors(path, *, layer: str | None = None, geometry: str | None = None):
    """Read a vector layer (vehicles, roads) from a GeoPackage or any file GDAL reads, with clear errors.

    Parameters
    ----------
    path : path-like
        A GeoPackage (or shapefile, GeoJSON...).
    layer : str, optional
        Layer to read; required when the file holds several layers.
    geometry : {"point", "line"}, optional
        Refuse a layer holding other geometry types (empty geometries are dropped first).

    Returns
    -------
    geopandas.GeoDataFrame
        The layer with its CRS, at least one feature.

    Raises
    ------
    InputFileError
        Missing or unreadable file, or a file GDAL does not read as vectors.
    VectorError
        No layer, an unknown or ambiguous layer, an empty layer, no CRS, unusable geometries.
    """
    if geometry not in _GEOMETRIES:
        raise ConfigError(f"geometry={geometry!r} is invalid: expected 'point', 'line' or None")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            f"{path} does not exist (or is not a file); expected a GeoPackage such as vehicles.gpkg"
        )
    gdf = _read_layer(path, layer)
    what = f"{path}" + (f" layer {layer!r}" if layer else "")
    _check_read_layer(gdf, what, geometry)
    return gdf


def _pick_layer(path: Path, layer: str | None) -> str:
    """The layer of ``path`` to read: ``layer``, or its only layer."""
    import pyogrio

    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    if not layers:
        raise VectorError(
            f"{path} holds no vector layer; expected a GeoPackage with a points or lines layer"
        )
    if layer is None and len(layers) > 1:
        raise VectorError(
            f"{path} holds {len(layers)} layers ({', '.join(layers[:10])}); pick one with layer=..."
        )
    if layer is not None and layer not in layers:
        raise VectorError(f"{path} has no layer {layer!r}; its layers: {', '.join(layers[:10])}")
    return layer or layers[0]


def _read_layer(path: Path, layer: str | None):
    """Read one layer of ``path``, any failure of a corrupt file turned into an InputFileError."""
    import geopandas as gpd
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL chatter about odd files
            return gpd.read_file(path, layer=_pick_layer(path, layer), engine="pyogrio")
    except (VectorError, InputFileError):
        raise
    except (
        DataSourceError,
        DataLayerError,
        pyogrio.errors.FieldError,
        pyogrio.errors.GeometryError,
        pyogrio.errors.FeatureError,
        pyogrio.errors.CRSError,
        OSError,
        ValueError,
        TypeError,
        RuntimeError,
        MemoryError,
        OverflowError,
        UnicodeError,
    ) as exc:
        # GDAL, pyogrio, shapely and pandas raise their own types for corrupt files
        raise InputFileError(
            f"{path} is not a readable vector file ({type(exc).__name__}: {str(exc)[:200]}); "
            "expected a GeoPackage written by GIS software (QGIS, geopandas.to_file)"
        ) from None


def _check_read_layer(gdf, what: str, geometry: str | None) -> None:
    """Refuse a read layer without geometry, features, CRS or usable geometries of the kind asked."""
    import geopandas as gpd
    import shapely.errors

    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise VectorError(
            f"{what} has no geometry column; expected points (vehicles) or lines (roads)"
        )
    if len(gdf) == 0:
        raise VectorError(
            f"{what} is empty (0 features); expected at least one "
            f"{geometry or 'feature'}: check the export or the layer name"
        )
    if gdf.crs is None:
        raise VectorError(
            f"{what} has no CRS; expected a layer with a CRS: assign one in QGIS or with "
            "gdf.set_crs('EPSG:...')"
        )
    try:
        valid = ~(gdf.geometry.isna() | gdf.geometry.is_empty)
        types = set(gdf.geom_type[valid].unique())
    except (shapely.errors.ShapelyError, ValueError, TypeError) as exc:  # corrupt geometries
        raise VectorError(
            f"{what} holds unreadable geometries ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if not valid.any():
        raise VectorError(
            f"{what} holds only empty geometries; expected {geometry or 'geometries'}"
        )
    allowed = _GEOMETRIES[geometry]
    if allowed and types - set(allowed):
        raise VectorError(
            f"{what} holds {', '.join(sorted(map(str, types)))} geometries; expected "
            f"{' or '.join(allowed)}: pick the right layer with layer=..."
        )


def _check_layer(gdf, what: str, geom_types: tuple[str, ...], grid: Grid):
    import geopandas as gpd

    if not isinstance(gdf, gpd.GeoDataFrame):
        raise VectorError(
            f"{what} must be a GeoDataFrame (read it with geopandas.read_file), got {type(gdf).__name__}"
        )
    if gdf.crs is None:
        raise VectorError(
            f"{what} has no CRS: expected a layer with a CRS; set it with gdf.set_crs('EPSG:...')"
        )
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    types = set(gdf.geom_type.unique())
    if types - set(geom_types):
        raise VectorError(
            f"{what} holds {', '.join(sorted(types))} geometries; expected {' or '.join(geom_types)}"
        )
    if gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    return gdf


def rasterize_points(
    points,
    grid: Grid,
    *,
    time_col: str = "time",
    freq=None,
    times=None,
    band: str = "density",
    weight_col: str | None = None,
) -> xr.DataArray:
    """Count points per grid cell and time bin.

    Parameters
    ----------
    points : geopandas.GeoDataFrame
        Point geometries with a time column; any CRS (reprojected to the grid's).
    grid : Grid
        Target grid.
    time_col : str
        Column holding the timestamp of each point.
    freq : str or pandas.Timedelta, optional
        Bin width (``"5min"``). Without it each distinct timestamp is its own bin.
    times : sequence of timestamps, optional
        Bin starts (each bin is ``[t, t + freq)``, the last one as wide as the step before);
        use the image stack's ``time`` coordinate so target and images align.
    band : str
        Name of the output band.
    weight_col : str, optional
        Sum this column instead of counting.

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` float32 counts on the grid, CRS and transform set,
        ``attrs["units"] = "vehicles per cell"``.

    Raises
    ------
    VectorError
        No CRS, non-point geometries, a missing or invalid time column.
    """
    points = _check_layer(points, "points", ("Point",), grid)
    stamps = _point_times(points, time_col)
    if len(points) == 0 and times is None:
        raise VectorError(
            "points layer is empty: no time bins can be made from 0 points; pass times=... "
            "(e.g. images.time) to get zero counts for those times, or check the layer"
        )
    bins, t_idx, t_ok = _time_bins(stamps, _bin_width(freq), times)
    xs, ys = points.geometry.x.to_numpy(), points.geometry.y.to_numpy()
    rows, cols = grid.index(xs, ys)
    inside = grid.contains(rows, cols)
    if (~inside).any():
        warnings.warn(
            f"{int((~inside).sum())} of {len(points)} points lie outside the grid and are not counted",
            stacklevel=2,
        )
    keep = inside & t_ok
    weights = (
        np.ones(len(points)) if weight_col is None else points[weight_col].to_numpy(dtype=float)
    )
    counts = np.zeros((len(bins), *grid.shape), dtype=np.float64)
    np.add.at(counts, (t_idx[keep], rows[keep], cols[keep]), weights[keep])
    da = xr.DataArray(
        counts.astype("float32")[:, None],
        dims=("time", "band", "y", "x"),
        coords={"time": bins, "band": [band]},
        name=band,
    )
    da = grid.attach(da)
    da.attrs["units"] = "vehicles per cell" if weight_col is None else weight_col
    return da


def _point_times(points, time_col: str) -> pd.DatetimeIndex:
    """The time of each point from ``time_col``, as naive UTC timestamps."""
    if time_col not in points.columns:
        raise VectorError(
            f"points have no column {time_col!r} (columns: {', '.join(map(str, points.columns))}); pass time_col=..."
        )
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(points[time_col], format="mixed"))
    except (ValueError, TypeError) as exc:
        raise VectorError(
            f"points column {time_col!r} cannot be read as timestamps ({exc})"
        ) from None
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    if stamps.hasnans:
        raise VectorError(
            f"{int(stamps.isna().sum())} point(s) have no time in column {time_col!r}; drop them or fill the time"
        )
    return stamps


def _bin_width(freq) -> pd.Timedelta | None:
    """``freq`` as a positive Timedelta, or None without it."""
    try:
        step = pd.Timedelta(freq) if freq is not None else None
    except (ValueError, TypeError):
        raise ConfigError(
            f"freq={freq!r} is invalid: expected a positive duration such as '5min'"
        ) from None
    if step is not None and (step is pd.NaT or step <= pd.Timedelta(0)):
        raise ConfigError(f"freq={freq!r} is invalid: expected a positive duration such as '5min'")
    return step


def _time_bins(
    stamps: pd.DatetimeIndex, step: pd.Timedelta | None, times
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """The time bin starts (``times``, or made from the stamps), each stamp's bin and whether it is in one."""
    if times is not None:
        bins = pd.DatetimeIndex(pd.to_datetime(list(times), format="mixed")).as_unit("ns")
        if len(bins) == 0 or not bins.is_monotonic_increasing:
            raise ConfigError("times= must be a non-empty, increasing sequence of bin starts")
        if step is None:
            step = bins[-1] - bins[-2] if len(bins) > 1 else pd.Timedelta(0)
        ends = np.append(bins.asi8[1:], bins.asi8[-1] + step.value)
        t_idx = np.searchsorted(bins.asi8, stamps.as_unit("ns").asi8, side="right") - 1
        t_ok = (t_idx >= 0) & (stamps.as_unit("ns").asi8 < ends[np.clip(t_idx, 0, None)])
    else:
        labels = stamps.floor(step) if step is not None else stamps
        bins = pd.DatetimeIndex(np.unique(labels.as_unit("ns"))).as_unit("ns")
        if step is not None and len(bins):
            bins = pd.date_range(bins[0], bins[-1], freq=step).as_unit("ns")
        t_idx = np.searchsorted(bins.asi8, labels.as_unit("ns").asi8)
        t_ok = np.ones(len(stamps), dtype=bool)
    return bins, t_idx, t_ok


def rasterize_lines(
    lines, grid: Grid, *, attr: str | None = None, all_touched: bool = True
) -> xr.DataArray:
    """Burn lines (roads) into a static layer on the grid.

    Parameters
    ----------
    lines : geopandas.GeoDataFrame
        LineString / MultiLineString geometries; any CRS (reprojected to the grid's).
    grid : Grid
        Target grid.
    attr : str, optional
        Numeric column to burn (e.g. ``"lanes"``): each cell gets the largest value of the
        lines crossing it. Without it, a 0/1 road mask.
    all_touched : bool
        Burn every cell a line touches (default), not only cells whose centre it covers.

    Returns
    -------
    xarray.DataArray
        ``(band, y, x)`` float32 with band ``[attr or "road"]``, CRS and transform set.

    Raises
    ------
    VectorError
        No CRS, wrong geometry types, unknown or non-numeric ``attr``.
    """
    from rasterio.features import rasterize

    lines = _check_layer(lines, "lines", ("LineString", "MultiLineString"), grid)
    if attr is not None:
        if attr not in lines.columns:
            raise VectorError(
                f"lines have no column {attr!r} (columns: {', '.join(map(str, lines.columns))})"
            )
        try:
            values = lines[attr].to_numpy(dtype=float)
        except (ValueError, TypeError):
            raise VectorError(
                f"lines column {attr!r} is not numeric; pick a numeric column such as lanes"
            ) from None
        order = np.argsort(values, kind="stable")  # larger values are burnt last and win
        shapes = [(lines.geometry.iloc[i], values[i]) for i in order]
    else:
        shapes = [(g, 1.0) for g in lines.geometry]
    burnt = np.zeros(grid.shape, dtype="float32")
    if shapes:
        burnt = rasterize(
            shapes,
            out_shape=grid.shape,
            transform=grid.transform,
            fill=0.0,
            all_touched=all_touched,
            dtype="float32",
        )
    name = attr or "road"
    da = xr.DataArray(burnt[None], dims=("band", "y", "x"), coords={"band": [name]}, name=name)
    return grid.attach(da)


def lead_labels(da: xr.DataArray) -> list[str]:
    """Column-friendly labels of the first dim of a grid array: ``lead_30min`` or ``t_20240501T0830``."""
    dim = da.dims[0]
    if dim == "lead":
        labels = []
        for lead in pd.to_timedelta(da["lead"].values):
            minutes = lead.total_seconds() / 60
            labels.append(f"lead_{minutes:g}min")
        return labels
    if dim == "time":
        return [f"t_{pd.Timestamp(t):%Y%m%dT%H%M%S}" for t in da["time"].values]
    return [f"{dim}_{v}" for v in da[dim].values]


def column_names(da: xr.DataArray) -> list[tuple[str, int, int]]:
    """``(name, i_lead, i_band)`` for each column of a ``(lead|time, band, y, x)`` array."""
    from trafficrnn.io.quantiles import quantile_coords

    labels = lead_labels(da)
    bands = [str(b) for b in da["band"].values]
    levels = quantile_coords(da)
    if levels is not None:  # a quantile forecast: lead_15min_q10, or inflow_lead_15min_q10
        from trafficrnn.estimation.calibration import quantile_label

        several = len(set(levels[1])) > 1
        return [
            (
                f"{src}_{label}_{quantile_label(q)}" if several else f"{label}_{quantile_label(q)}",
                i,
                j,
            )
            for i, label in enumerate(labels)
            for j, (q, src) in enumerate(zip(*levels))
        ]
    if len(bands) == 1:
        return [(label, i, 0) for i, label in enumerate(labels)]
    return [
        (f"{band}_{label}", i, j) for i, label in enumerate(labels) for j, band in enumerate(bands)
    ]


def aggregate_to_segments(grid_da: xr.DataArray, segments):
    """Length-weighted mean of a grid layer along each road segment.

    Parameters
    ----------
    grid_da : xarray.DataArray
        ``(lead|time, band, y, x)`` on a grid (CRS and transform set), e.g. a forecast.
    segments : geopandas.GeoDataFrame
        Road segments (LineStrings) in any CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        The segments (original columns, geometry and CRS) with one column per lead (and band):
        the mean of the cells each segment crosses, weighted by the length inside each cell;
        NaN for segments outside the grid.

    Raises
    ------
    VectorError
        Segments without CRS or of the wrong geometry type.
    GridError
        ``grid_da`` is not a ``(lead|time, band, y, x)`` array with CRS.
    """
    import geopandas as gpd

    if grid_da.ndim != 4 or grid_da.dims[1:] != ("band", "y", "x"):
        raise GridError(
            f"aggregate_to_segments expects (lead|time, band, y, x), got dims {grid_da.dims}"
        )
    grid = Grid.from_dataarray(grid_da)
    lines = _check_layer(segments, "segments", ("LineString", "MultiLineString"), grid)
    cells = grid.cells()
    pieces = gpd.overlay(
        gpd.GeoDataFrame(
            {"_seg": np.arange(len(lines))}, geometry=lines.geometry.values, crs=grid.crs
        ),
        cells,
        how="intersection",
        keep_geom_type=True,
    )
    values = np.asarray(grid_da.values, dtype=float)
    out = segments[~(segments.geometry.isna() | segments.geometry.is_empty)].copy()
    length = pieces.geometry.length.to_numpy()
    for name, i, j in column_names(grid_da):
        v = values[i, j, pieces["row"].to_numpy(), pieces["col"].to_numpy()]
        ok = np.isfinite(v) & (length > 0)
        num = np.bincount(pieces["_seg"][ok], weights=(v * length)[ok], minlength=len(lines))
        den = np.bincount(pieces["_seg"][ok], weights=length[ok], minlength=len(lines))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return out
