"""CF-NetCDF out and back: a variable per band, a grid_mapping with the CRS, UTC time axes (valid
time, lead). The CF dataset is built and read by :func:`cf_dataset` / :func:`from_cf_dataset`,
which the Zarr writer shares."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from trafficrnn._version import __version__
from trafficrnn.errors import ExportError, InputFileError
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.io.export import as_4d, check_georeference, iso_time, utc_times


def _var_name(band: str) -> str:
    name = re.sub(r"\W", "_", str(band))
    return name if name and not name[0].isdigit() else f"band_{name}"


#: unit strings UDUNITS reads as they are (symbols with exponents: "m", "m s-1", "km h-1", "1");
#: anything else ("vehicles per cell", "trips per 30 min") is a count: written as "1" with the text
#: in long_name and units_description
_UDUNITS = re.compile(r"(1|%|[A-Za-z]{1,3}(\^?-?\d+)?( [A-Za-z]{1,3}(\^?-?\d+)?)*)")


def _cf_units(text: str) -> str:
    return text if _UDUNITS.fullmatch(text) and " per " not in f" {text} " else "1"


def _time_encoding(times: pd.DatetimeIndex, since: pd.Timestamp) -> dict:
    """CF time units in whole minutes (seconds when needed) since ``since``, in UTC (``...Z``)."""
    whole = ((times - since) % pd.Timedelta("1min") == pd.Timedelta(0)).all()
    unit = "minutes" if whole else "seconds"
    return {
        "units": f"{unit} since {since:%Y-%m-%dT%H:%M:%S}Z",
        "calendar": "proleptic_gregorian",
        "dtype": "int64",
    }


def _forecast_axes(
    ds: xr.Dataset, da: xr.DataArray, zone: str | None, encoding: dict
) -> xr.Dataset:
    """``lead`` → CF forecast layout: dim ``time`` (valid time, UTC), auxiliary ``forecast_period``
    (lead) and scalar ``forecast_reference_time`` (issue time)."""
    valid = utc_times(da["valid_time"].values, zone).tz_localize(None)
    ds = ds.swap_dims({"lead": "valid_time"}).rename(
        {"valid_time": "time", "lead": "forecast_period"}
    )
    ds = ds.assign_coords(time=("time", valid.values))
    ds["time"].attrs.update(standard_name="time", long_name="valid time", axis="T")
    ds["forecast_period"].attrs.update(standard_name="forecast_period", long_name="lead time")
    since = valid[0]
    if da.attrs.get("issued"):
        since = utc_times(pd.Timestamp(da.attrs["issued"]), zone).tz_localize(None)[0]
        ds = ds.assign_coords(forecast_reference_time=since.to_datetime64())
        ds["forecast_reference_time"].attrs.update(
            standard_name="forecast_reference_time", long_name="issue time"
        )
        encoding["forecast_reference_time"] = _time_encoding(pd.DatetimeIndex([since]), since)
    encoding["time"] = _time_encoding(valid, since)
    encoding["forecast_period"] = {
        "units": "minutes" if encoding["time"]["units"].startswith("minutes") else "seconds",
        "dtype": "int64",
    }
    return ds


def cf_dataset(da: xr.DataArray) -> tuple[xr.Dataset, dict]:
    """The CF-1.8 dataset of a grid array, and its encoding (time units, fill values), as
    :func:`to_netcdf` and :func:`~trafficrnn.io.to_zarr` write it (see :func:`to_netcdf`).

    Raises
    ------
    MissingCRSError, GridError
        ``da`` has no CRS or no usable transform.
    """
    if "quantile" in da.dims:  # a quantile forecast: a quantile dimension on every variable
        from trafficrnn.io.quantiles import cf_quantile_dataset

        return cf_quantile_dataset(da, cf_dataset)
    da = as_4d(da)
    grid = check_georeference(da)
    step = da.dims[0]
    units = str(da.attrs.get("units", "1"))
    cf_units = _cf_units(units)
    zone = da.attrs.get("timezone")
    ds = xr.Dataset()
    for band in da["band"].values:
        var = (
            da.sel(band=band, drop=True).drop_vars("spatial_ref", errors="ignore").astype("float32")
        )
        var.attrs = {
            "units": cf_units,
            "long_name": str(band) if cf_units == units else f"{band} ({units})",
        }
        if cf_units != units:
            var.attrs["units_description"] = units
        ds[_var_name(band)] = var
    encoding = {name: {"_FillValue": np.float32(np.nan)} for name in ds.data_vars}
    if step == "lead" and "valid_time" in ds.coords:
        ds = _forecast_axes(ds, da, zone, encoding)
    elif step == "lead":  # no valid times to put on a time axis: an index of leads
        ds = ds.rename({"lead": "lead_time"})
        ds["lead_time"].attrs.update(standard_name="forecast_period", long_name="lead time")
    elif step == "time":
        times = utc_times(da["time"].values, zone).tz_localize(None)
        ds = ds.assign_coords(time=("time", times.values))
        ds["time"].attrs.update(standard_name="time", long_name="time", axis="T")
        encoding["time"] = _time_encoding(times, times[0])
    elif step == "step":
        ds = ds.squeeze("step", drop=True)
    ds = (
        ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform).rio.write_coordinate_system()
    )
    encoding.update(
        {axis: {"_FillValue": None} for axis in ("y", "x")}
    )  # CF: coordinates have no fill value
    for name in ds.data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    attrs = {
        k: (v if isinstance(v, (str, int, float, np.number)) else "; ".join(map(str, v)))
        for k, v in da.attrs.items()
        if k not in ("units", "_FillValue") and v is not None
    }
    if attrs.get("issued"):
        attrs["issued"] = iso_time(attrs["issued"], zone)
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": "trafficrnn " + ("forecast" if step == "lead" else "grid"),
        "source": f"trafficrnn {__version__}",
        "band_names": ",".join(map(str, da["band"].values)),
        "band_variables": ",".join(_var_name(b) for b in da["band"].values),
        **attrs,
    }
    if "source" in ds.coords:
        ds = ds.assign_coords(source=ds["source"].astype(str))
    return ds, encoding


def to_netcdf(da: xr.DataArray, path, *, overwrite: bool = False) -> Path:
    """Write a grid array as CF-1.8 NetCDF that GIS tools and xarray + rioxarray read back.

    Each band becomes a variable (``density``, or ``inflow`` / ``outflow``) with
    ``grid_mapping = "spatial_ref"`` (CRS WKT and GeoTransform). A forecast gets dims
    ``(time, y, x)`` where ``time`` is the valid time, with the auxiliary coordinate
    ``forecast_period(time)`` (the lead) and the scalar ``forecast_reference_time`` (the issue
    time); observed stacks get ``(time, y, x)``. Times are written in UTC (``minutes since
    ...Z``): naive times are read as UTC, or as wall-clock times of ``attrs["timezone"]``.
    Units go on each variable in UDUNITS form; a count such as ``vehicles per cell`` is written
    ``units = "1"`` with the text in ``long_name`` and ``units_description``. A quantile forecast
    ``(quantile, lead, band, y, x)`` gets a leading ``quantile`` dimension on every variable (see
    :func:`~trafficrnn.io.quantiles.cf_quantile_dataset`). ``gdalinfo`` reads
    the file without warnings and a CF checker (``cfchecks``) finds no error or warning.

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
    ds, encoding = cf_dataset(da)
    for name in ds.data_vars:
        encoding[name].update(zlib=True, complevel=4)
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
        with xr.open_dataset(
            path, engine="netcdf4", decode_coords="all", decode_timedelta=True
        ) as ds:
            ds = ds.load()
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path} is not a readable NetCDF ({exc})") from None
    return from_cf_dataset(ds, path, "to_netcdf")


def from_cf_dataset(ds: xr.Dataset, path, writer: str) -> xr.DataArray:
    """The ``(time|lead, band, y, x)`` array of a dataset that :func:`cf_dataset` built and
    ``writer`` wrote to ``path``, with CRS and transform.

    Raises
    ------
    InputFileError
        The dataset lacks the expected variables.
    """
    names = str(ds.attrs.get("band_names", "")).split(",") if ds.attrs.get("band_names") else None
    variables = (
        str(ds.attrs.get("band_variables", "")).split(",")
        if ds.attrs.get("band_variables")
        else None
    )
    if not variables:
        variables = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
        names = variables
    missing = [v for v in variables if v not in ds.data_vars]
    if missing or not variables:
        raise InputFileError(
            f"{path}: variables {missing or 'with dims (y, x)'} not found; expected a file "
            f"written by {writer}"
        )
    crs, transform = ds.rio.crs, ds.rio.transform()
    zone = ds.attrs.get("timezone")
    if zone and "time" in ds.coords and _declares_zone(ds["time"].encoding.get("units", "")):
        # UTC on file; the package's naive times are wall-clock times of the stack's zone
        ds = ds.assign_coords(time=("time", _wall_clock(ds["time"].values, zone)))
    da = xr.concat([ds[v].drop_vars("spatial_ref", errors="ignore") for v in variables], dim="band")
    da = da.assign_coords(band=names)
    if "forecast_period" in da.coords and "time" in da.dims:
        da = da.swap_dims({"time": "forecast_period"}).rename(
            {"time": "valid_time", "forecast_period": "lead"}
        )
        da = da.assign_coords(lead=da["lead"].values.astype("timedelta64[ns]"))
    if "lead_time" in da.dims:
        da = da.rename({"lead_time": "lead"})
    lead_dims = [d for d in da.dims if d not in ("band", "y", "x")]
    da = da.transpose(*lead_dims, "band", "y", "x")
    if "forecast_reference_time" in da.coords:
        da = da.drop_vars("forecast_reference_time")
    da.attrs = {
        k: v
        for k, v in ds.attrs.items()
        if k not in ("Conventions", "title", "source", "band_names", "band_variables")
    }
    if da.attrs.get("issued"):
        da.attrs["issued"] = pd.Timestamp(
            _wall_clock([pd.Timestamp(da.attrs["issued"])], zone)[0]
        ).isoformat()
    first = ds[variables[0]].attrs
    da.attrs["units"] = first.get("units_description", first.get("units", "1"))
    da.encoding = {}
    for coord in da.coords.values():
        coord.attrs.pop("dtype", None)  # xarray's note on how it stored a timedelta
    return da.rio.write_crs(crs).rio.write_transform(transform)


def _declares_zone(units: str) -> bool:
    """Whether CF time units spell out their zone (``...Z``, ``... UTC``, ``...+00:00``)."""
    reference = units.partition(" since ")[2].strip()
    return reference.endswith(("Z", "UTC")) or bool(
        re.search(r"[+-]\d{1,2}(:?\d{2})?$", reference[10:])
    )


def _wall_clock(values, zone: str | None) -> np.ndarray:
    """Naive times as the package keeps them: wall-clock in ``zone`` (UTC without one)."""
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.tz_convert(zone or "UTC").tz_localize(None).as_unit("ns").values
