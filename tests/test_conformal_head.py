"""Tests of the conformalised quantile head (``calibrate(..., adaptive="head")``): the conformal shift,
the stored calibration, its coverage on the calibration windows, predictions, persistence and its
checks on load, the refusal without a head, ensembles and the CLI."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble
from trafficrnn.errors import CalibrationError, ConfigError, ModelFileError
from trafficrnn.estimation.conformal_head import conformal_shift, conformalise
from trafficrnn.estimation.evaluation import model_forecasts
from trafficrnn.estimation.heldout import calibration_issues
from trafficrnn.estimator import TrafficForecaster

from .test_estimator import FAST, density_series
from .test_quantile_head import HEAD, LEVELS, TRAINED, cli_head_model


@pytest.fixture(scope="module")
def cqr():
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **TRAINED).fit(da)
    return est.calibrate(da, adaptive="head"), da


def test_conformal_shift__finite_sample_levels():
    s = np.arange(1.0, 11.0)  # n = 10
    # tau 0.9: level min(1, 0.99) -> 'higher' -> 10; tau 0.1: level 0.1 - 0.09 = 0.01 -> 'lower' -> 1
    assert conformal_shift(s, 0.9) == 10.0 and conformal_shift(s, 0.1) == 1.0
    assert conformal_shift(np.append(s, np.nan), 0.5) == 6.0  # NaN skipped, level 0.55 'higher'
    assert np.isnan(conformal_shift(np.array([np.nan]), 0.5))


def test_conformalise__sorted_and_clipped():
    values = np.array([[1.0, 2.0], [3.0, 2.5]]).reshape(2, 1, 2, 1, 1)  # level, lead, band, y, x
    shifts = np.array([[[-2.0, 1.0]], [[0.0, -1.0]]])  # (level, lead, band)
    out = conformalise(values, shifts)
    np.testing.assert_allclose(out[:, 0, :, 0, 0], [[0.0, 1.5], [3.0, 3.0]])


def test_calibrate_head__stores_shifts(cqr):
    est, _ = cqr
    cal = est.calibration_
    assert cal.scale == "head" and cal.levels == list(LEVELS)
    assert cal.shifts.shape == (len(LEVELS), est.horizon, len(est.bands_))
    assert np.isfinite(cal.shifts).all() and cal.horizon == est.horizon


def test_calibrate_head__covers_the_calibration_windows(cqr):
    est, da = cqr
    issues = calibration_issues(est, pd.DatetimeIndex(da.time.values), "val", da, None)
    fc = model_forecasts(est, da, None, issues, est.horizon, None, None, lambda n: None, LEVELS)
    truth = np.stack([da.values[issues + 1 + h] for h in range(est.horizon)], axis=1)
    q10, q90 = fc.sel(quantile=0.1).values, fc.sel(quantile=0.9).values
    ok = np.isfinite(truth)
    below90, below10 = (truth <= q90)[ok].mean(), (truth < q10)[ok].mean()
    assert below90 >= 0.85 and below10 <= 0.15, (below90, below10)
    assert 0.7 <= ((truth >= q10) & (truth <= q90))[ok].mean() <= 0.97


def test_predict__conformal_head_contract(cqr):
    est, da = cqr
    fc = est.predict(da, quantiles=(0.1, 0.3, 0.5, 0.9))
    assert fc.dims == ("quantile", "lead", "band", "y", "x")
    assert fc.attrs["quantile_method"] == "conformalised quantile head"
    assert (fc.values >= 0).all() and (fc.diff("quantile") >= 0).all()
    many = est.predict_many(da, [20, 40], quantiles=LEVELS)
    assert many.dims == ("quantile", "issued", "lead", "band", "y", "x")
    assert (many.values >= 0).all() and (many.diff("quantile") >= 0).all()
    raw = copy.deepcopy(est)
    raw.calibration_ = None
    assert not np.allclose(
        raw.predict(da, quantiles=LEVELS).values, est.predict(da, quantiles=LEVELS).values
    )
    with pytest.raises(ConfigError, match=r"level 0.05 lies outside"):
        est.predict(da, quantiles=(0.05, 0.5))
    table = est.evaluate(da, baselines=(), quantiles=LEVELS)
    assert table.loc[est.model, "crps"].notna().all()


def test_save_load__round_trip(cqr, tmp_path):
    est, da = cqr
    loaded = TrafficForecaster.load(est.save(tmp_path / "m"))
    assert loaded.calibration_.scale == "head"
    np.testing.assert_allclose(loaded.calibration_.shifts, est.calibration_.shifts, rtol=1e-5)
    np.testing.assert_allclose(
        loaded.predict(da, quantiles=LEVELS).values,
        est.predict(da, quantiles=LEVELS).values,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["shifts"].pop(), "shifts of shape"),
        (lambda c: c["shifts"][0][0].__setitem__(0, float("nan")), "expected finite shifts"),
        (lambda c: c.update(levels=[0.2, 0.5, 0.9]), "the calibration \\(adaptive='head'\\) has"),
    ],
)
def test_load__tampered_shifts_refused(cqr, tmp_path, edit, message):
    est, _ = cqr
    path = est.save(tmp_path / "bad")
    config = json.loads((path / "config.json").read_text())
    edit(config["calibration"])
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=message):
        TrafficForecaster.load(path)


def test_calibrate_head__refused_without_a_head():
    da = density_series(periods=60)
    est = TrafficForecaster("convgru", **FAST).fit(da)
    with pytest.raises(CalibrationError, match="adaptive='head' conformalises a quantile head"):
        est.calibrate(da, adaptive="head")
    assert est.calibration_ is None


def test_ensemble__shifts_of_the_averaged_quantiles(tmp_path):
    da = density_series(periods=60)
    ens = ForecastEnsemble(TrafficForecaster("convgru", **HEAD), members=2).fit(da)
    averaged = ens.predict(da, quantiles=LEVELS)
    ens.calibrate(da, adaptive="head")
    fc = ens.predict(da, quantiles=LEVELS)
    expected = conformalise(averaged.values, ens.calibration_.shifts)
    np.testing.assert_allclose(fc.values, expected, rtol=1e-5, atol=1e-6)
    assert fc.attrs["quantile_method"] == "conformalised quantile head"
    loaded = ForecastEnsemble.load(ens.save(tmp_path / "e"))
    np.testing.assert_allclose(loaded.predict(da, quantiles=LEVELS).values, fc.values, rtol=1e-5)


def test_cli__calibrate_head_then_forecast(tmp_path):
    run = cli_head_model(tmp_path)
    done = run(main, ["calibrate", str(tmp_path / "m"), str(tmp_path / "stack"), "--adaptive",
                      "head"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "calibrated the quantile head" in done.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["calibration"]["scale"] == "head"
    made = run(main, ["forecast", str(tmp_path / "m"), str(tmp_path / "stack"), "--out",
                      str(tmp_path / "q.tif"), "--quantiles", "0.1,0.5,0.9"])  # fmt: skip
    assert made.exit_code == 0, made.output
    with rasterio.open(tmp_path / "q.tif") as src:
        assert src.count == 6
        values = src.read()
    assert (values >= 0).all()
