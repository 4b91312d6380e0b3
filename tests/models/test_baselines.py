"""Tests of trafficrnn.models.baselines: one contract for every baseline, exact recoveries, refusals."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, ModelMismatchError, NotFittedError
from trafficrnn.metrics import mae, per_lead
from trafficrnn.models.baselines import (
    BASELINES,
    HistoricalAverage,
    Persistence,
    RidgeBaseline,
    get_baseline,
)

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))
SMALL = {"persistence": {}, "historical_average": {}, "ridge": {"lags": 2, "horizon": 3}}


def cube(values, start="2024-01-01", freq="h", bands=("density",), grid=GRID):
    """Target DataArray(time, band, y, x) on ``grid`` from an array (T, C, rows, cols)."""
    times = pd.date_range(start, periods=len(values), freq=freq)
    da = xr.DataArray(
        np.asarray(values, dtype=np.float32),
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": list(bands)},
        attrs={"units": "vehicles"},
    )
    return grid.attach(da)


def periodic(weeks=3, noise=0.0, seed=0):
    """Hourly weekly-periodic signal: 5 + 3 sin(hour) + 2 on weekends + row index, plus optional noise."""
    times = pd.date_range("2024-01-01", periods=24 * 7 * weeks, freq="h")  # starts on a Monday
    hour, weekend = np.asarray(times.hour), np.asarray(times.day_of_week >= 5)
    base = 5 + 3 * np.sin(2 * np.pi * hour / 24) + 2 * weekend
    values = base[:, None, None, None] + np.arange(4)[None, None, :, None] + np.zeros((1, 1, 4, 5))
    values = values + np.random.default_rng(seed).normal(0, noise, values.shape)
    return cube(values)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines__share_the_forecast_contract(name):
    target = periodic(weeks=1)
    model = get_baseline(name.upper(), **SMALL[name])
    assert model.fit(target.isel(time=slice(0, 100))) is model
    history = target.isel(time=slice(0, 120))
    fc = model.predict(history, 3)
    assert fc.dims == ("lead", "band", "y", "x") and fc.shape == (3, 1, 4, 5)
    assert fc.rio.crs == GRID.crs and fc.rio.transform() == GRID.transform
    assert fc.attrs["issued"] == "2024-01-05T23:00:00"
    assert (fc.attrs["model"], fc.attrs["units"]) == (name, "vehicles")
    expected = pd.date_range("2024-01-06T00:00", periods=3, freq="h")
    np.testing.assert_array_equal(pd.DatetimeIndex(fc["valid_time"].values), expected)
    many = model.predict_many(target, [110, 119], 3)
    assert many.dims == ("issued", "lead", "band", "y", "x") and many.shape == (2, 3, 1, 4, 5)
    np.testing.assert_array_equal(many["issued"].values, target["time"].values[[110, 119]])
    # a forecast issued at 119 sees no later frame: it equals predict() on the history up to 119
    np.testing.assert_allclose(many.values[1], fc.values)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines__predict_before_fit_raises(name):
    with pytest.raises(NotFittedError, match="is not fitted yet: call fit"):
        get_baseline(name, **SMALL[name]).predict(periodic(weeks=1), 2)


def test_persistence__zero_error_on_constant_series():
    target = cube(np.full((10, 1, 4, 5), 7.0))
    fc = Persistence().fit(target).predict_many(target, np.arange(2, 7), 3)
    assert (per_lead(fc, target)["mae"] == 0).all()


def test_persistence__skipna_uses_last_finite_value():
    values = np.arange(4, dtype=float)[:, None, None, None] + np.zeros((4, 1, 4, 5))
    values[3, 0, 0, 0] = np.nan
    values[:, 0, 1, 1] = np.nan
    target = cube(values)
    plain = Persistence().fit(target).predict(target, 1)
    assert np.isnan(plain.values[0, 0, 0, 0])
    filled = Persistence(skipna=True).fit(target).predict(target, 1)
    assert (
        filled.values[0, 0, 0, 0] == 2
        and filled.values[0, 0, 0, 1] == 3
        and np.isnan(filled.values[0, 0, 1, 1])
    )


def test_historical_average__recovers_weekly_signal_exactly():
    target = periodic(weeks=3)
    model = HistoricalAverage(by="week").fit(target.isel(time=slice(0, 24 * 14)))
    fc = model.predict_many(target, np.arange(24 * 14 - 1, 24 * 21 - 24, 5), 24)
    assert per_lead(fc, target)["mae"].max() == 0


def test_historical_average__day_slots_recover_daily_signal_exactly():
    hours = np.arange(24 * 4) % 24
    target = cube((hours[:, None, None, None] + np.zeros((1, 1, 4, 5))) * 1.5)
    fc = (
        HistoricalAverage(by="day")
        .fit(target.isel(time=slice(0, 48)))
        .predict_many(target, [50, 70], 24)
    )
    assert per_lead(fc, target)["mae"].max() == 0


def test_historical_average__unseen_week_slot_falls_back_to_day_slot():
    target = periodic(weeks=2)
    values = target.values.copy()
    monday_10 = (np.asarray(target.time.dt.day_of_week) == 0) & (
        np.asarray(target.time.dt.hour) == 10
    )
    values[monday_10] = np.nan
    model = HistoricalAverage().fit(target.copy(data=values))
    day_mean = np.nanmean(
        values[np.asarray(target.time.dt.hour) == 10], axis=0
    )  # the other 12 days at 10:00
    np.testing.assert_allclose(
        model.lookup(pd.DatetimeIndex(["2024-01-22 10:00"]))[0], day_mean, rtol=1e-6
    )


def test_ridge__beats_persistence_on_noisy_periodic_signal():
    target = periodic(weeks=3, noise=0.8, seed=1)
    train = target.isel(time=slice(0, 24 * 14))
    issue = np.arange(24 * 14, 24 * 21 - 6, 3)
    ridge = RidgeBaseline(lags=3, horizon=6).fit(train).predict_many(target, issue, 6)
    persistence = Persistence().fit(train).predict_many(target, issue, 6)
    assert per_lead(ridge, target)["mae"].mean() < 0.8 * per_lead(persistence, target)["mae"].mean()


def test_ridge__nan_lags_are_filled_with_historical_average():
    target = periodic(weeks=2)
    values = target.values.copy()
    values[-1, 0, 0, 0] = np.nan
    model = RidgeBaseline(lags=2, horizon=2).fit(target)
    fc = model.predict(target.copy(data=values), 2)
    assert np.isfinite(fc.values).all()
    assert mae(fc, model.predict(target, 2)) < 0.5


def test_predict__band_mismatch_raises():
    model = Persistence().fit(cube(np.zeros((4, 1, 4, 5))))
    with pytest.raises(
        ModelMismatchError, match=r"bands \['inflow'\] differ from the fitted bands \['density'\]"
    ):
        model.predict(cube(np.zeros((4, 1, 4, 5)), bands=("inflow",)), 2)


def test_predict__grid_mismatch_raises():
    model = Persistence().fit(cube(np.zeros((4, 1, 4, 5))))
    other = Grid("EPSG:32633", Affine(100, 0, 600000, 0, -100, 5000000), (4, 5))
    with pytest.raises(ModelMismatchError, match="differs from the fitted grid"):
        model.predict(cube(np.zeros((4, 1, 4, 5)), grid=other), 2)


def test_predict__cadence_mismatch_raises():
    model = Persistence().fit(cube(np.zeros((4, 1, 4, 5))))
    with pytest.raises(
        ModelMismatchError,
        match="cadence 0 days 00:15:00 differs from the fitted cadence 0 days 01:00",
    ):
        model.predict(cube(np.zeros((4, 1, 4, 5)), freq="15min"), 2)


def test_predict__zero_horizon_raises():
    model = Persistence().fit(cube(np.zeros((4, 1, 4, 5))))
    with pytest.raises(ConfigError, match="horizon=0 is invalid"):
        model.predict(cube(np.zeros((4, 1, 4, 5))), 0)


def test_predict_many__history_too_short_raises():
    model = RidgeBaseline(lags=3, horizon=2).fit(periodic(weeks=1))
    with pytest.raises(
        ConfigError,
        match=r"issue index 1 is out of range for 168 time steps: RidgeBaseline needs "
        r"indices in \[2, 168\)",
    ):
        model.predict_many(periodic(weeks=1), [1, 5], 2)


def test_ridge__horizon_beyond_fit_raises():
    model = RidgeBaseline(lags=2, horizon=2).fit(periodic(weeks=1))
    with pytest.raises(
        ConfigError, match=r"horizon=4 exceeds the 2 leads .* RidgeBaseline\(horizon=4\)"
    ):
        model.predict(periodic(weeks=1), 4)


def test_ridge__series_too_short_raises():
    with pytest.raises(
        ConfigError, match="has 4 time steps but one window needs lags \\+ horizon = 3 \\+ 2 = 5"
    ):
        RidgeBaseline(lags=3, horizon=2).fit(cube(np.zeros((4, 1, 4, 5))))


def test_fit__unknown_keyword_raises():
    with pytest.raises(ConfigError, match=r"unexpected keyword\(s\) \['epochs'\]"):
        Persistence().fit(cube(np.zeros((4, 1, 4, 5))), epochs=3)


def test_fit__wrong_dims_raises():
    da = cube(np.zeros((4, 1, 4, 5))).isel(band=0)
    with pytest.raises(
        ConfigError, match=r"has dims \('time', 'y', 'x'\): expected \(time, band, y, x\)"
    ):
        Persistence().fit(da)


def test_historical_average__bad_slot_kind_raises():
    with pytest.raises(ConfigError, match="by='month' is invalid"):
        HistoricalAverage(by="month").fit(cube(np.zeros((4, 1, 4, 5))))


def test_get_baseline__unknown_raises():
    with pytest.raises(
        ValueError,
        match=r"unknown baseline 'arima': expected one of \['historical_average', "
        r"'persistence', 'ridge'\]",
    ):
        get_baseline("arima")


def test_historical_average__causal_uses_earlier_frames_only():
    # hourly, 3 days: day d holds the value d + 1 everywhere
    values = np.repeat(np.arange(1, 4, dtype="float32"), 24)[:, None, None, None] * np.ones(
        (1, 1, 4, 5), "float32"
    )
    target = cube(values)
    ha = HistoricalAverage(by="day").fit(target)
    causal = ha.causal(values, pd.DatetimeIndex(target.time.values))
    assert np.isnan(causal[0]).all()  # nothing earlier at all
    assert (
        causal[1, 0, 0, 0] == 1.0
    )  # day 1, 01:00: no earlier 01:00 → overall mean of earlier frames
    assert causal[24, 0, 0, 0] == 1.0  # day 2, 00:00: mean of day 1 at 00:00
    assert causal[48 + 5, 0, 0, 0] == 1.5  # day 3, 05:00: mean of days 1 and 2 at 05:00


def test_ridge__does_not_copy_the_in_sample_average():
    # two days of noise: every week slot is seen once, so the in-sample slot average equals each
    # training target; a leaky Ridge learns to copy it, a causal one cannot
    rng = np.random.default_rng(0)
    target = cube(rng.poisson(2.0, (48, 1, 4, 5)).astype("float32"), freq="h")
    ridge = RidgeBaseline(lags=2, horizon=3).fit(target)
    ha = HistoricalAverage(by="week").fit(target)
    issues = np.arange(30, 40)
    r = ridge.predict_many(target, issues, 3).values
    h = ha.predict_many(target, issues, 3).values
    assert np.abs(r - h).mean() > 0.3
