"""Tests of trafficrnn.estimation.context: historical-average and past-period maps, causality, cell means, persistence."""

import numpy as np
import pandas as pd
import pytest

from trafficrnn.errors import ConfigError
from trafficrnn.estimation.context import Context, parse_context

TIMES = pd.date_range("2024-01-01", periods=72, freq="h")  # Monday 00:00, three days


def series():
    """(72, 1, 2, 3): value = day + 1 + hour / 100 in every cell, cell (1, 2) doubled."""
    day = np.arange(72) // 24
    hour = np.arange(72) % 24
    y = np.ones((72, 1, 2, 3), np.float32) * (day + 1 + hour / 100)[:, None, None, None]
    y[:, :, 1, 2] *= 2
    return y.astype(np.float32)


def test_parse_context__valid_and_leaky_periods():
    assert parse_context(["HA", "1D"], pd.Timedelta("1h"), 6) == ["ha", "1D"]
    with pytest.raises(ConfigError, match="shorter than the horizon"):
        parse_context(["3h"], pd.Timedelta("1h"), 6)


def test_parse_context__unknown_entry():
    with pytest.raises(ConfigError, match="context entry 'weather' is invalid"):
        parse_context(["weather"], pd.Timedelta("1h"), 6)


def test_series__period_points_one_day_back_with_validity():
    y = series()
    ctx = Context(["1D"]).fit(y[:48], TIMES[:48], pd.Timedelta("1h"))
    maps = ctx.series(y, TIMES, 48)
    assert maps.shape == (72, 2, 2, 3) and ctx.future_channels == 2
    assert (maps[:24, 1] == 0).all() and (maps[24:, 1] == 1).all()  # no value a day before day 1
    np.testing.assert_allclose(maps[30, 0], y[6, 0])


def test_series__historical_average_is_causal_in_training():
    y = series()
    ctx = Context(["ha"]).fit(y[:48], TIMES[:48], pd.Timedelta("1h"))
    maps = ctx.series(y, TIMES, 48)
    # Tuesday 05:00 is a new week slot: causal fallback = mean of Monday 05:00 (day slot), never itself
    assert maps[29, 0, 0, 0] == pytest.approx(y[5, 0, 0, 0])
    # after the training split: the fitted table (Tuesday 05:00 was seen once: its own value)
    np.testing.assert_allclose(ctx.at(y, TIMES, TIMES.values[[29]][None])[0, 0], y[29])


def test_cell_mean__training_mean_per_cell():
    y = series()
    ctx = Context([], cell_mean=True).fit(y[:48], TIMES[:48], pd.Timedelta("1h"))
    static = ctx.static()
    assert static.shape == (1, 2, 3)
    assert static[0, 1, 2] == pytest.approx(2 * static[0, 0, 0])


def test_restore__round_trip():
    y = series()
    ctx = Context(["ha", "1D"], cell_mean=True).fit(y[:48], TIMES[:48], pd.Timedelta("1h"))
    again = Context.restore(ctx.to_dict(), ctx.arrays())
    valid = TIMES.values[[50, 51]][None]
    np.testing.assert_array_equal(again.at(y, TIMES, valid), ctx.at(y, TIMES, valid))
    np.testing.assert_array_equal(again.static(), ctx.static())


def test_restore__missing_array():
    ctx = Context(["ha"]).fit(series()[:48], TIMES[:48], pd.Timedelta("1h"))
    with pytest.raises(ConfigError, match="incomplete"):
        Context.restore(ctx.to_dict(), {})
