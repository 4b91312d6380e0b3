"""Tests of saved models: safetensors + validated config, checksum, and refusal of pickles and tampering."""

import json
import pickle

import numpy as np
import pytest
import rasterio
from affine import Affine

from trafficrnn.errors import ModelFileError, OutputExistsError
from trafficrnn.estimation.persist import _sha256
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.params import grouped

from .test_estimator import FAST, density_series, road_layer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    da = density_series(periods=100)
    est = TrafficForecaster("convlstm", **FAST).fit(da)
    path = est.save(tmp_path_factory.mktemp("models") / "model")
    return est, da, path


def copy_model(saved, tmp_path):
    _, _, path = saved
    out = tmp_path / "copy"
    out.mkdir()
    for f in path.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def edited_model(saved, tmp_path, edit):
    """A copy of the saved model whose config.json went through ``edit(config)``."""
    path = copy_model(saved, tmp_path)
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_save_load__identical_forecast(saved):
    est, da, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    again = TrafficForecaster.load(path)
    np.testing.assert_array_equal(again.predict(da).values, est.predict(da).values)
    assert (
        again.grid_ == est.grid_ and again.cadence_ == est.cadence_ and again.bands_ == est.bands_
    )
    assert again.get_params() == est.get_params()


def test_save__config_records_what_the_model_expects(saved):
    _, _, path = saved
    config = json.loads((path / "config.json").read_text())
    assert config["grid"]["transform"] == [100.0, 0.0, 500000.0, 0.0, -100.0, 5000000.0]
    assert config["cadence"] == "P0DT0H15M0S" and config["bands"] == ["density"]
    assert config["weights_sha256"] == _sha256(path / "model.safetensors")
    assert config["training_summary"]["windows"]["train"] > 0
    assert "trafficrnn_version" in config and config["model_config"]["cell"] == "lstm"


def old_layout(params):
    """The saved parameters as trafficrnn wrote them before the option groups: every option flat."""
    from trafficrnn.params import resolve

    return json.loads(json.dumps(resolve(params)))


def test_load__model_saved_before_the_newer_parameters(tmp_path):
    """A config.json written before context_inputs / count_head / ... existed loads as the model it was."""
    from .test_estimator import image_series

    target = density_series(periods=100)
    images = image_series(target)
    est = TrafficForecaster(
        "convgru",
        tile_size=4,
        context=("ha",),
        **grouped(FAST, dict(context_inputs=False, count_head=False)),
    ).fit(images, target)
    path = est.save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    config["params"] = old_layout(config["params"])
    for key in ("context_inputs", "count_head", "feedback", "target_inputs", "counting"):
        config["params"].pop(key)
    config.pop("gsd")
    (path / "config.json").write_text(json.dumps(config))
    again = TrafficForecaster.load(path)
    assert again.context_inputs is False and again.count_head is False and again.counting is False
    assert again.gsd_ == (25.0, 25.0)  # cells of 100 m, tile size 4
    np.testing.assert_array_equal(again.predict(images).values, est.predict(images).values)


def test_load__count_head_model_saved_before_count_stage(tmp_path):
    """A count-head model whose config has no count_stage rebuilds with the second-last stage."""
    from .test_estimator import image_series

    target = density_series(periods=60)
    images = image_series(target, tile=16)
    est = TrafficForecaster("convgru", tile_size=16, **FAST).fit(images, target)
    assert est.model_.count_stage == 1  # strides [4, 2, 2]: 8 px, the old rule's stage too
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["model_config"].pop("count_stage")
    (path / "config.json").write_text(json.dumps(config))
    again = TrafficForecaster.load(path)
    assert again.model_.count_stage == 1
    np.testing.assert_array_equal(again.predict(images).values, est.predict(images).values)


def test_load__gsd_that_disagrees_with_the_grid(saved, tmp_path):
    path = edited_model(saved, tmp_path, lambda c: c.update(gsd=[2.0, 100.0]))
    with pytest.raises(ModelFileError, match=r"gsd = \[2.0, 100.0\] does not match the grid"):
        TrafficForecaster.load(path)


def test_save__refuses_existing(saved):
    est, _, path = saved
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        est.save(path)


def test_load__tampered_weights(saved, tmp_path):
    path = copy_model(saved, tmp_path)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum .* does not match .* refusing to load"):
        TrafficForecaster.load(path)


def test_load__truncated_weights(saved, tmp_path):
    path = copy_model(saved, tmp_path)
    data = (path / "model.safetensors").read_bytes()[:100]
    (path / "model.safetensors").write_bytes(data)
    config = json.loads((path / "config.json").read_text())
    config["weights_sha256"] = _sha256(
        path / "model.safetensors"
    )  # a consistent but truncated file
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        TrafficForecaster.load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_load__pickle_payload_is_never_executed(saved, tmp_path):
    path = copy_model(saved, tmp_path)
    marker = tmp_path / "pwned"
    (path / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    config = json.loads((path / "config.json").read_text())
    config["weights_sha256"] = _sha256(path / "model.safetensors")  # even with a matching checksum
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        TrafficForecaster.load(path)
    assert not marker.exists()


def test_load__a_pickle_file_instead_of_a_folder(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ModelFileError, match="is not a saved model folder"):
        TrafficForecaster.load(bad)
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.update(model="transformer"), "unknown model 'transformer'"),
        (lambda c: c.update(format_version=99), "model format 99 is newer"),
        (lambda c: c.update(bands="density"), "'bands' is str"),
        (lambda c: c.update(cadence="-15min"), "must be positive"),
        (lambda c: c["params"].update(horizon=0), "params.horizon = 0"),
        (lambda c: c.pop("grid"), "key 'grid' is missing"),
        (lambda c: c["model_config"].update(hidden_channels=[16]), "weights do not fit the model"),
        (lambda c: c["model_config"].update(cell="gru"), "inconsistent"),
        (
            lambda c: c.update(format="something-else"),
            "format .something-else., expected .trafficrnn-model.; not a trafficrnn model file",
        ),
    ],
)
def test_load__invalid_config(saved, tmp_path, edit, match):
    path = edited_model(saved, tmp_path, edit)
    with pytest.raises(ModelFileError, match=match):
        TrafficForecaster.load(path)


def test_load__config_not_json(saved, tmp_path):
    path = copy_model(saved, tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        TrafficForecaster.load(path)


def test_load__missing_weights(saved, tmp_path):
    path = copy_model(saved, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors is missing"):
        TrafficForecaster.load(path)


# -- static layers kept with the model -------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_static(tmp_path_factory):
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **FAST).fit(da, static=road_layer())
    return est, da, est.save(tmp_path_factory.mktemp("models") / "static-model")


def test_save__static_layers_kept_as_a_geotiff_on_the_grid(saved_static):
    est, da, path = saved_static
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "static.tif",
    ]
    assert json.loads((path / "config.json").read_text())["static_sha256"] == _sha256(
        path / "static.tif"
    )
    with rasterio.open(path / "static.tif") as src:
        assert (
            src.descriptions == ("lanes",)
            and src.crs == est.grid_.crs
            and src.transform == est.grid_.transform
        )
        np.testing.assert_array_equal(src.read(), road_layer().values)


def test_load__kept_static_layers_predict_as_given_ones(saved_static):
    est, da, path = saved_static
    again = TrafficForecaster.load(path)
    np.testing.assert_array_equal(
        again.predict(da).values, est.predict(da, static=road_layer()).values
    )


def test_load__tampered_static_layers(saved_static, tmp_path):
    path = copy_model(saved_static, tmp_path)
    data = bytearray((path / "static.tif").read_bytes())
    data[-1] ^= 0xFF
    (path / "static.tif").write_bytes(bytes(data))
    with pytest.raises(
        ModelFileError, match=r"static\.tif: checksum .* does not match the config's"
    ):
        TrafficForecaster.load(path)


def test_load__missing_static_layers(saved_static, tmp_path):
    path = copy_model(saved_static, tmp_path)
    (path / "static.tif").unlink()
    with pytest.raises(
        ModelFileError,
        match=r"static\.tif is missing: the model keeps its static layers \['lanes'\]",
    ):
        TrafficForecaster.load(path)


def test_load__static_layers_off_the_model_grid(saved_static, tmp_path):
    path = copy_model(saved_static, tmp_path)
    with rasterio.open(path / "static.tif", "r+") as dst:
        dst.transform = Affine(100, 0, 600000, 0, -100, 5000000)  # same cells, 100 km further east
    config = json.loads((path / "config.json").read_text())
    config["static_sha256"] = _sha256(path / "static.tif")  # a consistent but crafted folder
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelFileError,
        match=r"do not match the config's static layers \['lanes'\] on the model's grid",
    ):
        TrafficForecaster.load(path)
