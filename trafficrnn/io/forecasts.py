"""Read a forecast back: ``(lead, band, y, x)`` with CRS and transform, from a DataArray, a GeoTIFF
written by :func:`~trafficrnn.io.to_geotiff` (leads in its band tags or descriptions) or a NetCDF
written by :func:`~trafficrnn.io.to_netcdf`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.errors import RasterioError

from trafficrnn.errors import ConfigError, InputFileError, MissingCRSError
from trafficrnn.grid import Grid
from trafficrnn.io.export import as_4d, check_georeference
from trafficrnn.io.netcdf import read_netcdf

__all__ = ["read_forecast", "FORECAST_SUFFIXES"]

#: the extensions :func:`read_forecast` reads
FORECAST_SUFFIXES = (".tif", ".tiff", ".nc", ".nc4")


def read_forecast(source) -> xr.DataArray:
    """A forecast ``(lead, band, y, x)`` with CRS and transform, from a DataArray or a file.

    Parameters
    ----------
    source : xarray.DataArray, or path of a ``.tif`` / ``.tiff`` / ``.nc``
        A forecast as ``TrafficForecaster.predict`` returns it, or a file written by
        ``trafficrnn forecast`` / ``to_geotiff`` / ``to_netcdf`` (GeoTIFF bands carry the lead in
        their ``lead`` tag or their description, ``lead +5min, valid ...``).

    Raises
    ------
    MissingCRSError
        The file or array has no CRS.
    InputFileError
        A missing file, another format, or a file that is not a forecast (no leads).
    ConfigError
        An array without a ``lead`` dim.
    GridError
        A rotated or inconsistent transform.
    """
    if isinstance(source, xr.DataArray):
        if "lead" not in source.dims:
            raise ConfigError(
                f"the array has dims {source.dims}: a forecast needs a lead dim, as in the "
                "(lead, band, y, x) forecast that TrafficForecaster.predict returns"
            )
        da = as_4d(source.transpose("lead", ...))
        check_georeference(da, "forecast")
        return da
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"cannot read a forecast from a {type(source).__name__}: pass a forecast DataArray "
            "or the path of a forecast .tif or .nc"
        )
    path = Path(source)
    if path.suffix.lower() not in FORECAST_SUFFIXES:
        raise InputFileError(
            f"{path}: extension {path.suffix or '(none)'!r} is not a forecast format; expected "
            f"one of {', '.join(FORECAST_SUFFIXES)} (as `trafficrnn forecast --out` writes)"
        )
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    da = _read_netcdf(path) if path.suffix.lower().startswith(".nc") else _read_geotiff(path)
    check_georeference(da, str(path))
    return da


def _no_crs(path: Path, found: str) -> MissingCRSError:
    return MissingCRSError(
        f"{path} has no CRS ({found}): nothing can place it on a map. Write the forecast with "
        "its CRS (da.rio.write_crs('EPSG:...') before to_geotiff / to_netcdf), or set it on the "
        f"file with `gdal_edit.py -a_srs EPSG:<code> {path}`"
    )


def _read_netcdf(path: Path) -> xr.DataArray:
    da = read_netcdf(path)
    if da.rio.crs is None:
        raise _no_crs(path, "no grid_mapping variable with a crs_wkt")
    if "lead" not in da.dims:
        raise InputFileError(
            f"{path} is not a forecast: its dims are {da.dims}, with no lead (forecast_period); "
            "expected a NetCDF that `trafficrnn forecast --out forecast.nc` or "
            "to_netcdf(forecast) wrote"
        )
    return da


def _lead_of(tags: dict, description: str | None) -> pd.Timedelta | None:
    """The lead of a band: its ``lead`` tag (ISO 8601 duration), or its description ``lead +5min``."""
    try:
        if tags.get("lead"):
            return pd.Timedelta(tags["lead"])
    except ValueError:
        pass
    match = re.match(r"lead \+([0-9.]+)\s*min", description or "")
    return pd.Timedelta(minutes=float(match.group(1))) if match else None


def _naive(stamp: str, zone: str | None) -> pd.Timestamp:
    """The package's naive time (UTC, or wall-clock in ``zone``) of an ISO stamp."""
    ts = pd.Timestamp(stamp)
    return ts if ts.tzinfo is None else ts.tz_convert(zone or "UTC").tz_localize(None)


def _read_geotiff(path: Path) -> xr.DataArray:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                found = "no spatial reference" + (
                    "" if src.transform.is_identity else f"; a transform {tuple(src.transform)[:6]}"
                )
                raise _no_crs(path, found)
            band_tags = [src.tags(i) for i in range(1, src.count + 1)]
            descriptions = list(src.descriptions)
            tags, crs, transform = src.tags(), src.crs, src.transform
            values = src.read(masked=True).astype("float32").filled(np.nan)
    except RasterioError as exc:
        raise InputFileError(f"{path} is not a readable GeoTIFF ({exc})") from None
    leads = [_lead_of(t, d) for t, d in zip(band_tags, descriptions)]
    if any(lead is None for lead in leads):
        k = next(i for i, lead in enumerate(leads) if lead is None)
        raise InputFileError(
            f"{path} is not a forecast: band {k + 1} of {len(leads)} names no lead (description "
            f"{descriptions[k]!r}, tags {band_tags[k]}); expected a GeoTIFF that `trafficrnn "
            "forecast --out forecast.tif` or to_geotiff(forecast) wrote, whose bands carry a lead "
            "tag (lead=PT5M) or a description 'lead +5min, ...'"
        )
    order = list(dict.fromkeys(leads))
    bands = [t.get("band", "value") for t in band_tags]
    names = list(dict.fromkeys(bands))
    layout = [(lead, name) for lead in order for name in names]  # lead-major, as to_geotiff writes
    if list(zip(leads, bands)) != layout:
        raise InputFileError(
            f"{path}: {len(leads)} bands for {len(order)} lead(s) × {len(names)} band(s) "
            f"{names}; expected one band per lead and band, as to_geotiff writes"
        )
    zone = tags.get("timezone")
    da = xr.DataArray(
        values.reshape(len(order), len(names), *values.shape[1:]),
        dims=("lead", "band", "y", "x"),
        coords={"lead": pd.TimedeltaIndex(order), "band": names},
    )
    valid = [t.get("valid_time") for t in band_tags[:: len(names)]]
    if all(valid):
        da = da.assign_coords(valid_time=("lead", [_naive(v, zone) for v in valid]))
    da.attrs = {k: tags[k] for k in ("issued", "model", "units", "timezone") if tags.get(k)}
    if da.attrs.get("issued"):  # naive, as predict and read_netcdf give it
        da.attrs["issued"] = _naive(da.attrs["issued"], zone).isoformat()
    return Grid(crs, transform, values.shape[1:]).attach(da)
