"""Tests of exogenous covariates: the table checks, the lookup of the row in force, the estimator,
saving and loading, and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from trafficrnn.cli import main
from trafficrnn.errors import InputFileError, ModelFileError, ModelMismatchError, TimestampError
from trafficrnn.estimation.covariates import Covariates, check_covariates, lookup, read_covariates
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack

from .test_estimator import FAST, density_series


def daily(days=5, start="2024-04-30", **extra):
    """A daily table: temperature 10, 11, 12 ... and rain on the second day."""
    index = pd.date_range(start, periods=days, freq="D")
    table = pd.DataFrame(
        {"temp": 10.0 + np.arange(days), "rain": [0.0, 1.0] + [0.0] * (days - 2)}, index=index
    )
    for name, values in extra.items():
        table[name] = values
    return table


# -- the table ------------------------------------------------------------------------------
def test_lookup__reads_the_row_in_force_for_the_whole_day():
    table = check_covariates(daily())
    times = pd.to_datetime(
        ["2024-04-30 00:00", "2024-05-01 00:00", "2024-05-01 23:45", "2024-05-04 23:59"]
    )
    np.testing.assert_array_equal(lookup(table, times), [[10, 0], [11, 1], [11, 1], [14, 0]])


def test_lookup__time_after_the_last_day_refused():
    with pytest.raises(
        TimestampError, match=r"no row for 2024-05-05 00:00:00.*2024-04-30 .. 2024-05-04"
    ):
        lookup(check_covariates(daily()), pd.to_datetime(["2024-05-04 12:00", "2024-05-05 00:00"]))


def test_lookup__time_before_the_first_row_refused():
    with pytest.raises(TimestampError, match="no row for 2024-04-29 23:30"):
        lookup(check_covariates(daily()), pd.to_datetime(["2024-04-29 23:30"]))


def test_lookup__missing_day_refused():
    table = check_covariates(daily().drop(pd.Timestamp("2024-05-02")))
    assert lookup(table, pd.to_datetime(["2024-05-03 08:00"]))[0, 0] == 13
    with pytest.raises(TimestampError, match="no row for 2024-05-02 08:00"):
        lookup(table, pd.to_datetime(["2024-05-02 08:00"]))


def test_lookup__naive_table_and_aware_times_refused():
    times = pd.to_datetime(["2024-05-01 08:00"]).tz_localize("UTC")
    with pytest.raises(TimestampError, match="naive.*aware"):
        lookup(check_covariates(daily()), times)


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda t: t.to_numpy(), ModelMismatchError, "must be a pandas DataFrame"),
        (lambda t: t.reset_index(drop=True), TimestampError, "expected a DatetimeIndex"),
        (lambda t: t.iloc[::-1], TimestampError, "not sorted"),
        (
            lambda t: pd.concat([t, t.iloc[:1]]).sort_index(),
            TimestampError,
            "2024-04-30 00:00:00 twice",
        ),
        (lambda t: t.iloc[:1], ModelMismatchError, "1 row"),
        (
            lambda t: t.assign(rain=["T", "0", "0", "0", "0"]),
            ModelMismatchError,
            r"\['rain'\] are not numeric.*'T'",
        ),
        (
            lambda t: t.assign(temp=[1.0, np.nan, 1, 1, 1]),
            ModelMismatchError,
            "'temp' is nan at 2024-05-01",
        ),
    ],
)
def test_check_covariates__refusals(mutate, error, match):
    with pytest.raises(error, match=match):
        check_covariates(mutate(daily()), "weather")


def test_covariates__standardised_on_the_training_times():
    table = daily(flat=5.0)
    train = pd.date_range("2024-04-30", "2024-05-01 23:00", freq="h")  # 24 h at 10, 24 h at 11
    cov = Covariates.fit(table, train)
    assert cov.columns == ["temp", "rain", "flat"]
    np.testing.assert_allclose(cov.mean, [10.5, 0.5, 5.0])
    np.testing.assert_allclose(cov.scale, [0.5, 0.5, 1.0])  # a constant column keeps a scale of 1
    values = cov.at(table, pd.to_datetime(["2024-05-03 10:00"]))
    np.testing.assert_allclose(values, [[(13 - 10.5) / 0.5, (0 - 0.5) / 0.5, 0.0]])
    assert values.dtype == np.float32
    with pytest.raises(ModelMismatchError, match=r"lacks the column\(s\) \['flat'\]"):
        cov.at(daily(), train)
    assert Covariates.from_dict(json.loads(json.dumps(cov.to_dict()))).to_dict() == cov.to_dict()


@pytest.mark.parametrize(
    "spec",
    [
        {"columns": ["a"], "mean": [0.0]},
        {"columns": ["a"], "mean": [0.0], "scale": [0.0]},
        {"columns": ["a", "a"], "mean": [0.0, 0.0], "scale": [1.0, 1.0]},
        {"columns": ["a"], "mean": [float("nan")], "scale": [1.0]},
        {"columns": ["a"], "mean": [0.0, 1.0], "scale": [1.0]},
        {"columns": [], "mean": [], "scale": []},
    ],
)
def test_covariates__from_dict_refuses_bad_specs(spec):
    with pytest.raises(ValueError, match="covariates"):
        Covariates.from_dict(spec)


def test_read_covariates__iso_csv(tmp_path):
    path = tmp_path / "weather.csv"
    path.write_text("date,temp,rain\n2024-04-30,10,0\n2024-05-01,11,1.5\n")
    table = read_covariates(path)
    assert list(table.columns) == ["temp", "rain"]
    assert list(table.index) == [pd.Timestamp("2024-04-30"), pd.Timestamp("2024-05-01")]
    assert table.loc["2024-05-01", "rain"] == 1.5


@pytest.mark.parametrize(
    "text, match",
    [
        ("date,temp\n30-4-2024,10\n1-5-2024,11\n", r"'30-4-2024', expected ISO dates"),
        ("date\n2024-04-30\n", "expected a date column then numeric columns"),
        ("date,temp\n2024-04-30,T\n2024-05-01,1\n", "not numeric"),
    ],
)
def test_read_covariates__refusals_name_the_file(tmp_path, text, match):
    path = tmp_path / "weather.csv"
    path.write_text(text)
    with pytest.raises(InputFileError, match=match) as info:
        read_covariates(path)
    assert "weather.csv" in str(info.value)


def test_read_covariates__missing_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_covariates(tmp_path / "nope.csv")


# -- the estimator ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def with_covariates():
    da = density_series()  # 2024-05-01 00:00 .. 05-02 15:45 every 15 min
    table = daily(days=4)
    return TrafficForecaster("convgru", **FAST).fit(da, covariates=table), da, table


def test_fit__covariates_join_the_calendar_channels(with_covariates):
    est, da, table = with_covariates
    assert est.covariates_.columns == ["temp", "rain"]
    assert est.model_.config["future_covariate_channels"] == 4 + 2
    assert est.model_.config["past_covariate_channels"] == 4 + 2
    fc = est.predict(da, covariates=table)
    assert fc.dims == ("lead", "band", "y", "x") and np.isfinite(fc.values).all()


def test_fit_init__keeps_the_covariate_scaling_its_weights_were_trained_on(with_covariates):
    est, da, table = with_covariates
    # fine-tuned on days whose table is far off the pretraining's (other mean and spread)
    other = table.copy()
    other["temp"] = [30.0, 30.0, 30.0, 31.0]
    other["rain"] = 0.0
    tuned = TrafficForecaster("convgru", **FAST).fit(da, covariates=other, init=est)
    assert tuned.covariates_.to_dict() == est.covariates_.to_dict()
    first = other.loc["2024-05-01"].to_numpy()  # the first frame's day, read as the weights expect
    expected = (first - est.covariates_.mean) / est.covariates_.scale
    np.testing.assert_allclose(
        tuned.covariates_.at(other, da.time.values[:1])[0], expected, rtol=1e-6
    )
    scratch = TrafficForecaster("convgru", **FAST).fit(da, covariates=other)
    assert scratch.covariates_.to_dict() != est.covariates_.to_dict()


def test_fit_init__refuses_covariates_the_model_does_not_read_and_the_other_way(with_covariates):
    est, da, table = with_covariates
    with pytest.raises(
        ModelMismatchError,
        match=r"init= was trained with the covariates \['temp', 'rain'\]: pass covariates=",
    ):
        TrafficForecaster("convgru", **FAST).fit(da, init=est)
    plain = TrafficForecaster("convgru", **FAST).fit(da)
    with pytest.raises(
        ModelMismatchError, match="init= was trained without covariates, yet covariates were given"
    ):
        TrafficForecaster("convgru", **FAST).fit(da, covariates=table, init=plain)


def test_predict__reads_the_covariates_of_the_lead_times(with_covariates):
    est, da, table = with_covariates
    base = est.predict(da, covariates=table).values
    hotter = table.copy()
    hotter.loc["2024-05-02", "temp"] += 30  # the lead times (05-02 16:00 ..) and the input frames
    assert np.abs(est.predict(da, covariates=hotter).values - base).max() > 1e-4
    elsewhere = table.copy()
    elsewhere.loc["2024-04-30", "temp"] += 30  # a day no input frame or lead time reads
    np.testing.assert_array_equal(est.predict(da, covariates=elsewhere).values, base)


def test_predict__covariate_vectors_equal_training_windows(with_covariates):
    from trafficrnn.estimation.inputs import normalised_inputs, prediction_batch, step_vectors
    from trafficrnn.windows import WindowDataset

    est, da, table = with_covariates
    times = pd.DatetimeIndex(da.time.values)
    x = normalised_inputs(est, da)
    start = 90
    item = WindowDataset(
        x, x, [start], est.input_steps, est.horizon, time_feats=step_vectors(est, times, table)
    )[0]
    batch = prediction_batch(
        est, x, times, np.array([start + est.input_steps - 1]), est.horizon, covariates=table
    )
    np.testing.assert_array_equal(batch["tf_in"][0].numpy(), item["tf_in"].numpy())
    np.testing.assert_array_equal(batch["tf_out"][0].numpy(), item["tf_out"].numpy())


def test_predict__covariates_missing_or_not_covering_refused(with_covariates):
    est, da, table = with_covariates
    with pytest.raises(ModelMismatchError, match=r"trained with the covariates \['temp', 'rain'\]"):
        est.predict(da)
    with pytest.raises(TimestampError, match="no row for 2024-05-02"):
        est.predict(da, covariates=table.iloc[:2])
    with pytest.raises(ModelMismatchError, match="lacks the column"):
        est.predict(da, covariates=table[["temp"]])


def test_predict__covariates_for_a_model_without_refused():
    da = density_series()
    est = TrafficForecaster("convgru", **FAST).fit(da)
    with pytest.raises(ModelMismatchError, match="trained without covariates"):
        est.predict(da, covariates=daily())


def test_fit__covariates_must_cover_the_stack():
    with pytest.raises(TimestampError, match="no row for 2024-05-02 00:00"):
        TrafficForecaster("convgru", **FAST).fit(density_series(), covariates=daily(days=2))


def test_evaluate__with_covariates(with_covariates):
    est, da, table = with_covariates
    scores = est.evaluate(da, covariates=table, split=None)
    assert set(scores.index.get_level_values("model")) == {
        "convgru",
        "persistence",
        "historical_average",
        "ridge",
    }


def test_save_load__covariates_round_trip(with_covariates, tmp_path):
    est, da, table = with_covariates
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["covariates"]["columns"] == ["temp", "rain"]
    again = TrafficForecaster.load(path)
    assert again.covariates_.columns == ["temp", "rain"]
    np.testing.assert_array_equal(
        again.predict(da, covariates=table).values, est.predict(da, covariates=table).values
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda c: c["covariates"].update(columns=["temp"], mean=[0.0], scale=[1.0]),
            "known-in-advance channel",
        ),
        (lambda c: c["covariates"].update(scale=[-1.0, 1.0]), "scale must be positive"),
        (lambda c: c.update(covariates=None), "known-in-advance channel"),
    ],
)
def test_load__tampered_covariates_refused(with_covariates, tmp_path, edit, match):
    est, _, _ = with_covariates
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=match):
        TrafficForecaster.load(path)


def test_forecast_large__passes_the_covariates(with_covariates, tmp_path):
    import rasterio

    from trafficrnn.inference import forecast_large

    est, da, table = with_covariates
    out = forecast_large(est, da, tmp_path / "big.tif", window=2, covariates=table)
    whole = est.predict(da, covariates=table)
    with rasterio.open(out) as src:
        np.testing.assert_allclose(
            src.read(), whole.values.reshape(-1, *whole.shape[2:]), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ModelMismatchError, match="trained with the covariates"):
        forecast_large(est, da, tmp_path / "other.tif", window=2)


# -- the CLI ------------------------------------------------------------------------------------
def test_cli__train_forecast_evaluate_with_covariates_and_no_val_split(tmp_path):
    da = density_series()
    stack = tmp_path / "grids"
    write_stack(da, stack)
    csv = tmp_path / "weather.csv"
    daily(days=4).rename_axis("date").to_csv(csv, date_format="%Y-%m-%d")
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "train",
            str(stack),
            "--model",
            "convgru",
            "--input-steps",
            "6",
            "--horizon",
            "3",
            "--hidden",
            "8",
            "--max-epochs",
            "1",
            "--covariates",
            str(csv),
            "--quiet",
            "--val",
            "0",
            "--test",
            "2024-05-02T10:00",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "n/a (no val split)" in res.output
    split = TrafficForecaster.load(tmp_path / "m").split_
    assert (
        split["val"] is None and split["test"][0] == "2024-05-02 08:30:00"
    )  # 6 input frames reach back
    assert TrafficForecaster.load(tmp_path / "m").covariates_.columns == ["temp", "rain"]
    assert "covariates temp, rain" in runner.invoke(main, ["info", str(tmp_path / "m")]).output
    res = runner.invoke(
        main, ["forecast", str(tmp_path / "m"), str(stack), "--out", str(tmp_path / "f.tif")]
    )
    assert res.exit_code == 2 and "trained with the covariates" in res.output
    res = runner.invoke(
        main,
        [
            "forecast",
            str(tmp_path / "m"),
            str(stack),
            "--covariates",
            str(csv),
            "--out",
            str(tmp_path / "f.tif"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main,
        ["evaluate", str(tmp_path / "m"), str(stack), "--covariates", str(csv), "--split", "all"],
    )
    assert res.exit_code == 0, res.output
    assert "ridge" in res.output


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_cli__bad_split_fraction_refused(tmp_path, value):
    res = CliRunner().invoke(
        main, ["train", str(tmp_path), "--val", value, "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 2 and "neither a fraction in [0, 1) nor a time" in res.output
