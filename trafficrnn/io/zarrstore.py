"""Zarr out and back: the CF layout of the NetCDF writer (a variable per band, ``grid_mapping`` with
the CRS WKT and GeoTransform, UTC valid time and lead) as a chunked, consolidated Zarr store that
``xarray.open_zarr`` + rioxarray and GDAL read (``_CRS``, GDAL's attribute, repeats the CRS on
each variable). A store is written under a temporary name and
renamed, so a half-written store never carries the final name.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from trafficrnn.errors import ExportError, InputFileError, MissingDependencyError
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.io.netcdf import cf_dataset, from_cf_dataset

#: Zarr format written: version 2 stores are read by every Zarr reader in use (GDAL >= 3.4,
#: zarr-python 2 and 3, xarray), version 3 only by recent ones
ZARR_FORMAT = 2
#: chunk side, in cells, of the y and x axes (one chunk per time step along the first axis)
CHUNK_CELLS = 256


def check_zarr():
    """The zarr package, or a clear error naming the extra that installs it."""
    try:
        import zarr
    except ImportError:
        raise MissingDependencyError(
            "writing or reading Zarr needs the zarr package: pip install 'trafficrnn[zarr]' "
            "(or pip install zarr)"
        ) from None
    return zarr


def to_zarr(da: xr.DataArray, path, *, overwrite: bool = False) -> Path:
    """Write a grid array (a forecast or an observed stack) as a CF Zarr store.

    The layout is :func:`~trafficrnn.io.to_netcdf`'s: one float32 variable per band with
    ``grid_mapping = "spatial_ref"``, a forecast on dims ``(time, y, x)`` with ``time`` the
    valid time (UTC), ``forecast_period`` the lead and ``forecast_reference_time`` the issue time.
    Chunks hold one time step and at most 256 × 256 cells; metadata are consolidated.

    Parameters
    ----------
    da : xarray.DataArray
        ``(time|lead, band, y, x)``, ``(band, y, x)`` or ``(y, x)`` with CRS and transform.
    path : path-like
        ``.zarr`` output folder.
    overwrite : bool
        Replace an existing store.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    ExportError, MissingCRSError, GridError
        Not a ``.zarr`` path; ``da`` without georeference; the store could not be written.
    MissingDependencyError
        The zarr package is not installed.
    """
    path = check_output(path, overwrite=overwrite, suffixes=(".zarr",))
    check_zarr()
    with atomic_output(path, overwrite=overwrite, directory=True) as tmp:
        write_store(da, tmp, where=path)
    return path


def write_store(da: xr.DataArray, target: Path, *, where: Path | None = None) -> None:
    """Write ``da`` (in memory or dask-backed, then computed block by block) as a CF Zarr store at
    ``target``; errors name ``where`` (default ``target``)."""
    ds, encoding = cf_dataset(da)
    # GDAL's Zarr driver reads the CRS from its own _CRS attribute (it does not follow grid_mapping)
    wkt = ds["spatial_ref"].attrs["crs_wkt"]
    for name in ds.data_vars:
        ds[name].attrs["_CRS"] = {"wkt": wkt}
        encoding[name]["chunks"] = tuple(
            min(CHUNK_CELLS, ds.sizes[d]) if d in ("y", "x") else 1 for d in ds[name].dims
        )
    try:
        ds.to_zarr(target, mode="w", encoding=encoding, consolidated=True, zarr_format=ZARR_FORMAT)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        raise ExportError(f"{where or target}: could not write Zarr ({exc})") from exc


def read_zarr(path) -> xr.DataArray:
    """Read a store written by :func:`to_zarr` back into ``(time|lead, band, y, x)`` with CRS and
    transform (loaded into memory).

    Raises
    ------
    InputFileError
        Missing or unreadable store, or one without the expected variables.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    check_zarr()
    try:
        with xr.open_zarr(path, decode_coords="all", decode_timedelta=True) as ds:
            ds = ds.load()
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"{path} is not a readable Zarr store ({exc})") from None
    return from_cf_dataset(ds, path, "to_zarr")
