"""Raster and vector I/O: read GeoTIFF stacks, rasterise vectors onto the grid, write GIS layers atomically.

Every name is imported on first use, so that ``trafficrnn.io.atomic`` (and ``trafficrnn info``)
loads neither rasterio, xarray nor geopandas. :func:`get_writer` picks a writer by the output's
extension (:data:`WRITERS`: ``.tif`` / ``.tiff``, ``.nc``, ``.zarr``, ``.gpkg``).
"""

from trafficrnn.io.atomic import check_outputs
from trafficrnn.io.writers import WRITERS, get_writer, write

__all__ = [
    "read_stack",
    "read_vectors",
    "rasterize_points",
    "rasterize_lines",
    "aggregate_to_segments",
    "to_geotiff",
    "write_stack",
    "as_stored",
    "to_netcdf",
    "read_netcdf",
    "to_zarr",
    "read_zarr",
    "to_geopackage",
    "write_geopackage",
    "check_georeference",
    "check_outputs",
    "WRITERS",
    "get_writer",
    "write",
]

_LAZY = {
    **dict.fromkeys(
        [
            "as_stored",
            "check_georeference",
            "to_geotiff",
            "to_geopackage",
            "write_geopackage",
            "write_stack",
        ],
        "trafficrnn.io.export",
    ),
    **dict.fromkeys(["read_netcdf", "to_netcdf"], "trafficrnn.io.netcdf"),
    **dict.fromkeys(["read_zarr", "to_zarr"], "trafficrnn.io.zarrstore"),
    "read_stack": "trafficrnn.io.stack",
    **dict.fromkeys(
        ["aggregate_to_segments", "rasterize_lines", "rasterize_points", "read_vectors"],
        "trafficrnn.io.vector",
    ),
}


def __getattr__(name: str):
    """Import the public names, and submodules, on first use (``from trafficrnn.io import read_stack`` as before)."""
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(
            f"{__name__}.{name}"
        )  # a submodule, e.g. trafficrnn.io.export
    raise AttributeError(f"module 'trafficrnn.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
