"""Tests of trafficrnn.counting: fine density targets, the counting loss, and the two-stage
training of TrafficForecaster with point supervision (white squares on black: trivially countable)."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from affine import Affine
from shapely.geometry import Point

from trafficrnn import Grid
from trafficrnn import estimator as estimator_module
from trafficrnn.counting import counting_loss, fine_grid, smooth
from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, VectorError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import rasterize_points

PIXELS = Affine(1, 0, 500000, 0, -1, 5000000)
COUNT = dict(tile_size=16, input_steps=4, horizon=2, hidden=(8,), max_epochs=25, batch_size=8, progress=False,
             patience=5, encoder_width=8, lr=5e-3)


def squares(frames=40, size=64, seed=0, gsd=1.0):
    """Images of 2 x 2 px white squares on black, and a point at the centre of each, per frame."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-05-01", periods=frames, freq="15min")
    img = np.zeros((frames, 3, size, size), "float32")
    transform = Affine(gsd, 0, PIXELS.c, 0, -gsd, PIXELS.f)
    stamps, points = [], []
    for t in range(frames):
        for _ in range(int(rng.integers(0, 12))):
            r, c = rng.integers(0, size // 3, 2) * 3
            img[t, :, r:r + 2, c:c + 2] = 1.0
            stamps.append(times[t])
            points.append(Point(*(transform * (c + 1, r + 1))))
    grid = Grid("EPSG:32633", transform, (size, size))
    images = grid.attach(xr.DataArray(img, dims=("time", "band", "y", "x"),
                                      coords={"time": times, "band": ["red", "green", "blue"]}))
    return images, gpd.GeoDataFrame({"time": stamps}, geometry=points, crs="EPSG:32633")


def cell_counts(est, images):
    """The fitted model's nowcast of every frame, raw vehicles per cell."""
    x = est.input_normalizer_.transform(np.asarray(images.values, dtype="float32"), band_axis=1)
    with torch.inference_mode():
        out = est.model_.nowcast(torch.from_numpy(x)[None])[0].numpy()
    return est.target_normalizer_.inverse_transform(out, band_axis=1)


@pytest.fixture(scope="module")
def counted(request):
    images, points = squares()
    captured = {}
    encode = estimator_module.encode_frames

    def spy(net, x):  # the encoder as stage A left it, before stage B
        captured["encoder"] = {k: v.clone() for k, v in net.tile_encoder.state_dict().items()}
        return encode(net, x)

    patch = pytest.MonkeyPatch()
    patch.setattr(estimator_module, "encode_frames", spy)
    try:
        est = TrafficForecaster("convgru", **COUNT).fit(images, vehicles=points)
    finally:
        patch.undo()
    return est, images, points, captured


def test_smooth__keeps_the_total():
    counts = torch.zeros(2, 1, 6, 7)
    counts[0, 0, 0, 0], counts[0, 0, 3, 3], counts[1, 0, 5, 6] = 2.0, 1.0, 3.0
    out = smooth(counts)
    torch.testing.assert_close(out.sum((1, 2, 3)), counts.sum((1, 2, 3)))
    assert out[0, 0, 3, 3] < 1.0 and out[0, 0, 3, 4] > 0  # spread to the neighbours


def test_counting_loss__zero_at_the_truth_and_masked():
    fine = torch.rand(1, 1, 4, 4)
    cells = fine.reshape(1, 1, 2, 2, 2, 2).sum((3, 5))
    ok_fine, ok_cells = torch.ones_like(fine, dtype=torch.bool), torch.ones_like(cells, dtype=torch.bool)
    assert float(counting_loss(fine, fine, ok_fine, cells, cells, ok_cells)) == 0.0
    wrong = fine.clone()
    wrong[..., :2, :2] += 5  # all in the first cell
    assert float(counting_loss(wrong, fine, ok_fine, cells + 1, cells, ok_cells)) > 0
    ok_fine[..., :2, :2] = False
    ok_cells[...] = False
    assert float(counting_loss(wrong, fine, ok_fine, cells + 1, cells, ok_cells)) == 0.0


def test_fine_grid__image_grid_scaled():
    images, _ = squares(frames=2)
    grid = fine_grid(images, 8)
    assert grid.shape == (8, 8) and grid.transform == PIXELS * Affine.scale(8)


def test_fit__counting_drives_cell_counts_near_truth(counted):
    est, images, points, _ = counted
    truth = rasterize_points(points, Grid.from_image(images, 16), times=images.time.values).values
    pred = cell_counts(est, images)
    test = slice(-6, None)  # the chronological test frames, never trained on
    mae = np.abs(pred[test] - truth[test]).mean()
    occupied = truth[test][truth[test] > 0].mean()
    assert mae < 0.5 * occupied
    totals = pred[test].sum((1, 2, 3)), truth[test].sum((1, 2, 3))
    assert np.abs(totals[0] - totals[1]).sum() < 0.3 * totals[1].sum()


def test_fit__counting_records_both_stages_and_the_count_stage(counted):
    est = counted[0]
    stages = est.training_summary_["counting"]
    assert stages["stage_a"]["epochs"] >= 1 and stages["stage_a"]["best_val_count_loss"] is not None
    assert stages["stage_a"]["sub_cell_px"] == 8 and stages["stage_b"]["epochs"] >= 1
    assert est.model_.config["count_stage"] == 1 and est.model_.count_factor == 2  # 8 px of a 16 px tile
    assert est.gsd_ == (1.0, 1.0)


def test_fit__stage_b_leaves_the_encoder_unchanged(counted):
    est, _, _, captured = counted
    after = est.model_.tile_encoder.state_dict()
    assert captured["encoder"].keys() == after.keys()
    for key, value in captured["encoder"].items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)


def test_save_load__counting_model_identical_predictions(counted, tmp_path):
    est, images, _, _ = counted
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["gsd"] == [1.0, 1.0] and config["model_config"]["count_stage"] == 1
    again = TrafficForecaster.load(path)
    np.testing.assert_array_equal(again.predict(images).values, est.predict(images).values)
    assert again.gsd_ == (1.0, 1.0) and again.training_summary_["counting"] == est.training_summary_["counting"]


def test_predict__other_gsd_refused(counted):
    est = counted[0]
    images, _ = squares(frames=6, size=128, gsd=0.5)
    with pytest.raises(ModelMismatchError, match=r"pixels of 0.5 x 0.5 metre.*trained on 1 x 1 at tile_size=16.*"
                                                 r"align='resample'.*--align resample"):
        est.predict(images)


def test_predict__align_resample(counted):
    est = counted[0]
    fine, _ = squares(frames=6, size=128, gsd=0.5)
    fc = est.predict(fine, align="resample")
    assert fc.sizes == {"lead": 2, "band": 1, "y": 4, "x": 4}
    assert fc.rio.transform() == PIXELS * Affine.scale(16)


def test_predict__bad_align(counted):
    with pytest.raises(ConfigError, match="align='nearest' is invalid"):
        counted[0].predict(counted[1], align="nearest")


def test_fit__fine_density_raster_as_target():
    images, points = squares(frames=24)
    fine = rasterize_points(points, fine_grid(images, 4), times=images.time.values)
    est = TrafficForecaster("convlstm", **{**COUNT, "max_epochs": 1}).fit(images, fine)
    assert est.grid_.shape == (4, 4) and est.training_summary_["counting"]["stage_a"]["sub_cell_px"] == 8


def test_fit__counting_off_keeps_one_stage():
    images, points = squares(frames=24)
    est = TrafficForecaster("convlstm", counting=False, **{**COUNT, "max_epochs": 1}).fit(images, vehicles=points)
    assert "counting" not in est.training_summary_ and est.grid_.shape == (4, 4)


def test_fit__target_on_no_sub_cell_grid():
    images, points = squares(frames=12)
    odd = rasterize_points(points, fine_grid(images, 3), times=images.time.values)
    with pytest.raises(GridError, match="does not match the image grid .* nor on a sub-cell grid"):
        TrafficForecaster("convlstm", **COUNT).fit(images, odd)


def test_fit__vehicles_without_time_column():
    images, points = squares(frames=12)
    with pytest.raises(VectorError, match="vehicles has no 'time' column.*add a 'time' column"):
        TrafficForecaster("convlstm", **COUNT).fit(images, vehicles=points.rename(columns={"time": "when"}))


def test_fit__vehicles_outside_the_images():
    images, points = squares(frames=12)
    far = points.set_geometry(points.translate(50_000, 0))
    with pytest.raises(VectorError, match="none of its .* point\\(s\\) lies inside the image extent.*check the"):
        TrafficForecaster("convlstm", **COUNT).fit(images, vehicles=far)


def test_fit__vehicles_on_the_density_path():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="vehicles= is for the image path"):
        TrafficForecaster("convlstm", **{**COUNT, "tile_size": None}).fit(images, vehicles=points)


def test_fit__counting_with_log1p():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="log1p=True breaks that"):
        TrafficForecaster("convlstm", log1p=True, **COUNT).fit(images, vehicles=points)


def test_fit__counting_without_count_head():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="set count_head=True"):
        TrafficForecaster("convlstm", count_head=False, **COUNT).fit(images, vehicles=points)


def test_fit__tile_size_not_dividing_the_scene():
    images, points = squares(frames=12)  # 64 x 64 px
    with pytest.raises(GridError, match=r"64 × 64 px is not a multiple of tile_size=24 .*Crop it to 48 × 48 px.*"
                                        r"divides both sides \(8, 16, 32\)"):
        TrafficForecaster("convlstm", **{**COUNT, "tile_size": 24}).fit(images, vehicles=points)


def test_compare__vehicles_train_every_model_to_count():
    from trafficrnn.compare import compare

    images, points = squares(frames=30)
    settings = {**{k: v for k, v in COUNT.items() if k != "progress"}, "max_epochs": 2, "patience": 0}
    result = compare(images, models=("convgru", "convlstm"), vehicles=points, progress=False, **settings)
    for name in ("convgru", "convlstm"):
        assert result.models[name].training_summary_["counting"]["stage_a"]["epochs"] >= 1
    assert np.isfinite(result.table.loc["convlstm", "skill_rmse"]).all()
