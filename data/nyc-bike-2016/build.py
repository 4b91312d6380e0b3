"""Rebuild trafficrnn/datasets/nyc-bike-2016.nc (and the daily covariates nyc-bike-2016-covariates.csv)
from the raw NYC bike files (one-off; deterministic).

Run from the repository root: ``python data/nyc-bike-2016/build.py [RAW_DIR]`` (default
``../shared/data/nyc-bike-2016``, the folder holding ``flow_{train,val,test}.npz`` and
``external_knowledge.csv``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.datasets.nyc_bike import (
    BANDS,
    COVARIATES_FILE,
    CRS,
    NYC_BIKE_FILE,
    PERIOD,
    SHAPE,
    SPLITS,
    TIMEZONE,
    TRACE,
    TRANSFORM,
    UNITS,
)
from trafficrnn.grid import Grid
from trafficrnn.io import to_netcdf

HERE = Path(__file__).resolve().parent
COMMIT = "f5d09f88544f5def714a8727db847f2a57a56348"


def load_raw(raw_dir: Path) -> np.ndarray:
    """The three npz files concatenated in time: (4320, 14, 8, 2) float64 counts."""
    parts = [np.load(raw_dir / f"flow_{name}.npz")["flow"] for name in ("train", "val", "test")]
    days = [len(p) // 48 for p in parts]
    expected = [(pd.Timestamp(b) - pd.Timestamp(a)).days + 1 for a, b in SPLITS.values()]
    if days != expected:
        raise SystemExit(f"split lengths {days} days differ from the documented {expected}")
    return np.concatenate(parts)


def build(raw_dir: Path, out: Path = NYC_BIKE_FILE) -> Path:
    raw = load_raw(raw_dir)
    if (
        raw.shape[1:] != (*SHAPE, len(BANDS))
        or not np.array_equal(raw, np.round(raw))
        or raw.min() < 0
        or raw.max() > np.iinfo(np.int16).max
    ):
        raise SystemExit(
            f"raw counts of shape {raw.shape} are not non-negative int16-sized integers on {SHAPE}"
        )
    times = pd.date_range(PERIOD[0], PERIOD[1], freq="30min")  # naive local time, never localised
    if len(times) != len(raw):
        raise SystemExit(f"{len(raw)} slots, expected {len(times)} from {PERIOD[0]} to {PERIOD[1]}")
    grid = Grid(CRS, TRANSFORM, SHAPE)
    values = np.moveaxis(raw, 3, 1).astype(
        "float32"
    )  # (time, band, y, x); row 0 north, column 0 west
    da = grid.attach(
        xr.DataArray(
            values, dims=("time", "band", "y", "x"), coords={"time": times, "band": list(BANDS)}
        )
    )
    da.attrs.update(
        title="NYC Citi Bike inflow and outflow, Aug-Oct 2016, 14 x 8 grid, 30-minute slots",
        units=UNITS,
        timezone=TIMEZONE,
        time_note="naive local wall-clock times of America/New_York (EDT, UTC-4, throughout: the DST "
        "change of 2016-11-06 lies after the period)",
        bands="inflow: trips ending in the cell during the slot; outflow: trips starting there; "
        "trips within one cell are not counted",
        split="; ".join(f"{k} {a}..{b}" for k, (a, b) in SPLITS.items()),
        references=f"https://github.com/haoxingl/STSAN data/NYBike at commit {COMMIT}; "
        "trip records: Citi Bike System Data 201608-201610 (https://citibikenyc.com/system-data)",
        license="MIT, Copyright (c) 2020 StarkLord (full text in license_text)",
        license_text=(HERE / "LICENSE").read_text(),
        history="built by data/nyc-bike-2016/build.py; counts stored as int16 (exact)",
    )
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        cf = to_netcdf(
            da, Path(tmp) / "cf.nc"
        )  # the CF layout (grid_mapping, time, units) of trafficrnn
        with xr.open_dataset(cf) as ds:  # keeps grid_mapping = "spatial_ref" as an attribute
            ds = ds.load()
        for name in ds.data_vars:
            ds[name] = ds[name].astype("int16", keep_attrs=True)
        # counts are integers: int16 + shuffle + deflate is ~30 % smaller than float32, and exact
        encoding = {
            name: {
                "dtype": "int16",
                "zlib": True,
                "complevel": 9,
                "shuffle": True,
                "_FillValue": None,
            }
            for name in ds.data_vars
        }
        encoding["time"] = {"units": "minutes since 2016-08-01 00:00:00", "dtype": "int32"}
        tmp_out = out.with_suffix(".tmp.nc")
        ds.to_netcdf(tmp_out, engine="netcdf4", encoding=encoding)
        tmp_out.replace(out)
    return out


#: raw column -> shipped column (the weekday column is dropped: the calendar channels carry it)
COVARIATE_COLUMNS = {
    "maximum temperature": "tmax_f",
    "minimum temperature": "tmin_f",
    "average temperature": "tavg_f",
    "precipitation": "precipitation_in",
    "snow fall": "snowfall_in",
    "snow depth": "snow_depth_in",
    "holiday": "holiday",
}


def build_covariates(raw_dir: Path, out: Path = COVARIATES_FILE) -> Path:
    """Daily weather and holiday flags with ISO dates; trace precipitation ``T`` becomes :data:`TRACE`."""
    raw = pd.read_csv(raw_dir / "external_knowledge.csv", dtype=str)
    dates = pd.to_datetime(raw["date"], format="%d-%m-%Y")
    table = (
        raw[list(COVARIATE_COLUMNS)]
        .replace("T", str(TRACE))
        .astype(float)
        .rename(columns=COVARIATE_COLUMNS)
    )
    table["holiday"] = table["holiday"].astype(int)
    table.insert(0, "date", dates.dt.strftime("%Y-%m-%d"))
    first, last = PERIOD[0].normalize(), PERIOD[1].normalize()
    if dates.iloc[0] > first or dates.iloc[-1] < last or not dates.is_monotonic_increasing:
        raise SystemExit(
            f"covariates cover {dates.iloc[0]}..{dates.iloc[-1]}, expected {first}..{last} in order"
        )
    tmp_out = out.with_suffix(".tmp.csv")
    table.to_csv(tmp_out, index=False, float_format="%g")
    tmp_out.replace(out)
    return out


if __name__ == "__main__":
    raw_dir = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else HERE.parents[2] / "shared" / "data" / "nyc-bike-2016"
    )
    for path in (build(raw_dir), build_covariates(raw_dir)):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
