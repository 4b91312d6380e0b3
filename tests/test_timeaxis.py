"""Tests of trafficrnn.timeaxis: cadence, DST-safe time features, forecast contract, windows, splits."""

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficrnn import Grid
from trafficrnn.errors import CadenceError, ConfigError, GridError, TimestampError
from trafficrnn.timeaxis import (
    chronological_split,
    infer_cadence,
    make_forecast,
    time_features,
    window_starts,
)

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))


def hour_features(hours, dayofweek):
    """Hand formula: sin/cos of hours/24 and of (dayofweek + hours/24)/7."""
    hours = np.asarray(hours, dtype=float)
    day, week = hours / 24, (dayofweek + hours / 24) / 7
    return np.stack(
        [
            np.sin(2 * np.pi * day),
            np.cos(2 * np.pi * day),
            np.sin(2 * np.pi * week),
            np.cos(2 * np.pi * week),
        ],
        axis=1,
    )


# -- cadence -------------------------------------------------------------------------------
def test_infer_cadence__regular():
    assert infer_cadence(pd.date_range("2024-01-01", periods=4, freq="15min")) == pd.Timedelta(
        "15min"
    )


def test_infer_cadence__irregular_raises():
    times = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:15", "2024-01-01 00:45"])
    with pytest.raises(
        CadenceError, match=r"00:15:00 -> 2024-01-01 00:45:00 is 0 days 00:30:00, expected"
    ):
        infer_cadence(times)


def test_infer_cadence__single_time_raises():
    with pytest.raises(TimestampError, match="found 1 timestamp"):
        infer_cadence(pd.DatetimeIndex(["2024-01-01"]))


def test_infer_cadence__duplicate_raises():
    with pytest.raises(TimestampError, match="not strictly increasing: position 0"):
        infer_cadence(pd.DatetimeIndex(["2024-01-01", "2024-01-01"]))


# -- time features ---------------------------------------------------------------------------
def test_time_features__hand_values():
    # 2024-01-01 is a Monday: 00:00 and 06:00
    out = time_features(pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 06:00"]))
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out, hour_features([0, 6], 0), atol=1e-6)
    np.testing.assert_allclose(out[1, :2], [1, 0], atol=1e-6)


def test_time_features__same_wall_clock_in_summer_and_winter():
    # both Mondays, 08:00 local (naive wall-clock times of a stack that records its zone)
    out = time_features(
        pd.DatetimeIndex(["2024-01-01 08:00", "2024-07-01 08:00"]),
        timezone="America/New_York",
        naive_zone="America/New_York",
    )
    np.testing.assert_array_equal(out[0], out[1])


def test_time_features__spring_forward_day_naive():
    # 2024-03-10 (Sunday): 02:00-03:00 does not exist in New York; naive wall-clock times are kept as they read
    times = pd.date_range("2024-03-10 00:00", periods=6, freq="h")
    out = time_features(times, timezone="America/New_York", naive_zone="America/New_York")
    np.testing.assert_allclose(out, hour_features(np.arange(6), 6), atol=1e-6)


def test_time_features__fall_back_day_naive_ambiguous_hour():
    # 2024-11-03 (Sunday): 01:30 happens twice in New York; both readings get the 01:30 features
    times = pd.DatetimeIndex(
        ["2024-11-03 00:30", "2024-11-03 01:30", "2024-11-03 01:30", "2024-11-03 02:30"]
    )
    out = time_features(times, timezone="America/New_York", naive_zone="America/New_York")
    np.testing.assert_allclose(out, hour_features([0.5, 1.5, 1.5, 2.5], 6), atol=1e-6)


def test_time_features__aware_times_read_on_the_local_clock_across_fall_back():
    # 05:00 UTC = 01:00 EDT, 06:00 UTC = 01:00 EST, 07:00 UTC = 02:00 EST
    times = pd.date_range("2024-11-03 05:00", periods=3, freq="h", tz="UTC")
    out = time_features(times, timezone="America/New_York")
    np.testing.assert_allclose(out, hour_features([1, 1, 2], 6), atol=1e-6)


def test_time_features__aware_times_across_spring_forward():
    # 06:00 UTC = 01:00 EST, 07:00 UTC = 03:00 EDT (02:00 is skipped by the clock)
    times = pd.date_range("2024-03-10 06:00", periods=2, freq="h", tz="UTC")
    out = time_features(times, timezone="America/New_York")
    np.testing.assert_allclose(out, hour_features([1, 3], 6), atol=1e-6)


def test_time_features__unknown_timezone_raises():
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not a known IANA zone"):
        time_features(pd.DatetimeIndex(["2024-01-01"]), timezone="Mars/Olympus")


# -- forecast contract ------------------------------------------------------------------------
def test_make_forecast__single_issue_contract():
    values = np.arange(3 * 1 * 4 * 5, dtype=float).reshape(3, 1, 4, 5)
    fc = make_forecast(
        values,
        GRID,
        issued="2024-05-01T08:00",
        cadence="15min",
        bands=["density"],
        model="persistence",
        units="vehicles",
    )
    assert fc.dims == ("lead", "band", "y", "x") and fc.dtype == np.float32
    assert fc.rio.crs.to_epsg() == 32633
    assert fc.rio.transform() == GRID.transform
    expected = pd.DatetimeIndex(["2024-05-01T08:15", "2024-05-01T08:30", "2024-05-01T08:45"])
    np.testing.assert_array_equal(pd.DatetimeIndex(fc["valid_time"].values), expected)
    np.testing.assert_array_equal(
        pd.TimedeltaIndex(fc["lead"].values), pd.to_timedelta(["15min", "30min", "45min"])
    )
    assert fc.attrs["issued"] == "2024-05-01T08:00:00"
    assert (fc.attrs["model"], fc.attrs["units"]) == ("persistence", "vehicles")
    np.testing.assert_array_equal(fc.values, values)


def test_make_forecast__batched_valid_time_is_issued_plus_lead():
    issued = pd.DatetimeIndex(["2024-05-01T08:00", "2024-05-01T09:00"])
    fc = make_forecast(
        np.zeros((2, 2, 2, 4, 5)),
        GRID,
        issued=issued,
        cadence="1h",
        bands=["inflow", "outflow"],
        model="m",
        units="vehicles/h",
    )
    assert fc.dims == ("issued", "lead", "band", "y", "x")
    assert fc["valid_time"].dims == ("issued", "lead")
    assert fc["valid_time"].values[1, 1] == np.datetime64("2024-05-01T11:00")
    assert fc.rio.transform() == GRID.transform


def test_make_forecast__issued_dim_for_single_forecast():
    fc = make_forecast(
        np.zeros((2, 1, 4, 5)),
        GRID,
        issued="2024-05-01",
        cadence="1h",
        bands="density",
        model="m",
        units="u",
        issued_dim=True,
    )
    assert fc.sizes["issued"] == 1 and fc.dims[0] == "issued"


def test_make_forecast__band_count_mismatch_raises():
    with pytest.raises(ConfigError, match=r"values have 1 band\(s\) but bands=\['a', 'b'\]"):
        make_forecast(
            np.zeros((2, 1, 4, 5)),
            GRID,
            issued="2024-05-01",
            cadence="1h",
            bands=["a", "b"],
            model="m",
            units="u",
        )


def test_make_forecast__grid_shape_mismatch_raises():
    with pytest.raises(GridError, match=r"values cover \(3, 5\) cells but the grid is \(4, 5\)"):
        make_forecast(
            np.zeros((2, 1, 3, 5)),
            GRID,
            issued="2024-05-01",
            cadence="1h",
            bands=["a"],
            model="m",
            units="u",
        )


def test_make_forecast__issue_count_mismatch_raises():
    with pytest.raises(ConfigError, match=r"1 issue time\(s\) given for 2 forecast"):
        make_forecast(
            np.zeros((2, 2, 1, 4, 5)),
            GRID,
            issued="2024-05-01",
            cadence="1h",
            bands=["a"],
            model="m",
            units="u",
        )


def test_make_forecast__bad_cadence_raises():
    with pytest.raises(ConfigError, match="cadence='-1h' must be a positive time step"):
        make_forecast(
            np.zeros((2, 1, 4, 5)),
            GRID,
            issued="2024-05-01",
            cadence="-1h",
            bands=["a"],
            model="m",
            units="u",
        )


# -- windows and splits -----------------------------------------------------------------------
def test_window_starts__hand_values():
    np.testing.assert_array_equal(window_starts(10, 3, 2), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(window_starts(10, 3, 2, stride=2), [0, 2, 4])
    np.testing.assert_array_equal(window_starts(10, 3, 2, start=4, stop=9), [4])
    assert window_starts(10, 3, 2, start=6).size == 0


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"input_steps": 0}, "input_steps=0"),
        ({"horizon": 0}, "horizon=0"),
        ({"stride": 0}, "stride=0"),
    ],
)
def test_window_starts__below_one_raises(kw, name):
    args = {"input_steps": 3, "horizon": 2, "stride": 1} | kw
    with pytest.raises(ConfigError, match=f"{name} is invalid: expected an integer >= 1"):
        window_starts(10, **args)


def test_window_starts__range_outside_series_raises():
    with pytest.raises(ConfigError, match=r"\[start=0, stop=12\) is invalid for 10 time steps"):
        window_starts(10, 3, 2, stop=12)


def test_chronological_split__fractions_strict_and_reach_back():
    strict = chronological_split(100, val=0.2, test=0.2, input_steps=4, horizon=2, context="strict")
    assert strict == {"train": slice(0, 60), "val": slice(60, 80), "test": slice(80, 100)}
    back = chronological_split(100, val=0.2, test=0.2, input_steps=4, horizon=2)
    assert back == {"train": slice(0, 60), "val": slice(56, 80), "test": slice(76, 100)}


def test_chronological_split__datetime_boundaries():
    times = pd.date_range("2024-01-01", periods=48, freq="h")
    out = chronological_split(
        times,
        val="2024-01-02T00:00",
        test="2024-01-02T12:00",
        input_steps=2,
        horizon=1,
        context="strict",
    )
    assert out == {"train": slice(0, 24), "val": slice(24, 36), "test": slice(36, 48)}


def test_chronological_split__zero_val_is_empty():
    out = chronological_split(50, val=0.0, test=0.2, input_steps=3, horizon=2)
    assert out["val"] == slice(40, 40) and out["test"] == slice(37, 50)


def test_chronological_split__too_short_split_raises():
    with pytest.raises(
        ConfigError,
        match=r"test split has 3 time step\(s\) but one window needs input_steps \+ "
        r"horizon = 4 \+ 2 = 6",
    ):
        chronological_split(20, val=0.3, test=0.15, input_steps=4, horizon=2, context="strict")


def test_chronological_split__bad_context_raises():
    with pytest.raises(ConfigError, match="context='loose' is invalid"):
        chronological_split(100, input_steps=4, horizon=2, context="loose")


def test_chronological_split__val_after_test_raises():
    times = pd.date_range("2024-01-01", periods=48, freq="h")
    with pytest.raises(ConfigError, match="validation starts at index 36 and test at 24"):
        chronological_split(
            times, val="2024-01-02T12:00", test="2024-01-02T00:00", input_steps=2, horizon=1
        )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120),
    input_steps=st.integers(1, 8),
    horizon=st.integers(1, 6),
    val=st.sampled_from([0.0, 0.1, 0.2, 0.3]),
    test=st.sampled_from([0.0, 0.1, 0.25]),
    stride=st.integers(1, 3),
    context=st.sampled_from(["strict", "reach_back"]),
)
def test_chronological_split__no_window_straddles_a_boundary(
    n, input_steps, horizon, val, test, stride, context
):
    try:
        splits = chronological_split(
            n, val=val, test=test, input_steps=input_steps, horizon=horizon, context=context
        )
    except ConfigError as exc:
        assert "split has" in str(exc)
        return
    frames, targets = {}, {}
    for name, sl in splits.items():
        starts = window_starts(n, input_steps, horizon, stride, start=sl.start, stop=sl.stop)
        assert name != "train" or starts.size > 0
        for s in starts:
            assert sl.start <= s and s + input_steps + horizon <= sl.stop
        frames[name] = {t for s in starts for t in range(s, s + input_steps + horizon)}
        targets[name] = {
            t for s in starts for t in range(s + input_steps, s + input_steps + horizon)
        }
    order = ["train", "val", "test"]
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            assert not targets[a] & targets[b]
            assert not targets[b] or not targets[a] or max(targets[a]) < min(targets[b])
            if context == "strict":
                assert not frames[a] & frames[b]
