"""Real datasets shipped with trafficrnn, behind one registry: ``get_dataset(name)(split=...)`` → target stack.

Each loader returns a georeferenced ``DataArray(time, band, y, x)`` float32 ready for
``TrafficForecaster(...).fit(grids)``; today: ``nyc-bike`` (Citi Bike flows, Aug–Oct 2016), with its
daily covariates (weather, holidays) from :func:`nyc_bike_covariates`.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import xarray as xr

from trafficrnn.datasets.nyc_bike import nyc_bike, nyc_bike_covariates
from trafficrnn.errors import ConfigError

__all__ = ["nyc_bike", "nyc_bike_covariates", "DATASETS", "COVARIATES", "get_dataset"]

#: loader per dataset name; every loader takes ``split``, ``start``, ``end`` keywords
DATASETS: dict[str, Callable[..., xr.DataArray]] = {"nyc-bike": nyc_bike}
#: loader of each dataset's covariate table (daily weather, holidays), where it has one
COVARIATES: dict[str, Callable[..., pd.DataFrame]] = {"nyc-bike": nyc_bike_covariates}


def get_dataset(name: str) -> Callable[..., xr.DataArray]:
    """The loader registered as ``name`` (case-insensitive; ``_`` and ``-`` are the same).

    Raises
    ------
    ConfigError
        If ``name`` is not registered (a ``ValueError``); the message lists the valid names.
    """
    key = str(name).lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}")
    return DATASETS[key]
