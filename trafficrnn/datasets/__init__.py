"""Real datasets shipped with trafficrnn, behind one registry: ``get_dataset(name)(split=...)`` → target stack.

Each loader returns a georeferenced ``DataArray(time, band, y, x)`` float32 ready for
``TrafficForecaster(...).fit(grids)``; today: ``nyc-bike`` (Citi Bike flows, Aug–Oct 2016), with its
daily covariates (weather, holidays) from :func:`nyc_bike_covariates`.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import xarray as xr

from trafficrnn.datasets.nyc_bike import nyc_bike, nyc_bike_covariates
from trafficrnn.registry import Registry

__all__ = ["nyc_bike", "nyc_bike_covariates", "DATASETS", "COVARIATES", "get_dataset"]


def _dataset_key(name: object) -> str:
    return str(name).lower().replace("_", "-")


#: loader per dataset name (case-insensitive; ``_`` and ``-`` are the same); every loader takes
#: ``split``, ``start``, ``end`` keywords
DATASETS: Registry[Callable[..., xr.DataArray]] = Registry(
    "dataset", {"nyc-bike": nyc_bike}, normalize=_dataset_key
)
#: loader of each dataset's covariate table (daily weather, holidays), where it has one; no argument
COVARIATES: Registry[Callable[..., pd.DataFrame]] = Registry(
    "dataset with covariates", {"nyc-bike": nyc_bike_covariates}, normalize=_dataset_key
)


def get_dataset(name: str) -> Callable[..., xr.DataArray]:
    """The loader registered as ``name`` (case-insensitive; ``_`` and ``-`` are the same).

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (a ``ConfigError``, hence a ``ValueError``); the message lists
        the valid names.
    """
    return DATASETS.get(name)
