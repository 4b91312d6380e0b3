"""Tests of the quantile head (``model_kwargs={"quantiles": ...}``): the option's checks, the network's
head and its pinball loss, quantile forecasts without calibration, their evaluation, persistence,
ensembles, the CLI, the ONNX refusal, and models without a head left as they were."""

import copy
import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble
from trafficrnn.errors import CalibrationError, ConfigError, ExportError, ModelFileError
from trafficrnn.estimation.quantile_head import interpolate_levels
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack
from trafficrnn.models import EncoderForecaster
from trafficrnn.params import grouped
from trafficrnn.training import masked_pinball

from .test_estimator import FAST, density_series
from .test_quantiles import assert_quantile_contract

LEVELS = (0.1, 0.5, 0.9)
HEAD = grouped(FAST, dict(quantiles=LEVELS))
#: long enough for the head's offsets (zero at the start) to reach the spread of the errors
TRAINED = grouped(HEAD, dict(lr=1e-2, max_epochs=30, batch_size=8))


@pytest.fixture(scope="module")
def headed():
    da = density_series(periods=100)
    return TrafficForecaster("convgru", **TRAINED).fit(da), da


# -- the option ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((0.9, 0.1), r"model_kwargs: quantiles=\(0.9, 0.1\) are not in increasing order"),
        ((0.0, 0.5), r"level 0.0 lies outside \(0, 1\)"),
        ((0.1, 0.1), "repeat 0.1"),
        ("0.1", "expected a sequence of probability levels"),
        ((), "is empty"),
    ],
)
def test_option__bad_levels_refused(levels, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrafficForecaster(model_kwargs={"quantiles": levels})
    assert "quantile head" in str(info.value)
    with pytest.raises(ConfigError, match=message):
        TrafficForecaster().set_params(model_kwargs__quantiles=levels)


def test_option__default_none_and_levels_accepted():
    assert TrafficForecaster().quantiles is None
    assert TrafficForecaster(model_kwargs={"quantiles": [0.05, 0.95]}).quantiles == [0.05, 0.95]


# -- the network -----------------------------------------------------------------------------------
@pytest.mark.parametrize("feedback", [True, False])
def test_network__quantiles_beside_the_point_forecast(feedback):
    torch.manual_seed(0)
    net = EncoderForecaster(2, 2, "gru", [4], feedback=feedback, quantiles=[0.1, 0.9]).eval()
    x = torch.rand(3, 4, 2, 5, 6)
    point, q = net(x, horizon=2, return_quantiles=True)
    assert q.shape == (3, 2, 2, 2, 5, 6)
    torch.testing.assert_close(point, net(x, horizon=2))
    torch.testing.assert_close(q, point[:, :, None].expand_as(q))  # offsets start at zero
    assert net.config["quantiles"] == [0.1, 0.9]
    assert set(net.state_dict()) - set(
        EncoderForecaster(2, 2, "gru", [4], feedback=feedback).state_dict()
    ) == {
        "quantile_head.weight",
        "quantile_head.bias",
    }


def test_network__return_quantiles_without_a_head():
    net = EncoderForecaster(1, 1, "gru", [4])
    assert "quantiles" not in net.config and net.quantile_head is None
    with pytest.raises(ConfigError, match="return_quantiles=True needs a quantile head"):
        net(torch.rand(1, 3, 1, 4, 4), horizon=1, return_quantiles=True)


def test_masked_pinball__hand_values():
    q = torch.tensor([2.0, 2.0]).view(1, 1, 2, 1)  # levels 0.1 and 0.9 of one entry
    y, mask = torch.tensor([3.0]).view(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool)
    # y above both: 0.1 * 1 and 0.9 * 1, mean 0.5
    assert float(masked_pinball(q, y, mask, (0.1, 0.9))) == pytest.approx(0.5)
    y_nan = torch.tensor([float("nan")]).view(1, 1, 1)
    assert float(masked_pinball(q, y_nan, ~mask, (0.1, 0.9))) == 0.0  # masked: no weight, no NaN


def test_interpolate_levels__between_trained_levels_flat_beyond():
    values = np.array([[1.0], [3.0], [7.0]])  # levels 0.1, 0.5, 0.9
    out = interpolate_levels(values, (0.1, 0.5, 0.9), (0.05, 0.1, 0.3, 0.5, 0.8, 0.95))
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 2.0, 3.0, 6.0, 7.0])


# -- training and prediction -----------------------------------------------------------------------
def test_fit__point_forecast_as_without_the_head():
    da = density_series(periods=100)
    cpu = dict(accelerator="cpu")
    plain = TrafficForecaster("convgru", **grouped(FAST, cpu)).fit(da)
    head = TrafficForecaster("convgru", **grouped(HEAD, cpu)).fit(da)
    np.testing.assert_array_equal(head.predict(da).values, plain.predict(da).values)
    assert "val_pinball" in head.history_[-1] and "val_pinball" not in plain.history_[-1]
    assert not any(k.startswith("quantile_head") for k in plain.model_.state_dict())


def test_predict__head_quantiles_contract(headed):
    est, da = headed
    assert est.calibration_ is None
    point, fc = est.predict(da), est.predict(da, quantiles=LEVELS)
    assert_quantile_contract(fc, point, LEVELS)
    assert fc.attrs["quantile_method"] == "quantile head"
    assert float((fc.sel(quantile=0.9) - fc.sel(quantile=0.1)).mean()) > 0


def test_predict__levels_between_trained_ones_interpolated(headed):
    est, da = headed
    fc = est.predict(da, quantiles=(0.1, 0.3, 0.5))
    middle = (fc.sel(quantile=0.1) + fc.sel(quantile=0.5)) / 2
    np.testing.assert_allclose(fc.sel(quantile=0.3).values, middle.values, rtol=1e-5, atol=1e-6)


def test_predict__levels_beyond_the_trained_ones_refused(headed):
    est, da = headed
    with pytest.raises(
        ConfigError, match=r"level 0.05 lies outside .* trained on \(0.1, 0.5, 0.9\)"
    ):
        est.predict(da, quantiles=(0.05, 0.5))


def test_predict_many__head_quantiles(headed):
    est, da = headed
    fc = est.predict_many(da, [20, 40], quantiles=LEVELS)
    assert fc.dims == ("quantile", "issued", "lead", "band", "y", "x")
    assert fc.sizes["issued"] == 2 and (fc.diff("quantile") >= 0).all()


def test_head__interval_covers_a_sensible_share_of_training_frames(headed):
    est, da = headed
    table = est.evaluate(da, split="train", baselines=(), quantiles=(0.1, 0.9))
    covered = table.loc[est.model, "coverage_80"]
    assert 0.5 <= covered.mean() <= 0.97, covered.tolist()


def test_evaluate__head_scored_beside_the_probabilistic_baselines(headed):
    est, da = headed
    table = est.evaluate(da, quantiles=LEVELS)
    models = table.index.get_level_values("model").unique().tolist()
    assert {"climatology", "persistence_quantiles", est.model} <= set(models)
    for column in ("pinball", "coverage_80", "width_80", "crps"):
        assert table.loc[est.model, column].notna().all(), column
    assert (table.loc[est.model, "crps"] >= 0).all()


def test_calibration_wins_over_the_head(headed):
    est, da = headed
    calibrated = copy.deepcopy(est).calibrate(da)
    fc = calibrated.predict(da, quantiles=LEVELS)
    assert fc.attrs["calibration"] == "split-conformal" and "quantile_method" not in fc.attrs
    np.testing.assert_allclose(
        fc.sel(quantile=0.5).values, calibrated.predict(da).values, rtol=1e-6
    )


def test_neither_head_nor_calibration_names_both_ways():
    da = density_series(periods=60)
    est = TrafficForecaster("convgru", **FAST).fit(da)
    for call in (est.predict, lambda d, **kw: est.evaluate(d, baselines=(), **kw)):
        with pytest.raises(CalibrationError) as info:
            call(da, quantiles=LEVELS)
        assert "model.calibrate(stack)" in str(info.value)
        assert "model_kwargs={'quantiles': (0.1, 0.5, 0.9)}" in str(info.value)


# -- persistence -----------------------------------------------------------------------------------
def test_save_load__keeps_the_head(headed, tmp_path):
    est, da = headed
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["model_config"]["quantiles"] == list(LEVELS)
    assert config["params"]["model_kwargs"]["quantiles"] == list(LEVELS)
    loaded = TrafficForecaster.load(path)
    assert loaded.quantiles == LEVELS and loaded.model_.quantiles == LEVELS
    np.testing.assert_array_equal(
        loaded.predict(da, quantiles=LEVELS).values, est.predict(da, quantiles=LEVELS).values
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["model_config"].update(quantiles=[0.9, 0.1]), "not in increasing order"),
        (lambda c: c["model_config"].update(quantiles="0.1"), "expected a list of at most"),
        (lambda c: c["params"]["model_kwargs"].update(quantiles=[0.2, 0.5, 0.9]), "has the levels"),
        (lambda c: c["model_config"].pop("quantiles"), "has the levels None"),
    ],
)
def test_load__tampered_head_levels(headed, tmp_path, edit, message):
    est, _ = headed
    path = est.save(tmp_path / "bad")
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=message):
        TrafficForecaster.load(path)


def test_packaged_weights__no_head():
    from trafficrnn.zoo import WEIGHTS

    for name in ("convgru_1m64", "convlstm_1m64"):
        config = json.loads((WEIGHTS / name / "config.json").read_text())
        assert "quantiles" not in config["model_config"]
        est = TrafficForecaster.load(WEIGHTS / name)
        assert est.quantiles is None and est.model_.quantile_head is None
        assert not any(k.startswith("quantile_head") for k in est.model_.state_dict())


# -- ensembles, ONNX and the CLI -------------------------------------------------------------------
def test_ensemble__mean_of_the_members_quantiles():
    da = density_series(periods=60)
    ens = ForecastEnsemble(TrafficForecaster("convgru", **HEAD), members=2).fit(da)
    fc = ens.predict(da, quantiles=LEVELS)
    each = [m.predict(da, quantiles=LEVELS).values for m in ens.estimators_]
    np.testing.assert_allclose(fc.values, np.mean(each, axis=0), rtol=1e-6)
    assert fc.dims == ("quantile", "lead", "band", "y", "x") and fc.attrs["members"] == 2
    table = ens.evaluate(da, split=None, baselines=(), quantiles=LEVELS)
    assert table.loc[ens.model, "crps"].notna().all()


def test_export_onnx__refuses_a_head(headed, tmp_path):
    est, _ = headed
    with pytest.raises(ExportError, match=r"has a quantile head \(quantiles=\(0.1, 0.5, 0.9\)\)"):
        est.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def cli_head_model(tmp_path):
    """A stack in ``tmp_path/stack`` and a tiny model with a 0.1/0.5/0.9 quantile head trained on it
    by the CLI into ``tmp_path/m``; returns the CLI runner."""
    write_stack(density_series(periods=48), tmp_path / "stack")
    run = CliRunner().invoke
    tiny = ["--input-steps", "4", "--horizon", "2", "--hidden", "8", "--max-epochs", "1", "--quiet"]
    trained = run(main, ["train", str(tmp_path / "stack"), *tiny, "--set",
                         "quantiles=[0.1,0.5,0.9]", "--out", str(tmp_path / "m")])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    return run


def test_cli__train_with_a_head_then_forecast_quantiles(tmp_path):
    run = cli_head_model(tmp_path)
    info = run(main, ["info", str(tmp_path / "m")])
    assert info.exit_code == 0 and "quantile head, levels 0.1, 0.5, 0.9" in info.output
    made = run(main, ["forecast", str(tmp_path / "m"), str(tmp_path / "stack"), "--out",
                      str(tmp_path / "q.tif"), "--quantiles", "0.1,0.5,0.9"])  # fmt: skip
    assert made.exit_code == 0, made.output
    with rasterio.open(tmp_path / "q.tif") as src:
        assert src.count == 6 and "density_q90" in src.descriptions[2]
    beyond = run(main, ["forecast", str(tmp_path / "m"), str(tmp_path / "stack"), "--out",
                        str(tmp_path / "r.tif"), "--quantiles", "0.05,0.5"])  # fmt: skip
    assert beyond.exit_code == 2 and "trained on (0.1, 0.5, 0.9)" in beyond.output
