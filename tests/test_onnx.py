"""Tests of trafficrnn.onnx (and its sidecar): ONNX export, the onnxruntime runner against the torch
forecast on both paths and both cells (and on the shipped sample's frames), and the refusals."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_estimator import FAST, density_series, image_series
from trafficrnn import __version__
from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble
from trafficrnn.errors import (
    ExportError,
    MissingDependencyError,
    ModelFileError,
    ModelMismatchError,
    NotFittedError,
    OutputExistsError,
)
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.params import grouped

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
NEEDS = "ONNX export needs the onnx extra: pip install 'trafficrnn[onnx]'"
#: onnxruntime against torch: 1e-4 relative, 1e-5 absolute (for values near zero)
TOL = dict(rtol=1e-4, atol=1e-5)


def _needs_onnx():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=NEEDS)


def _same_forecast(onnx_fc, torch_fc):
    np.testing.assert_allclose(onnx_fc.values, torch_fc.values, **TOL)
    assert onnx_fc.dims == torch_fc.dims and onnx_fc.attrs == torch_fc.attrs
    assert onnx_fc.rio.crs == torch_fc.rio.crs
    assert onnx_fc.rio.transform() == torch_fc.rio.transform()
    for name in ("lead", "valid_time", "y", "x", "band"):
        assert np.array_equal(onnx_fc[name].values, torch_fc[name].values)


@pytest.fixture(scope="module")
def density_fitted():
    """ConvLSTM, density-only, with the 'ha' context and cell means (maps the sidecar carries)."""
    da = density_series()
    return TrafficForecaster(
        "convlstm", context=("ha",), **grouped(FAST, dict(cell_mean=True))
    ).fit(da), da


@pytest.fixture(scope="module")
def density_export(density_fitted, tmp_path_factory):
    """The density model saved, then exported by the CLI: ``trafficrnn export MODEL --out``."""
    _needs_onnx()
    est, _ = density_fitted
    folder = tmp_path_factory.mktemp("onnx")
    est.save(folder / "model")
    out = folder / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(folder / "model"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} and {out}.json" in result.output
    return out


def test_export_onnx__density_convlstm_matches_torch(density_fitted, density_export):
    from trafficrnn.onnx import OnnxForecaster

    est, da = density_fitted
    _same_forecast(OnnxForecaster(density_export).predict(da), est.predict(da))


def test_onnx_forecaster__batch_and_shorter_horizon(density_fitted, density_export):
    from trafficrnn.onnx import OnnxForecaster

    est, da = density_fitted
    runner = OnnxForecaster(density_export)
    issues = [20, 60, 100, 159]  # one batch of 4 forecasts: the batch axis is dynamic
    _same_forecast(runner.predict_many(da, issues), est.predict_many(da, issues))
    _same_forecast(runner.predict(da, horizon=2), est.predict(da, horizon=2))


def test_export_onnx__sidecar_describes_the_inputs(density_fitted, density_export):
    import onnx

    est, _ = density_fitted
    spec = json.loads(Path(f"{density_export}.json").read_text())
    assert spec["format"] == "trafficrnn-onnx" and spec["trafficrnn_version"] == __version__
    assert spec["opset"] >= 17 and spec["onnx_file"] == "model.onnx"
    assert spec["grid"]["epsg"] == 32633 and spec["grid"]["shape"] == [4, 5]
    assert spec["grid"]["transform"] == [100.0, 0.0, 500000.0, 0.0, -100.0, 5000000.0]
    assert spec["grid"]["tile_size"] == 1 and "UTM zone 33N" in spec["grid"]["crs_wkt"]
    assert spec["cadence"] == "P0DT0H15M0S" and spec["bands"] == ["density"]
    assert (spec["input_steps"], spec["horizon"]) == (6, 3)
    assert spec["normalisation"]["target"] == est.target_normalizer_.to_dict()
    assert spec["context"]["entries"] == ["ha"]
    assert sorted(spec["arrays"]) == ["context.cell_mean", "context.ha_table"]
    inputs = {i["name"]: i for i in spec["inputs"]}
    assert list(inputs) == ["x", "past_covariates", "future_covariates", "static"]
    assert inputs["x"]["shape"] == ["batch", 6, 1, 4, 5] and inputs["x"]["channels"] == ["density"]
    assert inputs["future_covariates"]["channels"] == [
        "calendar:time_of_day_sin",
        "calendar:time_of_day_cos",
        "calendar:week_sin",
        "calendar:week_cos",
        "context:ha:density",
    ]
    assert inputs["static"]["channels"] == ["cell_mean:density"]
    assert spec["outputs"][0]["shape"] == ["batch", 3, 1, 4, 5]
    graph = onnx.load(density_export).graph
    for node in graph.input:
        dims = [d.dim_param or d.dim_value for d in node.type.tensor_type.shape.dim]
        assert dims[1:] == inputs[node.name]["shape"][1:] and isinstance(dims[0], str)
    assert [o.name for o in graph.output] == ["forecast"]


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    """Image path (tile_size=4): a ConvGRU that also reads the observed targets, exported."""
    _needs_onnx()
    target = density_series(periods=60)
    images = image_series(target)
    est = TrafficForecaster("convgru", tile_size=4, **grouped(FAST, dict(target_inputs=True))).fit(
        images, target
    )
    path = est.export_onnx(tmp_path_factory.mktemp("onnx") / "images.onnx")
    return est, images, target, path


def test_export_onnx__image_path_convgru_matches_torch(image_export):
    """Some observations missing: the graph takes the nowcast there, as the torch network does."""
    from trafficrnn.onnx import OnnxForecaster

    est, images, target, path = image_export
    observed = target.copy()
    observed[-1, 0, 1:3, 2] = np.nan
    _same_forecast(
        OnnxForecaster(path).predict(images, target=observed), est.predict(images, target=observed)
    )


@pytest.mark.skipif(not (SAMPLE / "images").is_dir(), reason="data/sample is not in this checkout")
def test_export_onnx__runs_on_the_sample_frames(tmp_path):
    """The shipped sample (512 x 512 px at 1 m, tiles of 64 px, clouds as NaN): 16 frames, one epoch."""
    _needs_onnx()
    from trafficrnn.io import read_stack
    from trafficrnn.onnx import OnnxForecaster

    images = read_stack(sorted((SAMPLE / "images").glob("*.tif"))[:16])
    target = read_stack(sorted((SAMPLE / "density").glob("*.tif"))[:16])
    est = TrafficForecaster(
        "convlstm",
        tile_size=64,
        input_steps=3,
        horizon=2,
        max_time=None,
        progress=False,
        model_kwargs=dict(hidden=(8,), encoder_width=8),
        trainer_kwargs=dict(max_epochs=1, batch_size=16),
    ).fit(images, target)
    path = est.export_onnx(tmp_path / "sample.onnx")
    forecast = OnnxForecaster(path).predict(images)
    _same_forecast(forecast, est.predict(images))
    assert forecast.rio.crs.to_epsg() == 32633 and forecast.shape == (2, 1, 8, 8)


def test_export_onnx__existing_output(density_fitted, density_export):
    est, _ = density_fitted
    with pytest.raises(OutputExistsError, match="model.onnx already exists; pass overwrite=True"):
        est.export_onnx(density_export)


def test_export_onnx__existing_sidecar(density_fitted, density_export, tmp_path):
    est, _ = density_fitted
    (tmp_path / "other.onnx.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="other.onnx.json already exists"):
        est.export_onnx(tmp_path / "other.onnx")


def test_export_onnx__not_onnx_suffix(density_fitted, tmp_path):
    est, _ = density_fitted
    with pytest.raises(
        ExportError, match=r"extension '\.pt' is not supported here; expected one of \.onnx"
    ):
        est.export_onnx(tmp_path / "model.pt")


def test_export_onnx__not_fitted(tmp_path):
    with pytest.raises(NotFittedError, match="this TrafficForecaster is not fitted yet"):
        TrafficForecaster("convgru").export_onnx(tmp_path / "model.onnx")


def test_export_onnx__ensemble_refused(tmp_path):
    ensemble = ForecastEnsemble(TrafficForecaster("convgru"), members=2)
    with pytest.raises(
        ExportError,
        match=r"ForecastEnsemble of 2 members .* member.export_onnx\(f'member-\{i\}.onnx'\)",
    ):
        ensemble.export_onnx(tmp_path / "ensemble.onnx")


def test_export_onnx__missing_dependency(density_fitted, tmp_path, monkeypatch):
    est, _ = density_fitted
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(
        MissingDependencyError, match=r"missing: onnxscript: pip install 'trafficrnn\[onnx\]'"
    ):
        est.export_onnx(tmp_path / "model.onnx")


def test_onnx_forecaster__modified_onnx_file(density_export, tmp_path):
    from trafficrnn.onnx import OnnxForecaster

    copy = tmp_path / "model.onnx"
    shutil.copy(f"{density_export}.json", f"{copy}.json")
    copy.write_bytes(density_export.read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="checksum does not match its sidecar's onnx_sha256"):
        OnnxForecaster(copy)


def test_onnx_forecaster__missing_sidecar(density_export, tmp_path):
    from trafficrnn.onnx import OnnxForecaster

    shutil.copy(density_export, tmp_path / "model.onnx")
    with pytest.raises(ModelFileError, match=r"model\.onnx\.json is missing"):
        OnnxForecaster(tmp_path / "model.onnx")


def test_onnx_forecaster__other_grid(image_export):
    """The torch model forecasts any area of its CRS and GSD; the exported graph is fixed to its grid."""
    from trafficrnn.onnx import OnnxForecaster

    _, images, target, path = image_export
    runner = OnnxForecaster(path)
    with pytest.raises(
        ModelMismatchError, match=r"exported for inputs x of shape .* training grid"
    ):
        runner.predict(images.isel(x=slice(0, 12)), target=target.isel(x=slice(0, 3)))
