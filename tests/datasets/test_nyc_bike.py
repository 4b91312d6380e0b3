"""The shipped NYC bike dataset: exact counts, time axis, georeference, splits, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from trafficrnn.datasets import DATASETS, get_dataset, nyc_bike
from trafficrnn.datasets.nyc_bike import NYC_BIKE_FILE
from trafficrnn.errors import ConfigError, InputFileError

RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "nyc-bike-2016"
TRANSFORM = (0.011862, 0.0, -74.022216, 0.0, -0.0085379286, 40.818562)


@pytest.fixture(scope="module")
def flows():
    return nyc_bike()


def test_nyc_bike__equals_raw_npz(flows):
    if not (RAW / "flow_train.npz").exists():
        pytest.skip(f"raw npz files not found in {RAW}")
    raw = np.concatenate([np.load(RAW / f"flow_{s}.npz")["flow"] for s in ("train", "val", "test")])
    assert flows.dtype == np.float32
    assert flows.dims == ("time", "band", "y", "x")
    np.testing.assert_array_equal(flows.sel(band="inflow").values, raw[..., 0])
    np.testing.assert_array_equal(flows.sel(band="outflow").values, raw[..., 1])


def test_nyc_bike__counts_balance(flows):
    totals = flows.sum(("time", "y", "x")).values
    assert totals[0] == totals[1] > 1e6  # every trip leaves one cell and enters another
    assert (
        int((flows.max(("time", "band")) == 0).sum()) == 44
    )  # 39 % of the 112 cells never see a trip


def test_nyc_bike__time_axis_is_naive_local(flows):
    times = flows.indexes["time"]
    expected = pd.date_range("2016-08-01 00:00", "2016-10-29 23:30", freq="30min")
    assert times.tz is None
    assert times.equals(expected) and len(times) == 4320
    assert flows.attrs["timezone"] == "America/New_York"
    assert flows.attrs["cadence"] == pd.Timedelta("30min").isoformat()


def test_nyc_bike__georeference(flows):
    assert flows.rio.crs.to_epsg() == 4326
    assert tuple(flows.rio.transform())[:6] == TRANSFORM
    t = Affine(*TRANSFORM)
    np.testing.assert_allclose(
        flows.x.values, [(t * (c + 0.5, 0.5))[0] for c in range(8)], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        flows.y.values, [(t * (0.5, r + 0.5))[1] for r in range(14)], rtol=0, atol=1e-12
    )
    assert list(flows.band.values) == ["inflow", "outflow"]
    assert flows.attrs["units"] == "trips per 30 min"


@pytest.mark.parametrize(
    "split, first, last, n",
    [
        ("train", "2016-08-01 00:00", "2016-09-27 23:30", 2784),
        ("val", "2016-09-28 00:00", "2016-10-11 23:30", 672),
        ("test", "2016-10-12 00:00", "2016-10-29 23:30", 864),
    ],
)
def test_nyc_bike__split(flows, split, first, last, n):
    part = nyc_bike(split)
    assert part.sizes["time"] == n
    assert (part.time.values[0], part.time.values[-1]) == (
        np.datetime64(first),
        np.datetime64(last),
    )
    np.testing.assert_array_equal(part.values, flows.sel(time=part.time).values)
    assert tuple(part.rio.transform())[:6] == TRANSFORM


def test_nyc_bike__start_end_days_inclusive():
    part = nyc_bike(start="2016-08-02", end="2016-08-03")
    assert part.sizes["time"] == 96
    assert str(part.time.values[-1])[:16] == "2016-08-03T23:30"


def test_nyc_bike__start_end_times_inside_split():
    part = nyc_bike("test", start="2016-10-01", end="2016-10-12T01:00")
    assert [str(t)[:16] for t in part.time.values] == [
        "2016-10-12T00:00",
        "2016-10-12T00:30",
        "2016-10-12T01:00",
    ]


def test_nyc_bike__unknown_split():
    with pytest.raises(
        ConfigError, match=r"split='valid' is invalid: expected one of \['test', 'train', 'val'\]"
    ):
        nyc_bike("valid")


def test_nyc_bike__empty_selection():
    with pytest.raises(ConfigError, match="no slot is left.*2016-08-01"):
        nyc_bike("train", start="2016-10-20")


def test_nyc_bike__bad_start():
    with pytest.raises(ConfigError, match="start='yesterday'"):
        nyc_bike(start="yesterday")


def test_nyc_bike__missing_file(tmp_path):
    with pytest.raises(InputFileError, match="missing: reinstall trafficrnn.*build.py"):
        nyc_bike(path=tmp_path / "nope.nc")


def test_nyc_bike__shipped_file_is_small():
    assert NYC_BIKE_FILE.stat().st_size < 700_000


def test_get_dataset__case_insensitive():
    assert get_dataset("NYC_Bike") is nyc_bike
    assert set(DATASETS) == {"nyc-bike"}


def test_get_dataset__unknown():
    with pytest.raises(
        ConfigError, match=r"unknown dataset 'taxi': expected one of \['nyc-bike'\]"
    ):
        get_dataset("taxi")


def test_nyc_bike_covariates__daily_rows_over_the_period_and_a_day_after():
    from trafficrnn.datasets import nyc_bike_covariates

    table = nyc_bike_covariates()
    assert list(table.columns) == [
        "tmax_f",
        "tmin_f",
        "tavg_f",
        "precipitation_in",
        "snowfall_in",
        "snow_depth_in",
        "holiday",
    ]
    assert table.index[0] == pd.Timestamp("2016-08-01") and table.index[-1] == pd.Timestamp(
        "2016-10-31"
    )
    assert len(table) == 92 and (np.diff(table.index) == pd.Timedelta("1D")).all()
    # hand-read from the source file: 21-10-2016,69,57,63.0,1.11,... ; 1-8-2016 had trace precipitation
    assert table.loc["2016-10-21", ["tmax_f", "tmin_f", "precipitation_in"]].tolist() == [
        69,
        57,
        1.11,
    ]
    assert table.loc["2016-08-01", "precipitation_in"] == 0.001
    assert table.loc["2016-10-10", "holiday"] == 1 and table.loc["2016-10-11", "holiday"] == 0


def test_nyc_bike_covariates__equal_the_raw_file():
    from trafficrnn.datasets import nyc_bike_covariates

    if not (RAW / "external_knowledge.csv").exists():
        pytest.skip(f"external_knowledge.csv not found in {RAW}")
    raw = pd.read_csv(RAW / "external_knowledge.csv", dtype=str)
    table = nyc_bike_covariates()
    assert list(table.index.strftime("%-d-%-m-%Y")) == list(raw["date"])
    precipitation = pd.to_numeric(raw["precipitation"].replace("T", "0.001"))
    np.testing.assert_array_equal(table["precipitation_in"].values, precipitation.values)
    np.testing.assert_array_equal(
        table["tavg_f"].values, raw["average temperature"].astype(float).values
    )


def test_nyc_bike_covariates__columns_and_refusals(tmp_path):
    from trafficrnn.datasets import nyc_bike_covariates

    assert list(nyc_bike_covariates(["precipitation_in", "holiday"]).columns) == [
        "precipitation_in",
        "holiday",
    ]
    with pytest.raises(ConfigError, match=r"unknown covariate column\(s\) \['rain'\]"):
        nyc_bike_covariates(["rain"])
    with pytest.raises(InputFileError, match="missing"):
        nyc_bike_covariates(path=tmp_path / "nope.csv")
