"""CF-NetCDF out and back: one variable per band, a grid_mapping variable with the CRS, time / lead_time / valid_time."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from trafficrnn._version import __version__
from trafficrnn.errors import ExportError, InputFileError
from trafficrnn.io._atomic import atomic_output, check_output
from trafficrnn.io.export import as_4d, check_georeference


def _var_name(band: str) -> str:
    name = re.sub(r"\W", "_", str(band))
    return name if name and not name[0].isdigit() else f"band_{name}"


def to_netcdf(da: xr.DataArray, path, *, overwrite: bool = False) -> Path:
    """Write a grid array as CF-1.8 NetCDF that GIS tools and xarray + rioxarray read back.

    Each band becomes a variable (``density``, or ``inflow`` / ``outflow``) with
    ``grid_mapping = "spatial_ref"`` (CRS WKT and GeoTransform); forecasts get dims
    ``(lead_time, y, x)`` with ``lead_time`` (standard_name ``forecast_period``),
    ``valid_time(lead_time)`` and scalar ``forecast_reference_time``; observed stacks get
    ``(time, y, x)``. Units go on each variable.

    Parameters
    ----------
    da : xarray.DataArray
        ``(time|lead, band, y, x)``, ``(band, y, x)`` or ``(y, x)`` with CRS and transform.
    path : path-like
        ``.nc`` output.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    OutputExistsError, ExportError, MissingCRSError, GridError
    """
    path = check_output(path, overwrite=overwrite, suffixes=(".nc", ".nc4"))
    da = as_4d(da)
    grid = check_georeference(da)
    step = da.dims[0]
    units = str(da.attrs.get("units", "1"))
    ds = xr.Dataset()
    for band in da["band"].values:
        var = da.sel(band=band, drop=True).drop_vars("spatial_ref", errors="ignore").astype("float32")
        var.attrs = {"units": units, "long_name": str(band)}
        ds[_var_name(band)] = var
    if step == "lead":
        ds = ds.rename({"lead": "lead_time"})
        ds["lead_time"].attrs.update(standard_name="forecast_period", long_name="lead time")
        if "valid_time" in ds.coords:
            ds["valid_time"].attrs.update(standard_name="time", long_name="valid time")
        if da.attrs.get("issued"):
            ds = ds.assign_coords(forecast_reference_time=pd.Timestamp(da.attrs["issued"]).to_datetime64())
            ds["forecast_reference_time"].attrs["standard_name"] = "forecast_reference_time"
    elif step == "time":
        ds["time"].attrs.update(standard_name="time", long_name="time")
    elif step == "step":
        ds = ds.squeeze("step", drop=True)
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform).rio.write_coordinate_system()
    for name in ds.data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    attrs = {k: (v if isinstance(v, (str, int, float, np.number)) else "; ".join(map(str, v)))
             for k, v in da.attrs.items() if k not in ("units", "_FillValue") and v is not None}
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": "trafficrnn " + ("forecast" if step == "lead" else "grid"),
        "source": f"trafficrnn {__version__}",
        "band_names": ",".join(map(str, da["band"].values)),
        "band_variables": ",".join(_var_name(b) for b in da["band"].values),
        **attrs,
    }
    encoding = {name: {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)} for name in ds.data_vars}
    if "source" in ds.coords:
        ds = ds.assign_coords(source=ds["source"].astype(str))
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ExportError(f"{path}: could not write NetCDF ({exc})") from exc
    return path


def read_netcdf(path) -> xr.DataArray:
    """Read a NetCDF written by :func:`to_netcdf` back into ``(time|lead, band, y, x)`` with CRS and transform.

    Raises
    ------
    InputFileError
        Missing or unreadable file, or a file without the expected variables.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    try:
        with xr.open_dataset(path, engine="netcdf4", decode_coords="all", decode_timedelta=True) as ds:
            ds = ds.load()
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path} is not a readable NetCDF ({exc})") from None
    names = str(ds.attrs.get("band_names", "")).split(",") if ds.attrs.get("band_names") else None
    variables = str(ds.attrs.get("band_variables", "")).split(",") if ds.attrs.get("band_variables") else None
    if not variables:
        variables = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
        names = variables
    missing = [v for v in variables if v not in ds.data_vars]
    if missing or not variables:
        raise InputFileError(f"{path}: variables {missing or 'with dims (y, x)'} not found; expected a file written by to_netcdf")
    crs, transform = ds.rio.crs, ds.rio.transform()
    da = xr.concat([ds[v].drop_vars("spatial_ref", errors="ignore") for v in variables], dim="band")
    da = da.assign_coords(band=names)
    if "lead_time" in da.dims:
        da = da.rename({"lead_time": "lead"})
    lead_dims = [d for d in da.dims if d not in ("band", "y", "x")]
    da = da.transpose(*lead_dims, "band", "y", "x")
    if "forecast_reference_time" in da.coords:
        da = da.drop_vars("forecast_reference_time")
    da.attrs = {k: v for k, v in ds.attrs.items()
                if k not in ("Conventions", "title", "source", "band_names", "band_variables")}
    da.attrs["units"] = ds[variables[0]].attrs.get("units", "1")
    da.encoding = {}
    return da.rio.write_crs(crs).rio.write_transform(transform)
