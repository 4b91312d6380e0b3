"""NYC Citi Bike inflow / outflow counts, Aug–Oct 2016, on a 14 × 8 grid of 30-minute slots (real data, MIT).

The shipped files ``nyc-bike-2016.nc`` and ``nyc-bike-2016-covariates.csv`` (beside this module) are
rebuilt by ``data/nyc-bike-2016/build.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr
from affine import Affine

from trafficrnn.errors import ConfigError, InputFileError
from trafficrnn.io.netcdf import read_netcdf
from trafficrnn.splits import PublishedSplit

__all__ = [
    "nyc_bike",
    "nyc_bike_covariates",
    "NYC_BIKE_FILE",
    "COVARIATES_FILE",
    "CRS",
    "TRANSFORM",
    "SHAPE",
    "BANDS",
    "UNITS",
    "TIMEZONE",
    "CADENCE",
    "PERIOD",
    "SPLITS",
    "SPLIT_ATTR",
]

#: the shipped NetCDF (inside the package, so that installed copies find it too)
NYC_BIKE_FILE = Path(__file__).resolve().parent / "nyc-bike-2016.nc"
#: daily weather (Central Park) and holiday flags of the same period, ISO dates
COVARIATES_FILE = Path(__file__).resolve().parent / "nyc-bike-2016-covariates.csv"
#: value given to trace precipitation ("T" in the source: some, below the 0.01 in resolution)
TRACE = 0.001
CRS = "EPSG:4326"
#: cells of 0.011862° longitude × 0.0085379286° latitude; row 0 north, column 0 west
TRANSFORM = Affine(0.011862, 0.0, -74.022216, 0.0, -0.0085379286, 40.818562)
SHAPE = (14, 8)
BANDS = ("inflow", "outflow")
UNITS = "trips per 30 min"
#: the timestamps are naive local wall-clock times of this zone (no DST change inside the period)
TIMEZONE = "America/New_York"
CADENCE = pd.Timedelta("30min")
#: first and last slot (naive local time)
PERIOD = (pd.Timestamp("2016-08-01 00:00"), pd.Timestamp("2016-10-29 23:30"))
#: the published split, as first and last day (inclusive): 58 / 14 / 18 days
SPLITS = {
    "train": ("2016-08-01", "2016-09-27"),
    "val": ("2016-09-28", "2016-10-11"),
    "test": ("2016-10-12", "2016-10-29"),
}


#: ``attrs["split"]`` of every array nyc_bike returns (and the ``split`` tag of every file ``trafficrnn datasets
#: export`` writes): the first times of the val and test parts, which fit / evaluate use unless val= / test= are
#: given (see :mod:`trafficrnn.splits`)
SPLIT_ATTR = PublishedSplit(pd.Timestamp(SPLITS["val"][0]), pd.Timestamp(SPLITS["test"][0])).text


def _day_range(first: str, last: str) -> slice:
    """Slots from ``first`` 00:00 to ``last`` 23:30 (both days inclusive)."""
    return slice(pd.Timestamp(first), pd.Timestamp(last) + pd.Timedelta(days=1) - CADENCE)


def nyc_bike(split: str | None = None, *, start=None, end=None, path=None) -> xr.DataArray:
    """Citi Bike inflow and outflow per grid cell and 30-minute slot, as a georeferenced target stack.

    Real data: trips of New York City's bike share from August to October 2016 (4320 slots),
    aggregated on a 14 × 8 grid over Manhattan and north Brooklyn (from ``haoxingl/STSAN``, MIT
    licence, Copyright (c) 2020 StarkLord). Use it with the density-only path:
    ``TrafficForecaster("convlstm", tile_size=None).fit(nyc_bike())``.

    Parameters
    ----------
    split : {"train", "val", "test"}, optional
        Only the slots of one part of the published split (see :data:`SPLITS`): train
        2016-08-01..09-27, val 09-28..10-11, test 10-12..10-29, whole days. ``None`` (default):
        the whole series. Every array carries the published split in ``attrs["split"]``
        (:data:`SPLIT_ATTR`), and ``TrafficForecaster`` uses it unless ``val=`` / ``test=`` are
        given: fit the whole series (the test days are held out), or the train part (no
        validation then); ``fit`` refuses the val or test part alone. A val or test part starts
        at its first day, without the preceding input context; to score forecasts on it, pass
        the whole series to ``evaluate``.
    start, end : datetime-like, optional
        Keep only the slots from ``start`` to ``end`` (inclusive; a date alone as ``end``
        includes its whole day), inside ``split`` when both are given.
    path : path-like, optional
        Another copy of the NetCDF (default: :data:`NYC_BIKE_FILE`, shipped with the package).

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` float32 with ``band = ["inflow", "outflow"]`` (trips ending /
        starting in the cell during the slot; trips within one cell are not counted),
        ``y`` = 14 rows (row 0 north), ``x`` = 8 columns (column 0 west), cell-centre
        coordinates in degrees; ``time`` = naive local times (America/New_York, never
        localised) every 30 minutes; ``rio.crs`` EPSG:4326 and ``rio.transform()``
        :data:`TRANSFORM`; attrs ``units``, ``timezone``, ``cadence``, ``gaps``, ``license``,
        ``references``, ``split`` (the published split, :data:`SPLIT_ATTR`: ``"val
        2016-09-28T00:00:00; test 2016-10-12T00:00:00"``).

    Raises
    ------
    ConfigError
        For an unknown ``split``, an unparseable ``start``/``end``, or a selection without any slot.
    InputFileError
        If the data file is missing or unreadable (reinstall trafficrnn, or rebuild it with
        ``python data/nyc-bike-2016/build.py``).
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(
            f"split={split!r} is invalid: expected one of {sorted(SPLITS)} or None for the whole "
            f"series {PERIOD[0]}..{PERIOD[1]}"
        )
    path = Path(path) if path is not None else NYC_BIKE_FILE
    if not path.exists():
        raise InputFileError(
            f"the NYC bike data file {path} is missing: reinstall trafficrnn, or rebuild it from "
            "the raw counts with `python data/nyc-bike-2016/build.py` in a source checkout"
        )
    da = read_netcdf(path)
    if [str(b) for b in da["band"].values] != list(BANDS) or (
        da.sizes["y"],
        da.sizes["x"],
    ) != SHAPE:
        raise InputFileError(
            f"{path} holds bands {list(map(str, da['band'].values))} on a "
            f"{da.sizes['y']} × {da.sizes['x']} grid; expected {list(BANDS)} on {SHAPE}: "
            "rebuild it with `python data/nyc-bike-2016/build.py`"
        )
    crs, transform = da.rio.crs, da.rio.transform()
    attrs = {k: v for k, v in da.attrs.items() if k != "license_text"}
    attrs.update(cadence=CADENCE.isoformat(), gaps=[], split=SPLIT_ATTR)
    da = da.astype("float32")  # stored as exact int16 counts
    if split is not None:
        da = da.sel(time=_day_range(*SPLITS[split]))
    if start is not None or end is not None:
        try:
            first = pd.Timestamp(start) if start is not None else None
            last = pd.Timestamp(end) if end is not None else None
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"start={start!r}, end={end!r}: expected dates or times such as '2016-08-01' or "
                f"'2016-08-01T08:00' ({exc})"
            ) from None
        if isinstance(end, str) and len(end.strip()) <= 10:  # a date alone: the whole day
            last = last + pd.Timedelta(days=1) - CADENCE
        da = da.sel(time=slice(first, last))
    if da.sizes["time"] == 0:
        raise ConfigError(
            f"no slot is left for split={split!r}, start={start!r}, end={end!r}: the data covers "
            f"{PERIOD[0]}..{PERIOD[1]} (train {SPLITS['train']}, val {SPLITS['val']}, "
            f"test {SPLITS['test']})"
        )
    da.attrs = attrs
    da.encoding = {}
    da.name = "nyc_bike"
    return da.rio.write_crs(crs).rio.write_transform(transform)


def nyc_bike_covariates(columns=None, *, path=None) -> pd.DataFrame:
    """Daily weather and holiday flags for the NYC bike period, as a covariate table for ``fit`` / ``predict``.

    One row per day from 2016-08-01 to 2016-10-31 (the lead times of the last forecasts reach
    into the next day), indexed by the naive local date. Columns: ``tmax_f``, ``tmin_f``,
    ``tavg_f`` (°F), ``precipitation_in``, ``snowfall_in``, ``snow_depth_in`` (inches; trace
    precipitation is :data:`TRACE`), ``holiday`` (1 on a day the source flags as a holiday or
    special day). Source: the ``external_knowledge.csv`` of the same repository (MIT) as the
    counts. Usage::

        grids, cov = nyc_bike(), nyc_bike_covariates(["tmax_f", "precipitation_in", "holiday"])
        TrafficForecaster("convgru").fit(grids, covariates=cov)

    The values are the observed daily ones: a forecast issued in earnest would read the weather
    forecast of the day instead.

    Parameters
    ----------
    columns : list of str, optional
        Keep only these columns (default: all).
    path : path-like, optional
        Another copy of the CSV (default: :data:`COVARIATES_FILE`).

    Raises
    ------
    ConfigError
        For an unknown column.
    InputFileError
        If the file is missing or unreadable.
    """
    from trafficrnn.estimation.covariates import read_covariates

    path = Path(path) if path is not None else COVARIATES_FILE
    if not path.exists():
        raise InputFileError(
            f"the NYC bike covariate file {path} is missing: reinstall trafficrnn, or rebuild it "
            "with `python data/nyc-bike-2016/build.py` in a source checkout"
        )
    table = read_covariates(path)
    if columns is not None:
        unknown = [c for c in columns if c not in table.columns]
        if unknown:
            raise ConfigError(
                f"unknown covariate column(s) {unknown}: expected some of {list(table.columns)}"
            )
        table = table[list(columns)]
    return table
