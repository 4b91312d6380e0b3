"""Tests of trafficrnn.inference: tiled forecasts equal whole-area ones, bounded windows, dask, bad input."""

import os
import time
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import (
    ConfigError,
    GridError,
    ModelMismatchError,
    OutputExistsError,
    SchedulerError,
)
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.inference import (
    _style_breaks,
    connect,
    forecast_large,
    plan_windows,
    receptive_field,
    receptive_halo,
)
from trafficrnn.io.export import write_stack
from trafficrnn.io.qml import class_breaks, raster_qml
from trafficrnn.models import get_model
from trafficrnn.params import grouped

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (24, 24))
TINY = dict(
    input_steps=4,
    horizon=2,
    progress=False,
    model_kwargs=dict(hidden=(4,)),
    trainer_kwargs=dict(max_epochs=1),
)


def density_series(periods=40, seed=0):
    """Vehicles per 100 m cell on a 24 × 24 grid, every 15 min, with a daily cycle and noise."""
    times = pd.date_range("2024-05-01", periods=periods, freq="15min")
    rng = np.random.default_rng(seed)
    cycle = 1.5 + np.sin(2 * np.pi * np.arange(periods) / 96)[:, None, None, None]
    values = rng.uniform(2, 10, (1, 1, *GRID.shape)) * cycle + rng.normal(
        0, 0.2, (periods, 1, *GRID.shape)
    )
    da = GRID.attach(
        xr.DataArray(
            values.clip(0).astype("float32"),
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
        )
    )
    da.attrs["units"] = "vehicles per cell"
    return da


@pytest.fixture(scope="module")
def fitted():
    da = density_series()
    est = TrafficForecaster("convgru", **TINY).fit(da)
    return est, da, est.predict(da)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions, src.tags()


def test_forecast_large__equals_whole_area(fitted, tmp_path):
    est, da, whole = fitted
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tiled forecast")
        path = forecast_large(est, da, tmp_path / "fc.tif", window=8)
    values, profile, descriptions, tags = read(path)
    np.testing.assert_allclose(values, whole.values.reshape(values.shape), rtol=1e-6, atol=1e-6)
    assert (
        profile["crs"] == GRID.crs
        and profile["transform"] == GRID.transform
        and np.isnan(profile["nodata"])
    )
    assert descriptions == (
        "lead +15min, valid 2024-05-01T10:00:00Z",
        "lead +30min, valid 2024-05-01T10:15:00Z",
    )
    assert tags["issued"] == whole.attrs["issued"] + "Z" and tags["units"] == "vehicles per cell"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.qml", "fc.tif"]  # no temporary left


def test_forecast_large__streams_into_a_zarr_store(fitted, tmp_path):
    pytest.importorskip("zarr", reason="zarr is not installed: pip install 'trafficrnn[zarr]'")
    from trafficrnn.io import read_zarr, to_zarr

    est, da, whole = fitted
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tiled forecast")
        path = forecast_large(est, da, tmp_path / "fc.zarr", window=8)
    assert [p.name for p in tmp_path.iterdir()] == ["fc.zarr"]  # no temporary left
    back = read_zarr(path)
    assert back.rio.crs == GRID.crs and back.rio.transform() == GRID.transform
    np.testing.assert_allclose(back.values, whole.values, rtol=1e-6, atol=1e-6)
    assert back.indexes["lead"].equals(whole.indexes["lead"])
    np.testing.assert_array_equal(back["valid_time"].values, whole["valid_time"].values)
    assert (
        back.attrs["issued"] == whole.attrs["issued"] and back.attrs["units"] == "vehicles per cell"
    )
    # the same store as to_zarr writes from the whole-area forecast
    ref = read_zarr(to_zarr(whole, tmp_path / "ref.zarr"))
    assert back.dims == ref.dims and back.attrs == ref.attrs
    with pytest.raises(OutputExistsError):
        forecast_large(est, da, path, window=8)


def test_forecast_large__valid_cog(fitted, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    est, da, _ = fitted
    valid, errors, _ = cog_validate(forecast_large(est, da, tmp_path / "fc.tif", window=8))
    assert valid, errors


def test_forecast_large__halo_below_receptive_field_warns_and_blends(fitted, tmp_path):
    est, da, whole = fitted
    r = receptive_halo(est)
    with pytest.warns(
        UserWarning, match=f"approximate: halo={r - 1} cells is below the receptive field r={r}"
    ):
        path = forecast_large(est, da, tmp_path / "fc.tif", window=8, halo=r - 1, blend="linear")
    error = np.abs(read(path)[0] - whole.values.reshape(-1, *GRID.shape))
    assert (
        0 < error.max() < 0.05 * float(whole.max())
    )  # not exact, but close: the halo rule is tight


def test_forecast_large__lazy_files_as_source(fitted, tmp_path):
    est, da, whole = fitted
    write_stack(da.isel(time=slice(-6, None)), tmp_path / "stack")
    path = forecast_large(
        est, tmp_path / "stack", tmp_path / "fc.tif", window=10, chunks={"y": 8, "x": 8}
    )
    np.testing.assert_allclose(
        read(path)[0], whole.values.reshape(-1, *GRID.shape), rtol=1e-6, atol=1e-6
    )


def test_forecast_large__shorter_horizon(fitted, tmp_path):
    est, da, whole = fitted
    values = read(forecast_large(est, da, tmp_path / "fc.tif", window=12, horizon=1))[0]
    np.testing.assert_allclose(values[0], whole.values[0, 0], rtol=1e-6, atol=1e-6)


def test_forecast_large__window_larger_than_area(fitted, tmp_path):
    est, da, _ = fitted
    with pytest.raises(GridError, match="window=25 cells is larger than the area of 24 × 24 cells"):
        forecast_large(est, da, tmp_path / "fc.tif", window=25)


def test_forecast_large__halo_larger_than_area(fitted, tmp_path):
    est, da, _ = fitted
    with pytest.raises(GridError, match="halo=40 cells is larger than the area"):
        forecast_large(est, da, tmp_path / "fc.tif", window=8, halo=40)


def test_forecast_large__bad_blend(fitted, tmp_path):
    est, da, _ = fitted
    with pytest.raises(ConfigError, match="blend='gauss' is invalid"):
        forecast_large(est, da, tmp_path / "fc.tif", blend="gauss")


def test_forecast_large__existing_output(fitted, tmp_path):
    est, da, _ = fitted
    (tmp_path / "fc.tif").write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        forecast_large(est, da, tmp_path / "fc.tif", window=8)


def qml_edges(path) -> np.ndarray:
    """The class edges of a raster QML: the shader's minimum, its items' upper bounds, maximum."""
    root = ET.fromstring(path.read_text(encoding="utf-8").split("\n", 1)[1])  # after the DOCTYPE
    assert root.tag == "qgis" and root.find("pipe/rasterrenderer").get("band") == "1"
    shader = root.find("pipe/rasterrenderer/rastershader/colorrampshader")
    uppers = [float(item.get("value")) for item in shader.findall("item")][:-1]  # the last: inf
    return np.array([float(shader.get("minimumValue")), *uppers, float(shader.get("maximumValue"))])


def test_forecast_large__writes_the_qgis_style_beside_the_cog(fitted, tmp_path):
    est, da, whole = fitted
    path = forecast_large(est, da, tmp_path / "fc.tif", window=8)
    with rasterio.open(path) as src:  # the first band at every lead: bands 1, 1 + bands, ...
        first = src.read(list(range(1, src.count + 1, len(est.bands_))))
    edges = qml_edges(tmp_path / "fc.qml")
    np.testing.assert_array_equal(edges, class_breaks(first))
    # the legend to_geotiff gives the whole-area forecast of the same data
    assert (tmp_path / "fc.qml").read_text(encoding="utf-8") == raster_qml(
        class_breaks(whole.isel(band=0).values)
    )
    # above STYLE_VALUES values the breaks come from an even sample: close to the exact ones
    sampled = _style_breaks(path, len(est.bands_), limit=first.size // 5)
    assert sampled[0] == edges[0] and np.all(np.diff(sampled) > 0)
    assert abs(sampled[-1] - edges[-1]) <= edges[1] - edges[0]


def test_forecast_large__existing_style_refused_before_the_cog(fitted, tmp_path):
    est, da, _ = fitted
    qml = tmp_path / "fc.qml"
    qml.write_text("keep", encoding="utf-8")
    with pytest.raises(
        OutputExistsError, match=r"fc.qml \(the QGIS style of fc.tif\) already exists"
    ):
        forecast_large(est, da, tmp_path / "fc.tif", window=8)
    assert [p.name for p in tmp_path.iterdir()] == ["fc.qml"] and qml.read_text() == "keep"
    forecast_large(est, da, tmp_path / "fc.tif", window=8, style=False)  # keeps the style
    assert qml.read_text() == "keep" and (tmp_path / "fc.tif").exists()
    forecast_large(est, da, tmp_path / "fc.tif", window=8, overwrite=True)  # replaces both
    assert qml_edges(qml).size == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.qml", "fc.tif"]


def test_forecast_large__too_few_frames(fitted, tmp_path):
    est, da, _ = fitted
    with pytest.raises(ModelMismatchError, match="the stack has 3 frame"):
        forecast_large(est, da.isel(time=slice(0, 3)), tmp_path / "fc.tif", window=8)


def test_forecast_large__failure_leaves_no_file(fitted, tmp_path, monkeypatch):
    est, da, _ = fitted
    calls, predict = [], TrafficForecaster.predict

    def failing(self, images, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("window 5 failed")
        return predict(self, images, **kw)

    monkeypatch.setattr(TrafficForecaster, "predict", failing)
    with pytest.raises(RuntimeError, match="window 5 failed"):
        forecast_large(est, da, tmp_path / "fc.tif", window=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kernel, hidden, feedback", [(3, [4], True), (3, [4, 4], True), (5, [4, 4], False)]
)
def test_receptive_field__equals_gradient_support(kernel, hidden, feedback):
    torch.manual_seed(0)
    net = get_model(
        "convgru",
        in_channels=1,
        hidden_channels=hidden,
        kernel_size=kernel,
        feedback=feedback,
        residual=feedback,
    ).double()
    r = receptive_field(net, 3, 2)
    size = 2 * r + 7
    x = torch.rand(1, 3, 1, size, size, dtype=torch.float64, requires_grad=True)
    net(x, horizon=2)[0, -1, 0, size // 2, size // 2].backward()
    rows, cols = np.nonzero(x.grad.abs().amax(dim=(0, 1, 2)).numpy() > 0)
    assert max(np.abs(rows - size // 2).max(), np.abs(cols - size // 2).max()) == r


@pytest.mark.parametrize("blend", ["cosine", "linear", "none"])
def test_plan_windows__weights_sum_to_one(blend):
    total = np.zeros((30, 19))
    for w in plan_windows((30, 19), 7, 3, blend=blend):
        (r0, r1), (c0, c1) = w.rows, w.cols
        assert r1 - r0 <= 7 + 6 and c1 - c0 <= 7 + 6
        total[r0:r1, c0:c1] += w.wy[:, None] * w.wx[None, :]
    np.testing.assert_allclose(total, 1.0)


def test_plan_windows__every_window_reads_the_same_extent():
    # cores of 6 or 7 cells on 30 rows: every read window spans its core + 2 halos, sliding
    # inward at the area edges instead of being clipped (memory depends on the window only)
    for w in plan_windows((30, 19), 7, 3):
        for (lo, hi), weights in ((w.rows, w.wy), (w.cols, w.wx)):
            assert hi - lo == np.count_nonzero(weights) + 6


def test_forecast_large__frees_each_window(fitted, tmp_path, monkeypatch):
    # rioxarray's accessor caches form reference cycles around each window's frames; without a
    # collection per window they would pile up until the cyclic GC runs (memory grew with area)
    import gc

    import trafficrnn.inference as inference

    est, da, _ = fitted
    alive = []
    predict = inference._predict

    def spy(model, images, static, horizon):
        out = predict(model, images, static, horizon)
        alive.append(
            sum(
                isinstance(o, xr.DataArray)
                and o.chunks is None
                and o.sizes.get("time") == est.input_steps
                and o.shape[2:] == images.shape[2:]
                for o in gc.get_objects()
            )
        )
        return out

    monkeypatch.setattr(inference, "_predict", spy)
    lazy = da.chunk({"y": 64, "x": 64})
    gc.disable()  # the cyclic GC must not hide a leak by running by chance
    try:
        forecast_large(est, lazy, tmp_path / "fc.tif", window=8)
    finally:
        gc.enable()
    assert len(alive) == 9 and max(alive) == 0


def test_forecast_large__refuses_target_inputs_models(fitted, tmp_path):
    import copy

    est, da, _ = fitted
    reads_targets = copy.copy(est)
    reads_targets.set_params(model_kwargs={**(est.model_kwargs or {}), "target_inputs": True})
    with pytest.raises(ModelMismatchError, match="forecast_large streams images only"):
        forecast_large(reads_targets, da, tmp_path / "fc.tif", window=8)


def test_connect__unreachable_scheduler_fails_within_timeout():
    started = time.perf_counter()
    with pytest.raises(
        SchedulerError, match="no dask scheduler answered at 'tcp://127.0.0.1:9' within 2 s"
    ):
        connect("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - started < 10


@pytest.fixture(scope="module")
def client():
    before = dict(os.environ)
    with connect(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        # the nanny's OMP_NUM_THREADS=1 is for its workers, not for this process's later subprocesses
        assert dict(os.environ) == before
        yield c
    assert c.cluster.status.name == "closed"  # the client owned its LocalCluster


def test_forecast_large__dask_cluster_equals_whole_area(fitted, client, tmp_path):
    est, da, whole = fitted
    path = forecast_large(est, da, tmp_path / "fc.tif", window=8, client=client)
    np.testing.assert_allclose(
        read(path)[0], whole.values.reshape(-1, *GRID.shape), rtol=1e-6, atol=1e-6
    )
    shipped = client.run(lambda: dict(__import__("trafficrnn.inference").inference._MODELS))
    assert list(shipped.values()) == [{}]  # the model plugin is torn down after the run


def test_forecast_large__worker_dies_task_is_retried(fitted, client, tmp_path):
    est, da, whole = fitted
    marker = tmp_path / "died"

    class DiesOnce(TrafficForecaster):  # local class: pickled by value to the worker
        def predict(self, images, **kw):
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().predict(images, **kw)

    model = DiesOnce.__new__(DiesOnce)
    model.__dict__.update(est.__dict__)
    path = forecast_large(model, da, tmp_path / "fc.tif", window=8, client=client)
    assert marker.exists()
    np.testing.assert_allclose(
        read(path)[0], whole.values.reshape(-1, *GRID.shape), rtol=1e-6, atol=1e-6
    )


def test_fit__crop_bounds_batch_memory(monkeypatch):
    from trafficrnn.training import ForecastModule

    shapes = []
    step = ForecastModule.training_step

    def recording(self, batch, batch_idx):
        shapes.append({k: tuple(v.shape) for k, v in batch.items() if k in ("x", "y")})
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ForecastModule, "training_step", recording)
    TrafficForecaster("convgru", **grouped(TINY, dict(crop=6, batch_size=4))).fit(
        density_series(periods=24)
    )
    assert shapes and all(
        s["x"][-2:] == (6, 6) and s["y"][-2:] == (6, 6) and s["x"][0] <= 4 for s in shapes
    )
