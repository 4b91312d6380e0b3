"""trafficrnn: forecast traffic density over a map from time series of aerial images.

The public API is re-exported here: read a GeoTIFF stack with :func:`read_stack`, build the
forecast :class:`Grid`, rasterise vectors, fit a forecaster, write GIS layers.
"""

from trafficrnn._version import __version__
from trafficrnn.errors import TrafficRNNError

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
    "check_outputs",
    "TrafficForecaster",
    "ForecastEnsemble",
    "load",
    "describe",
    "pretrained",
    "__version__",
]

# every name is imported on first use, so that ``import trafficrnn`` (and ``trafficrnn --help``)
# loads neither xarray/rasterio nor torch
_LAZY = {
    "Grid": "trafficrnn.grid",
    **dict.fromkeys(
        [
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
            "check_outputs",
        ],
        "trafficrnn.io",
    ),
    "TrafficForecaster": "trafficrnn.estimator",
    "ForecastEnsemble": "trafficrnn.ensemble",
    "load": "trafficrnn.ensemble",
    "describe": "trafficrnn.modelinfo",
    "pretrained": "trafficrnn.zoo",
}


def __getattr__(name: str):
    """Import the public names (and submodules such as ``trafficrnn.io``) on first use, so that
    ``import trafficrnn`` stays light."""
    import importlib
    import importlib.util

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'trafficrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
