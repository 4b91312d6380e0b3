"""trafficrnn: forecast traffic density over a map from time series of aerial images.

The public API is re-exported here: read a GeoTIFF stack with :func:`read_stack`, build the
forecast :class:`Grid`, rasterise vectors, fit a forecaster, write GIS layers.
"""

from trafficrnn._version import __version__
from trafficrnn.errors import TrafficRNNError
from trafficrnn.grid import Grid
from trafficrnn.io import (
    aggregate_to_segments, rasterize_lines, rasterize_points, read_netcdf, read_stack, read_vectors, to_geopackage,
    to_geotiff, to_netcdf, write_stack,
)

__all__ = [
    "Grid",
    "TrafficRNNError",
    "read_stack",
    "read_vectors",
    "rasterize_points",
    "rasterize_lines",
    "aggregate_to_segments",
    "to_geotiff",
    "write_stack",
    "to_netcdf",
    "read_netcdf",
    "to_geopackage",
    "TrafficForecaster",
    "ForecastEnsemble",
    "load",
    "__version__",
]

_LAZY = {"TrafficForecaster": "trafficrnn.estimator", "ForecastEnsemble": "trafficrnn.ensemble",
         "load": "trafficrnn.ensemble"}


def __getattr__(name: str):
    """Import the torch-backed parts on first use, so that ``import trafficrnn`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trafficrnn' has no attribute {name!r}")
