"""Tests of probabilistic forecasts: split-conformal calibration, quantile forecasts of a model and an
ensemble, their persistence, the probabilistic scores and baselines, and the CLI."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble
from trafficrnn.errors import (
    CalibrationError,
    ConfigError,
    GridError,
    ModelFileError,
)
from trafficrnn.estimation.calibration import (
    Calibration,
    check_quantiles,
    conformal_radii,
    quantile_forecast,
    quantile_label,
)
from trafficrnn.estimation.quantile_eval import climatology_quantiles, persistence_quantiles
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack
from trafficrnn.probabilistic import (
    DENSE_LEVELS,
    central_pairs,
    coverage,
    crps_ensemble,
    crps_quantiles,
    interval_width,
    pinball,
    score_quantiles,
)

from .test_estimator import FAST, GRID, density_series

LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def calibrated():
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **FAST).fit(da).calibrate(da)
    return est, da


def uncalibrated(est):
    other = copy.deepcopy(est)
    other.calibration_ = None
    return other


# -- scores, against hand-computed values ---------------------------------------------------------
def test_pinball__hand_values():
    # tau 0.9: 0.9 * (3 - 2) above the quantile, 0.1 * (2 - 1) below it
    assert pinball([2.0, 2.0], [3.0, 1.0], 0.9) == pytest.approx(0.5)
    assert pinball([2.0, np.nan], [3.0, 1.0], 0.1) == pytest.approx(0.1)


def test_pinball__tau_outside_unit_interval():
    with pytest.raises(ConfigError, match=r"tau=1.5 lies outside \(0, 1\)"):
        pinball([1.0], [1.0], 1.5)


def test_pinball__shapes_that_do_not_broadcast():
    with pytest.raises(GridError, match="do not broadcast"):
        pinball(np.zeros(3), np.zeros(2), 0.5)


def test_coverage_and_width__hand_values():
    lower, upper, truth = [0.0, 0.0, 1.0], [2.0, 2.0, 3.0], [1.0, 3.0, np.nan]
    assert coverage(lower, upper, truth) == pytest.approx(0.5)
    assert interval_width(lower, upper, truth) == pytest.approx(2.0)


def test_crps_ensemble__hand_values():
    # members 0 and 2, truth 1: E|X - y| = 1, E|X - X'| / 2 = 0.5
    assert crps_ensemble([[0.0], [2.0]], [1.0]) == pytest.approx(0.5)
    assert crps_ensemble([[4.0]], [1.0]) == pytest.approx(3.0)  # one member: the absolute error


def test_crps_quantiles__a_point_forecast_scores_its_absolute_error():
    q = np.full((len(DENSE_LEVELS), 2), 5.0)
    assert crps_quantiles(q, [2.0, 8.0], DENSE_LEVELS) == pytest.approx(3.0)


def test_crps_quantiles__one_quantile_per_level():
    with pytest.raises(ConfigError, match="one per level"):
        crps_quantiles(np.zeros((3, 2)), [0.0, 0.0], (0.1, 0.9))


def test_central_pairs__intervals_among_the_levels():
    assert central_pairs((0.025, 0.1, 0.5, 0.9, 0.975)) == [(95, 0.025, 0.975), (80, 0.1, 0.9)]
    assert central_pairs((0.1, 0.5)) == []


def test_score_quantiles__hand_values():
    truth = np.array([[1.0], [3.0]])[:, :, None]  # (issued 2, lead 1, cell 1)

    def constant(taus):  # quantile tau = 4 * tau (uniform on [0, 4])
        return np.stack([np.full(truth.shape, 4 * t) for t in taus])

    table = score_quantiles(constant, truth, (0.25, 0.75))
    # the 50 % interval [1, 3] holds both truths (on its ends)
    assert table.loc[1, "coverage_50"] == 1.0 and table.loc[1, "width_50"] == pytest.approx(2.0)
    # q0.25 = 1: losses 0 (y=1) and 0.25 * 2 (y=3); q0.75 = 3: losses 0.25 * 2 (y=1) and 0
    assert table.loc[1, "pinball"] == pytest.approx((0.5 / 2 + 0.5 / 2) / 2)
    # CRPS of U(0, 4) at y: (y^3 + (4 - y)^3) / 48 = 7/12 for y = 1 and 3; the 99 levels lack the
    # tails (below 0.01, above 0.99): within 2 %
    assert table.loc[1, "crps"] == pytest.approx(7 / 12, rel=0.02)


# -- calibration -----------------------------------------------------------------------------------
def test_conformal_radii__finite_sample_ranks():
    r = conformal_radii(np.arange(1.0, 10.0), (0.0, 0.8, 0.999))
    # n = 9: level 0.8 -> the ceil(10 * 0.8) = 8th smallest; 0.999 -> past n: the largest
    np.testing.assert_array_equal(r, [0.0, 8.0, 9.0])


def test_quantile_label__names():
    assert [quantile_label(q) for q in (0.1, 0.05, 0.5, 0.975)] == ["q10", "q05", "q50", "q97_5"]


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((0.0, 0.5), r"level 0.0 lies outside \(0, 1\)"),
        ((0.5, 1.2), r"level 1.2 lies outside \(0, 1\)"),
        ((0.9, 0.1), "not in increasing order"),
        ((0.1, 0.1), "repeat 0.1"),
        ((), "is empty"),
        ("0.1", "expected a sequence"),
        ((0.1, "x"), "not a number"),
    ],
)
def test_check_quantiles__bad_levels(levels, message):
    with pytest.raises(ConfigError, match=message):
        check_quantiles(levels)


def test_calibrate__validation_part_before_the_test_part(calibrated):
    est, _ = calibrated
    cal = est.calibration_
    test_first = pd.Timestamp(est.split_["test"][0]) + est.input_steps * est.cadence_
    assert pd.Timestamp(cal.frames[1]) < test_first
    assert pd.Timestamp(cal.frames[0]) >= pd.Timestamp(est.split_["val"][0])
    assert cal.windows > 0 and cal.radii.shape == (3, 1, len(cal.levels))
    assert (np.diff(cal.radii, axis=-1) >= 0).all() and (cal.radii[..., 0] == 0).all()


def test_calibrate__frames_overlapping_the_test_part(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match="overlap the test part, which starts at"):
        uncalibrated(est).calibrate(da, frames=("2024-05-01 12:00", "2024-05-02 00:00"))


def test_calibrate__unknown_frames(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match="frames='test' is invalid"):
        uncalibrated(est).calibrate(da, frames="test")


def test_calibrate__explicit_frames_before_the_test_part(calibrated):
    est, da = calibrated
    with pytest.warns(UserWarning, match="were trained on"):
        other = uncalibrated(est).calibrate(da, frames=("2024-05-01 12:00", "2024-05-01 18:00"))
    first, last = (pd.Timestamp(t) for t in other.calibration_.frames)
    assert first >= pd.Timestamp("2024-05-01 12:00") and last <= pd.Timestamp("2024-05-01 18:00")


def assert_quantile_contract(fc, point, levels) -> None:
    """A quantile forecast: a leading quantile dimension of ``levels`` on the point forecast's grid,
    CRS, valid times, issue time and units; no value below 0, levels in increasing order."""
    assert fc.dims == ("quantile", "lead", "band", "y", "x")
    assert list(fc["quantile"].values) == list(levels)
    assert fc.rio.crs == GRID.crs and fc.rio.transform() == GRID.transform
    np.testing.assert_array_equal(fc.valid_time.values, point.valid_time.values)
    assert fc.attrs["issued"] == point.attrs["issued"] and fc.attrs["units"] == point.attrs["units"]
    assert (fc.values >= 0).all() and (fc.diff("quantile") >= 0).all()


def test_predict__quantile_forecast_contract(calibrated):
    est, da = calibrated
    point, fc = est.predict(da), est.predict(da, quantiles=LEVELS)
    assert_quantile_contract(fc, point, LEVELS)
    np.testing.assert_allclose(fc.sel(quantile=0.5).values, point.values, rtol=1e-6)


@pytest.mark.parametrize(
    ("levels", "message"),
    [((0.9, 0.1), "increasing order"), ((0.1, 0.1), "repeat"), ((0.5, 1.0), "outside")],
)
def test_predict__bad_quantiles(calibrated, levels, message):
    est, da = calibrated
    with pytest.raises(ConfigError, match=message):
        est.predict(da, quantiles=levels)


def test_predict__quantiles_of_an_uncalibrated_model(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match=r"no calibration: calibrate it first.*calibrate\("):
        uncalibrated(est).predict(da, quantiles=LEVELS)


def test_evaluate__intervals_cover_their_calibration_windows(calibrated):
    est, da = calibrated
    table = est.evaluate(da, split="val", baselines=(), quantiles=LEVELS)
    assert (table.loc[est.model, "coverage_80"] >= 0.8).all()  # conformal: by construction


def test_evaluate__probabilistic_columns_and_baselines(calibrated):
    est, da = calibrated
    table = est.evaluate(da, quantiles=(0.05, 0.1, 0.5, 0.9, 0.95))
    models = table.index.get_level_values("model").unique().tolist()
    assert {"climatology", "persistence_quantiles", est.model} <= set(models)
    for column in ("pinball", "coverage_80", "width_80", "coverage_90", "width_90", "crps"):
        assert table.loc[est.model, column].notna().all(), column
        assert table.loc["persistence_quantiles", column].notna().all(), column
    assert table.loc["ridge", "crps"].isna().all()  # point baselines: no quantiles
    assert (table["crps"].dropna() >= 0).all()
    assert (table.loc[est.model, "width_90"] >= table.loc[est.model, "width_80"]).all()


def test_evaluate__quantiles_of_an_uncalibrated_model(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match="no calibration"):
        uncalibrated(est).evaluate(da, quantiles=LEVELS)


# -- probabilistic baselines, hand-made histories --------------------------------------------------
def _history(values, freq):
    times = pd.date_range("2024-05-01", periods=len(values), freq=freq)
    da = xr.DataArray(
        np.asarray(values, "float32")[:, None, None, None] * np.ones((1, 1, 1, 2), "float32"),
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["density"]},
    )
    return da


def test_persistence_quantiles__last_value_plus_the_changes():
    history = _history(np.arange(20.0), "15min")  # +1 per step
    q = persistence_quantiles(history, slice(0, 10), np.array([12]), 2, pd.Timedelta("15min"))
    out = q([0.1, 0.9])  # (quantile, issued, lead, band, y, x)
    np.testing.assert_allclose(out[:, 0, :, 0, 0, 0], [[13.0, 14.0], [13.0, 14.0]])


def test_climatology_quantiles__slot_quantiles_of_earlier_days():
    # 4 slots a day; slot s on day d holds 10 * s + d: per slot the days 0..4, median 10 s + 2
    values = [10 * s + d for d in range(5) for s in range(4)]
    history = _history(values, "6h")
    valid = np.array([[history.time.values[0] + np.timedelta64(5 * 24 + 6, "h")]])  # slot 1
    q = climatology_quantiles(history, slice(0, 20), valid, None, pd.Timedelta("6h"))
    np.testing.assert_allclose(q([0.5, 1 - 1e-9])[:, 0, 0, 0, 0, 0], [12.0, 14.0], atol=1e-6)


# -- persistence -----------------------------------------------------------------------------------
def test_save_load__keeps_the_calibration(calibrated, tmp_path):
    est, da = calibrated
    loaded = TrafficForecaster.load(est.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.calibration_.radii, est.calibration_.radii, rtol=1e-5)
    np.testing.assert_allclose(
        loaded.predict(da, quantiles=LEVELS).values,
        est.predict(da, quantiles=LEVELS).values,
        rtol=1e-4,
        atol=1e-4,
    )


def test_load__model_saved_before_calibration_existed(calibrated, tmp_path):
    est, _ = calibrated
    path = uncalibrated(est).save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    del config["calibration"]
    (path / "config.json").write_text(json.dumps(config))
    assert TrafficForecaster.load(path).calibration_ is None


def test_load__tampered_calibration(calibrated, tmp_path):
    est, _ = calibrated
    path = est.save(tmp_path / "bad")
    config = json.loads((path / "config.json").read_text())
    config["calibration"]["radii"][0][0][5] = -1.0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="config.json: calibration radii of shape"):
        TrafficForecaster.load(path)


def test_calibration__from_dict_missing_keys():
    with pytest.raises(ConfigError, match="expected the keys method, bands"):
        Calibration.from_dict({"method": "split-conformal"})


# -- ensembles -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ensemble():
    da = density_series(periods=100)
    ens = ForecastEnsemble(TrafficForecaster("convgru", **FAST, seed=3), members=2).fit(da)
    return ens, da


def test_ensemble__quantiles_around_the_member_mean(ensemble, tmp_path):
    ens, da = ensemble
    with pytest.raises(CalibrationError, match="no calibration"):
        ens.predict(da, quantiles=LEVELS)
    ens.calibrate(da)
    fc = ens.predict(da, quantiles=LEVELS)
    assert fc.dims == ("quantile", "lead", "band", "y", "x") and fc.attrs["members"] == 2
    np.testing.assert_allclose(fc.sel(quantile=0.5).values, ens.predict(da).values, rtol=1e-6)
    loaded = ForecastEnsemble.load(ens.save(tmp_path / "ens"))
    np.testing.assert_allclose(loaded.calibration_.radii, ens.calibration_.radii, rtol=1e-5)
    table = ens.evaluate(da, baselines=(), quantiles=LEVELS)
    assert table.loc[ens.model, "crps"].notna().all()


def test_ensemble__members_with_quantiles(ensemble):
    ens, da = ensemble
    with pytest.raises(ConfigError, match="members=True with quantiles"):
        ens.predict(da, members=True, quantiles=LEVELS)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli__calibrate_then_forecast_quantiles(calibrated, tmp_path):
    est, da = calibrated
    folder = uncalibrated(est).save(tmp_path / "model")
    write_stack(da, tmp_path / "stack")
    run = CliRunner().invoke
    refused = run(main, ["forecast", str(folder), str(tmp_path / "stack"), "--out",
                         str(tmp_path / "q.tif"), "--quantiles", "0.1,0.5,0.9"])  # fmt: skip
    assert refused.exit_code == 2 and "trafficrnn calibrate" in refused.output
    done = run(main, ["calibrate", str(folder), str(tmp_path / "stack")])
    assert done.exit_code == 0, done.output
    assert "calibrated convgru on" in done.output
    made = run(main, ["forecast", str(folder), str(tmp_path / "stack"), "--out",
                      str(tmp_path / "q.tif"), "--quantiles", "0.1,0.5,0.9"])  # fmt: skip
    assert made.exit_code == 0, made.output
    with rasterio.open(tmp_path / "q.tif") as src:
        assert src.count == 9 and "density_q90" in src.descriptions[2]


def test_cli__bad_quantiles(calibrated, tmp_path):
    est, da = calibrated
    folder = est.save(tmp_path / "model")
    result = CliRunner().invoke(
        main, ["evaluate", str(folder), str(tmp_path), "--quantiles", "0.1,x"]
    )
    assert result.exit_code == 2 and "'x' is not a number" in result.output


def test_cli__calibrate_frames_not_two_times(calibrated, tmp_path):
    est, _ = calibrated
    folder = est.save(tmp_path / "model")
    result = CliRunner().invoke(
        main, ["calibrate", str(folder), str(tmp_path), "--frames", "2024-05-01"]
    )
    assert result.exit_code == 2 and "expected two comma-separated times" in result.output


# -- adaptive (ensemble spread) --------------------------------------------------------------------
def test_ensemble__adaptive_spread_calibration(ensemble, tmp_path):
    ens, da = ensemble
    ens = copy.deepcopy(ens).calibrate(da, adaptive="spread")
    cal = ens.calibration_
    assert cal.scale == "spread" and cal.floor > 0
    fc = ens.predict(da, quantiles=LEVELS)
    width = (fc.sel(quantile=0.9) - fc.sel(quantile=0.1)).isel(lead=0, band=0).values
    assert np.ptp(width) > 0  # wider where the members disagree
    np.testing.assert_allclose(fc.sel(quantile=0.5).values, ens.predict(da).values, rtol=1e-6)
    table = ens.evaluate(da, split="val", baselines=(), quantiles=LEVELS)
    assert (table.loc[ens.model, "coverage_80"] >= 0.8).all()  # conformal on its own windows
    loaded = ForecastEnsemble.load(ens.save(tmp_path / "ens"))
    assert loaded.calibration_.scale == "spread"
    assert loaded.calibration_.floor == pytest.approx(cal.floor)


def test_calibrate__level_scaled_intervals_widen_with_the_forecast(calibrated, tmp_path):
    est, da = calibrated
    model = uncalibrated(est).calibrate(da, adaptive="level")
    cal = model.calibration_
    assert cal.scale == "level" and cal.floor > 0
    point = model.predict(da)
    fc = model.predict(da, quantiles=LEVELS)
    np.testing.assert_allclose(fc.sel(quantile=0.5).values, point.clip(min=0).values, rtol=1e-6)
    # the upper half-width is the lead's radius times sqrt(max(forecast, 0) + floor), cell by cell
    upper = (fc.sel(quantile=0.9) - fc.sel(quantile=0.5)).values
    scale = np.sqrt(point.clip(min=0).values + cal.floor)
    ratio = upper / scale
    for lead in range(point.sizes["lead"]):
        np.testing.assert_allclose(ratio[lead], ratio[lead].flat[0], rtol=1e-4)
    assert np.ptp(upper[0]) > 0  # wider where the forecast is higher
    table = model.evaluate(da, split="val", baselines=(), quantiles=LEVELS)
    assert (table.loc[model.model, "coverage_80"] >= 0.8).all()  # conformal on its own windows
    loaded = TrafficForecaster.load(model.save(tmp_path / "level"))
    assert loaded.calibration_.scale == "level"
    assert loaded.calibration_.floor == pytest.approx(cal.floor)
    np.testing.assert_allclose(loaded.predict(da, quantiles=LEVELS).values, fc.values, rtol=1e-5)


def test_calibrate__spread_of_a_single_model(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match="calibrate a ForecastEnsemble of 2 members or more"):
        uncalibrated(est).calibrate(da, adaptive="spread")


def test_calibrate__unknown_adaptive(calibrated):
    est, da = calibrated
    with pytest.raises(CalibrationError, match="adaptive='cells' is invalid"):
        uncalibrated(est).calibrate(da, adaptive="cells")


def test_quantile_forecast__spread_calibration_without_spread(calibrated):
    est, da = calibrated
    cal = copy.deepcopy(est.calibration_)
    cal.scale, cal.floor = "spread", 0.1
    with pytest.raises(CalibrationError, match="forecast with the ensemble it was calibrated on"):
        quantile_forecast(est.predict(da), cal, LEVELS)


def test_calibration__from_dict_bad_scale(calibrated):
    est, _ = calibrated
    spec = dict(est.calibration_.to_dict(), scale="cells")
    with pytest.raises(ConfigError, match="expected scale 'none', 'spread' or 'level'"):
        Calibration.from_dict(spec)


def test_cli__calibrate_spread_of_a_single_model(calibrated, tmp_path):
    est, da = calibrated
    folder = uncalibrated(est).save(tmp_path / "model")
    write_stack(da, tmp_path / "stack")
    result = CliRunner().invoke(
        main, ["calibrate", str(folder), str(tmp_path / "stack"), "--adaptive", "spread"]
    )
    assert result.exit_code == 2 and "ForecastEnsemble of 2 members" in result.output


def test_cli__calibrate_refuses_an_existing_out_folder_without_overwrite(calibrated, tmp_path):
    est, da = calibrated
    folder = uncalibrated(est).save(tmp_path / "model")
    write_stack(da, tmp_path / "stack")
    taken = est.save(tmp_path / "taken")
    before = (taken / "config.json").read_bytes()
    args = ["calibrate", str(folder), str(tmp_path / "stack"), "--out", str(taken)]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert (taken / "config.json").read_bytes() == before  # nothing written over
    done = CliRunner().invoke(main, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
