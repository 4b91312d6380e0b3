"""The ``timezone`` option: naive stack times are UTC; calendar channels and historical-average slots read
the local wall clock of ``timezone`` (DST-aware), in the estimator, the baselines and the ``ha`` context."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, ModelMismatchError, TimestampError
from trafficrnn.estimation.context import Context
from trafficrnn.models.baselines import HistoricalAverage, RidgeBaseline
from trafficrnn.timeaxis import time_features, wall_clock

VIENNA = "Europe/Vienna"
GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (2, 3))
FAST = dict(
    input_steps=6,
    horizon=3,
    progress=False,
    model_kwargs=dict(hidden=(8,)),
    trainer_kwargs=dict(max_epochs=1, batch_size=64, patience=0),
)


def hour_features(hours, weekday):
    """The four calendar features of local ``hours`` (float) on ``weekday`` (Monday = 0), by hand."""
    day = np.asarray(hours, dtype=float) / 24
    week = (weekday + day) / 7
    return np.stack(
        [
            np.sin(2 * np.pi * day),
            np.cos(2 * np.pi * day),
            np.sin(2 * np.pi * week),
            np.cos(2 * np.pi * week),
        ],
        axis=1,
    )


def peak_series(zone=None):
    """Hourly UTC times, Mon 2024-03-25 to Sun 2024-04-07 (Vienna's spring-forward on Sun 2024-03-31, 01:00
    UTC), 1 vehicle everywhere but 10 at 08:00 Vienna time every day: 07:00 UTC until Sat 30 March, 06:00 UTC
    from Sun 31 March."""
    times = pd.date_range("2024-03-25 00:00", "2024-04-07 23:00", freq="h")
    local = times.tz_localize("UTC").tz_convert(VIENNA)
    values = np.where(local.hour == 8, 10.0, 1.0).astype("float32")
    cube = np.broadcast_to(values[:, None, None, None], (len(times), 1, *GRID.shape)).copy()
    da = GRID.attach(
        xr.DataArray(
            cube,
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
            attrs={"units": "vehicles"},
        )
    )
    if zone:
        da.attrs["timezone"] = zone
    return da


# -- time features of naive UTC times ---------------------------------------------------------
def test_time_features__naive_utc_times_read_on_the_local_clock():
    # Mon 2024-06-03 06:00 UTC = 08:00 in Vienna (CEST, UTC+2); Mon 2024-01-08 06:00 UTC = 07:00 (CET, UTC+1)
    utc = pd.DatetimeIndex(["2024-06-03 06:00", "2024-01-08 06:00"])
    out = time_features(utc, timezone=VIENNA)
    np.testing.assert_array_equal(
        out, time_features(pd.DatetimeIndex(["2024-06-03 08:00", "2024-01-08 07:00"]))
    )
    np.testing.assert_allclose(out, hour_features([8, 7], 0), atol=1e-6)


def test_time_features__without_timezone_the_utc_clock_as_before():
    utc = pd.DatetimeIndex(["2024-06-03 06:00"])
    np.testing.assert_allclose(time_features(utc), hour_features([6], 0), atol=1e-6)


def test_wall_clock__spring_forward_keeps_the_local_clock_continuous():
    # Vienna, Sun 2024-03-31: 01:00 UTC = 03:00 CEST (02:00-03:00 local does not exist)
    utc = pd.date_range("2024-03-31 00:00", "2024-03-31 02:00", freq="15min")
    local = wall_clock(utc, timezone=VIENNA)
    expected = pd.DatetimeIndex(
        [
            "2024-03-31 01:00",
            "2024-03-31 01:15",
            "2024-03-31 01:30",
            "2024-03-31 01:45",
            "2024-03-31 03:00",
            "2024-03-31 03:15",
            "2024-03-31 03:30",
            "2024-03-31 03:45",
            "2024-03-31 04:00",
        ]
    )
    assert list(local) == list(expected)
    # one real step of 15 minutes, 1 h 15 min on the clock: the skipped hour only
    steps = np.diff(local.values).astype("timedelta64[m]").astype(int)
    assert list(np.unique(steps)) == [15, 75]
    np.testing.assert_allclose(
        time_features(utc, timezone=VIENNA),
        hour_features([1, 1.25, 1.5, 1.75, 3, 3.25, 3.5, 3.75, 4], 6),
        atol=1e-6,
    )


def test_wall_clock__fall_back_repeats_the_local_hour_without_error():
    # Vienna, Sun 2024-10-27: 01:00 UTC = 02:00 CET again (03:00 CEST falls back)
    utc = pd.date_range("2024-10-27 00:00", periods=4, freq="30min")
    np.testing.assert_allclose(
        time_features(utc, timezone=VIENNA), hour_features([2, 2.5, 2, 2.5], 6), atol=1e-6
    )


def test_wall_clock__naive_times_of_the_zone_itself_are_kept():
    local = pd.DatetimeIndex(
        ["2024-03-31 02:30", "2024-10-27 02:30"]
    )  # nonexistent, ambiguous in Vienna
    assert wall_clock(local, timezone=VIENNA, naive_zone=VIENNA).equals(local)
    assert wall_clock(local, naive_zone=VIENNA).equals(local)  # no timezone: as they read


def test_wall_clock__naive_times_of_another_zone_are_converted_or_refused():
    ny = pd.DatetimeIndex(["2024-06-03 02:00"])  # 06:00 UTC, 08:00 in Vienna
    assert list(wall_clock(ny, timezone=VIENNA, naive_zone="America/New_York")) == [
        pd.Timestamp("2024-06-03 08:00")
    ]
    with pytest.raises(TimestampError, match="America/New_York wall-clock"):
        wall_clock(
            pd.DatetimeIndex(["2024-11-03 01:30"]), timezone=VIENNA, naive_zone="America/New_York"
        )
    with pytest.raises(ConfigError, match="naive_zone='Mars/Olympus' is not a known IANA zone"):
        wall_clock(ny, timezone=VIENNA, naive_zone="Mars/Olympus")


# -- historical average and ridge ----------------------------------------------------------------
def test_historical_average__timezone_keeps_the_peak_in_one_local_slot_across_dst():
    da = peak_series()
    sharp = HistoricalAverage(by="day", timezone=VIENNA).fit(da).table_[:, 0, 0, 0]
    np.testing.assert_array_equal(sharp, np.where(np.arange(24) == 8, 10.0, 1.0))
    # on the UTC clock the peak is split between 07:00 (6 days before the change) and 06:00 (8 days from it)
    smeared = HistoricalAverage(by="day").fit(da).table_[:, 0, 0, 0]
    np.testing.assert_allclose(smeared[[6, 7]], [(8 * 10 + 6) / 14, (6 * 10 + 8) / 14], rtol=1e-6)
    assert smeared.max() < 6.2 and np.all(np.delete(smeared, [6, 7]) == 1)


def test_historical_average__forecasts_the_peak_at_the_local_hour():
    da = peak_series()
    ha = HistoricalAverage(by="day", timezone=VIENNA).fit(da.isel(time=slice(0, -24)))
    fc = ha.predict_many(da, [len(da.time) - 24 + 4], horizon=3)  # issued Sun 7 April 04:00 UTC
    assert [str(t)[11:16] for t in fc.valid_time.values[0]] == ["05:00", "06:00", "07:00"]  # UTC
    np.testing.assert_array_equal(fc.values[0, :, 0, 0, 0], [1, 10, 1])  # 06:00 UTC = 08:00 CEST
    assert HistoricalAverage(timezone=VIENNA).get_params() == {"by": "week", "timezone": VIENNA}


def test_historical_average__stack_that_records_its_zone_is_read_on_its_clock():
    # the week after the change as naive Vienna wall-clock times (a stack recording attrs["timezone"]): read
    # as they are, not converted once more (that would put the peak at 10:00)
    utc = peak_series().sel(time=slice("2024-03-31T22:00", None))
    local = utc.assign_coords(time=wall_clock(utc.time.values, timezone=VIENNA))
    assert str(local.time.values[0])[:16] == "2024-04-01T00:00"
    local.attrs["timezone"] = VIENNA
    table = HistoricalAverage(by="day", timezone=VIENNA).fit(local).table_[:, 0, 0, 0]
    np.testing.assert_array_equal(table, np.where(np.arange(24) == 8, 10.0, 1.0))
    assert (
        HistoricalAverage(by="day").fit(local).table_[8, 0, 0, 0] == 10
    )  # no timezone: as they read too


def test_ridge__timezone_reaches_its_average_and_time_features():
    da = peak_series()
    ridge = RidgeBaseline(lags=2, horizon=3, timezone=VIENNA).fit(da)
    assert ridge.get_params()["timezone"] == VIENNA and ridge.average_.timezone == VIENNA
    np.testing.assert_array_equal(
        ridge.average_.table_[:, 0, 0, 0][[8 + 24 * d for d in range(7)]], 10
    )
    times = pd.DatetimeIndex(da.time.values)
    feats, _ = ridge._features(da.values, times, np.array([100]), 3)
    local = wall_clock(times[101:104], timezone=VIENNA)
    np.testing.assert_allclose(feats[0, -12:], time_features(local).ravel(), atol=1e-6)


# -- the ha context ---------------------------------------------------------------------------------
def test_context__ha_slots_follow_the_timezone_and_are_saved():
    da = peak_series()
    times = pd.DatetimeIndex(da.time.values)
    ctx = Context(["ha"], timezone=VIENNA).fit(da.values, times, pd.Timedelta("1h"))
    np.testing.assert_array_equal(ctx.ha_.table_[:, 0, 0, 0][[8 + 24 * d for d in range(7)]], 10)
    assert np.sum(ctx.ha_.table_[:, 0, 0, 0] == 10) == 7
    back = Context.restore(ctx.to_dict(), ctx.arrays())
    assert back.timezone == VIENNA and back.ha_.timezone == VIENNA
    np.testing.assert_array_equal(
        back.at(da.values, times, times.values[None, 150:160]),
        ctx.at(da.values, times, times.values[None, 150:160]),
    )
    # a context saved before it had a timezone reads the naive times as they are
    old = {k: v for k, v in ctx.to_dict().items() if k not in ("timezone", "naive_zone")}
    assert Context.restore(old, ctx.arrays()).ha_.timezone is None


# -- the estimator ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vienna_model():
    from trafficrnn.estimator import TrafficForecaster

    da = peak_series()
    return TrafficForecaster("convgru", timezone=VIENNA, context=("ha",), **FAST).fit(da), da


def test_estimator__calendar_channels_on_the_local_clock(vienna_model):
    from trafficrnn.estimation.inputs import step_vectors

    est, da = vienna_model
    times = pd.DatetimeIndex(da.time.values)
    assert est.naive_zone_ is None  # the stack records no zone: its naive times are UTC
    np.testing.assert_allclose(
        step_vectors(est, times), time_features(wall_clock(times, timezone=VIENNA))
    )
    table = est.context_.ha_.table_[:, 0, 0, 0]  # normalised targets: the peak is 10 times the rest
    assert list(np.flatnonzero(table > 2 * table.min())) == [8 + 24 * d for d in range(7)]


def test_estimator__evaluate_gives_the_baselines_its_timezone(vienna_model, monkeypatch):
    import trafficrnn.estimation.evaluation as evaluation

    built = {}
    real = evaluation.get_baseline

    def spy(name, **kw):
        built[name] = real(name, **kw)
        return built[name]

    monkeypatch.setattr(evaluation, "get_baseline", spy)
    est, da = vienna_model
    table = est.evaluate(da, split="test")
    assert built["historical_average"].timezone == VIENNA and built["ridge"].timezone == VIENNA
    assert "timezone" not in built["persistence"].get_params()
    # the same scores as a historical average fitted by hand on the local clock
    fit_on = evaluation.evaluation_issues(est, pd.DatetimeIndex(da.time.values), "test", da).fit_on
    ha = HistoricalAverage(timezone=VIENNA).fit(da.isel(time=fit_on))
    assert ha.table_.tolist() == built["historical_average"].table_.tolist()
    assert np.isfinite(table.loc["historical_average", "mae"]).all()


def test_estimator__save_load_keeps_the_zones_and_old_models_keep_their_clock(
    vienna_model, tmp_path
):
    from trafficrnn.estimator import TrafficForecaster

    est, da = vienna_model
    est.save(tmp_path / "m")
    back = TrafficForecaster.load(tmp_path / "m")
    assert back.timezone == VIENNA and back.naive_zone_ is None and back.context_.timezone == VIENNA
    np.testing.assert_allclose(
        back.predict(da).values, est.predict(da).values, rtol=1e-5, atol=1e-5
    )
    # a model saved before the zone of its times was recorded read them on its timezone's clock
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["naive_zone"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert TrafficForecaster.load(tmp_path / "m").naive_zone_ == VIENNA


def test_estimator__refuses_a_stack_on_another_clock(vienna_model):
    est, da = vienna_model
    other = da.copy()
    other.attrs["timezone"] = "America/New_York"
    with pytest.raises(ModelMismatchError, match="wall-clock times of America/New_York"):
        est.predict(other)
    same = da.copy()
    same.attrs["timezone"] = "UTC"  # UTC recorded: the same clock
    est.predict(same)
