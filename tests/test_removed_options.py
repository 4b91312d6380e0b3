"""The options removed in issue 21 (``ema``, ``lead_weights``, ``peephole``): refused where they were
accepted, and models saved with them by an older trafficrnn loaded or refused with the version named."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from trafficrnn.errors import ConfigError, ModelFileError
from trafficrnn.estimator import PARAMS, TrafficForecaster

from .test_estimator import FAST, density_series

REMOVED = {"ema": 0.99, "lead_weights": (2.0, 1.0, 1.0), "peephole": "channel"}


# -- the API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_trafficforecaster__removed_option_refused(name):
    assert name not in PARAMS
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        TrafficForecaster("convlstm", **{name: REMOVED[name]})
    with pytest.raises(
        ConfigError, match=f"unknown parameter '{name}': expected one of model, input_steps"
    ):
        TrafficForecaster("convlstm").set_params(**{name: REMOVED[name]})


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_compare__removed_option_refused(name):
    from trafficrnn.compare import compare

    with pytest.raises(ConfigError, match=f"unknown training parameter\\(s\\) {name}"):
        compare(density_series(periods=40), models=["convlstm"], **{name: REMOVED[name]})


def test_get_model__peephole_refused_with_the_valid_arguments():
    from trafficrnn.models import get_model

    with pytest.raises(
        TypeError,
        match=r"get_model\('convlstm'\) got unexpected argument\(s\) 'peephole'; "
        r"valid arguments: in_channels, out_channels, hidden_channels",
    ):
        get_model("convlstm", in_channels=1, peephole="channel")
    for name in ("convlstm", "convgru"):
        with pytest.raises(
            TypeError, match="got unexpected argument\\(s\\) 'peephole'; valid cell arguments: bias"
        ):
            get_model(name, in_channels=1, cell_kwargs={"peephole": "channel"})
    assert get_model("convlstm", in_channels=1, cell_kwargs={"bias": False}).config[
        "cell_kwargs"
    ] == {"bias": False}


def test_get_cell__peephole_refused():
    from trafficrnn.models import get_cell

    for name in ("lstm", "gru"):
        with pytest.raises(TypeError, match="peephole"):
            get_cell(name)(3, 4, peephole="channel")
        with pytest.raises(TypeError, match="grid_shape"):
            get_cell(name)(3, 4, grid_shape=[5, 6])


def test_forecast_module__removed_options_refused():
    from trafficrnn.models import get_model
    from trafficrnn.training import ForecastModule

    net = get_model("convgru", in_channels=1, hidden_channels=[4])
    for name in ("ema", "lead_weights"):
        with pytest.raises(TypeError, match=name):
            ForecastModule(net, horizon=3, **{name: REMOVED[name]})


# -- the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("flag", [["--ema", "0.99"], ["--lead-weights", "2,1,1"], ["--peephole"]])
def test_cli__removed_flag_is_a_usage_error(command, flag, tmp_path):
    from trafficrnn.cli import main

    result = CliRunner().invoke(
        main, [command, str(tmp_path), *flag, "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert f"No such option '{flag[0]}'" in result.output
    assert not (tmp_path / "out").exists()


# -- saved models of the old layout --------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A ConvLSTM saved by this version, its forecast, and the series it forecasts."""
    da = density_series(periods=100)
    est = TrafficForecaster("convlstm", **FAST).fit(da)
    path = est.save(tmp_path_factory.mktemp("removed") / "model")
    return path, est.predict(da).values, da


def _old_layout(saved, tmp_path, params=None, cell_kwargs=None, version="0.3.0"):
    """A copy of the saved model with its config.json edited as an older trafficrnn wrote it."""
    path = tmp_path / "old"
    shutil.copytree(saved[0], path)
    config = json.loads((path / "config.json").read_text())
    assert not set(REMOVED) & set(config["params"])  # this version writes none of them
    config["params"].update(params or {})
    config["model_config"]["cell_kwargs"].update(cell_kwargs or {})
    config["trafficrnn_version"] = version
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_load__old_layout_training_options_dropped(saved, tmp_path):
    path = _old_layout(
        saved,
        tmp_path,
        {"ema": 0.99, "lead_weights": [2.0, 1.0, 1.0], "peephole": None},
        cell_kwargs={"peephole": None},
    )
    again = TrafficForecaster.load(path)
    assert not any(hasattr(again, name) for name in REMOVED)
    assert again.model_.config["cell_kwargs"] == {}
    np.testing.assert_array_equal(again.predict(saved[2]).values, saved[1])


@pytest.mark.parametrize("where", ["params", "cell_kwargs", "both"])
def test_load__old_layout_peephole_refused_naming_the_version(saved, tmp_path, where):
    params = {"peephole": "channel"} if where in ("params", "both") else None
    cell_kwargs = {"peephole": "channel"} if where in ("cell_kwargs", "both") else None
    path = _old_layout(saved, tmp_path, params, cell_kwargs)
    with pytest.raises(ModelFileError) as info:
        TrafficForecaster.load(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: this model was saved by trafficrnn 0.3.0 with peephole='channel'"
    )
    assert "an option removed from this trafficrnn" in message
    assert (
        "retrain the model with trafficrnn" in message
        and "or load it with trafficrnn 0.3.0" in message
    )


def test_load__old_layout_peephole_without_a_recorded_version(saved, tmp_path):
    path = _old_layout(saved, tmp_path, {"peephole": "channel"}, version=None)
    with pytest.raises(
        ModelFileError, match="saved by an earlier trafficrnn with peephole='channel'"
    ):
        TrafficForecaster.load(path)


def test_load__old_layout_peephole_saved_by_this_version_number(saved, tmp_path):
    from trafficrnn._version import __version__

    path = _old_layout(saved, tmp_path, {"peephole": "channel"}, version=__version__)
    with pytest.raises(
        ModelFileError,
        match=rf"or load it with trafficrnn {__version__} \(a build from before the "
        r"removal\), the version that saved it",
    ):
        TrafficForecaster.load(path)
