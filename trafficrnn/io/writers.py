"""The writers of forecasts and grids, chosen by the output's extension: :func:`get_writer`.

Every writer is called as ``writer(da, path, *, overwrite=False, **options) -> pathlib.Path``; the
registry :data:`WRITERS` knows the extensions and each format's attributes without importing
rasterio, xarray or geopandas (the writers themselves are imported on first use).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trafficrnn.errors import UnknownFormatError
from trafficrnn.registry import Registry

__all__ = ["WRITERS", "get_writer", "write"]

#: extension -> writer. Attributes: ``label`` (the format, for messages), ``segments`` (takes road
#: segments, ``segments=``, instead of cells), ``streams`` (``forecast_large`` can stream windows into it)
WRITERS: Registry[Callable[..., Path]] = Registry(
    "file extension",
    error=UnknownFormatError,
    defaults={"label": None, "segments": False, "streams": False},
)
WRITERS.register_lazy(
    ".tif", "trafficrnn.io.export:to_geotiff", label="GeoTIFF (COG)", streams=True
)
WRITERS.register_lazy(
    ".tiff", "trafficrnn.io.export:to_geotiff", label="GeoTIFF (COG)", streams=True
)
WRITERS.register_lazy(".nc", "trafficrnn.io.netcdf:to_netcdf", label="NetCDF")
WRITERS.register_lazy(".zarr", "trafficrnn.io.zarrstore:to_zarr", label="Zarr", streams=True)
WRITERS.register_lazy(
    ".gpkg", "trafficrnn.io.export:to_geopackage", label="GeoPackage", segments=True
)


def get_writer(path: str | os.PathLike) -> Callable[..., Path]:
    """The writer of ``path``'s format, by its extension (case-insensitive): ``.tif`` / ``.tiff``
    :func:`~trafficrnn.io.to_geotiff` (COG), ``.nc`` :func:`~trafficrnn.io.to_netcdf` (CF-NetCDF),
    ``.zarr`` :func:`~trafficrnn.io.to_zarr` (CF Zarr store),
    ``.gpkg`` :func:`~trafficrnn.io.to_geopackage`. Call it as ``writer(da, path, overwrite=...)``.

    Raises
    ------
    UnknownFormatError
        If the extension names no writer (an ``ExportError`` and a ``ConfigError``); the message
        lists the extensions.
    """
    suffix = Path(path).suffix
    if suffix.lower() not in WRITERS:
        raise UnknownFormatError(f"{path}: {WRITERS.unknown(suffix or '(none)')}")
    return WRITERS.get(suffix)


def write(da: Any, path: str | os.PathLike, *, overwrite: bool = False, **options: Any) -> Path:
    """Write ``da`` to ``path`` with :func:`get_writer`'s writer (``options``: that writer's own,
    e.g. ``segments=`` for a ``.gpkg``).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    return get_writer(path)(da, path, overwrite=overwrite, **options)
