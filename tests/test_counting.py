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
from trafficrnn import counting as counting_module
from trafficrnn.counting import counting_loss, fine_grid, read_front, save_front, smooth
from trafficrnn.errors import (
    ConfigError,
    GridError,
    ModelFileError,
    ModelMismatchError,
    VectorError,
)
from trafficrnn.estimation import fitting as fitting_module
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import rasterize_points
from trafficrnn.models import EncoderForecaster
from trafficrnn.params import grouped

PIXELS = Affine(1, 0, 500000, 0, -1, 5000000)
COUNT = dict(
    tile_size=16,
    input_steps=4,
    horizon=2,
    progress=False,
    model_kwargs=dict(hidden=(8,), encoder_width=8),
    trainer_kwargs=dict(max_epochs=25, batch_size=8, patience=5, lr=5e-3),
)


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
            img[t, :, r : r + 2, c : c + 2] = 1.0
            stamps.append(times[t])
            points.append(Point(*(transform * (c + 1, r + 1))))
    grid = Grid("EPSG:32633", transform, (size, size))
    images = grid.attach(
        xr.DataArray(
            img,
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["red", "green", "blue"]},
        )
    )
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
    encode = fitting_module.encode_frames

    def spy(net, x):  # the encoder as stage A left it, before stage B
        captured["encoder"] = {k: v.clone() for k, v in net.tile_encoder.state_dict().items()}
        return encode(net, x)

    patch = pytest.MonkeyPatch()
    patch.setattr(fitting_module, "encode_frames", spy)
    try:
        est = TrafficForecaster("convgru", **COUNT).fit(images, vehicles=points)
    finally:
        patch.undo()
    return est, images, points, captured


def test_split_indices__stage_a_validates_on_frames_spread_over_the_training_period():
    split = {"train": slice(0, 70), "val": slice(70, 85), "test": slice(85, 100)}
    train, val = counting_module.split_indices(split)
    held = np.arange(6, 70, 7)  # every 7th training frame: 6, 13, ..., 69
    np.testing.assert_array_equal(val, np.concatenate([held, np.arange(70, 85)]))
    np.testing.assert_array_equal(train, np.setdiff1d(np.arange(70), held))
    assert len(train) == 60 and not set(train) & set(val)
    # without a validation part, stage A trains on every training frame and validates on none
    train, val = counting_module.split_indices({"train": slice(0, 70), "val": slice(70, 70)})
    np.testing.assert_array_equal(train, np.arange(70))
    assert val.size == 0


def test_smooth__keeps_the_total():
    counts = torch.zeros(2, 1, 6, 7)
    counts[0, 0, 0, 0], counts[0, 0, 3, 3], counts[1, 0, 5, 6] = 2.0, 1.0, 3.0
    out = smooth(counts)
    torch.testing.assert_close(out.sum((1, 2, 3)), counts.sum((1, 2, 3)))
    assert out[0, 0, 3, 3] < 1.0 and out[0, 0, 3, 4] > 0  # spread to the neighbours


def test_counting_loss__zero_at_the_truth_and_masked():
    fine = torch.rand(1, 1, 4, 4)
    cells = fine.reshape(1, 1, 2, 2, 2, 2).sum((3, 5))
    ok_fine, ok_cells = (
        torch.ones_like(fine, dtype=torch.bool),
        torch.ones_like(cells, dtype=torch.bool),
    )
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
    assert stages["stage_a"]["sub_cell_px"] == 4 and stages["stage_b"]["epochs"] >= 1
    # stride-2 stages under a full-resolution stem: the density is read after the second (4 px)
    assert est.model_.config["count_stage"] == 1 and est.model_.count_factor == 4
    encoder = est.model_.tile_encoder.config
    assert encoder["stem"] and encoder["strides"] == [2, 2, 2, 2] and encoder["norm"] == "batch"
    assert est.gsd_ == (1.0, 1.0)


def test_fit__stage_b_leaves_the_encoder_unchanged(counted):
    est, _, _, captured = counted
    after = est.model_.tile_encoder.state_dict()
    assert captured["encoder"].keys() == after.keys()
    for key, value in captured["encoder"].items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)


def test_predict_many__encodes_each_frame_once_same_forecasts(counted):
    est, images, _, _ = counted
    ends = np.arange(est.input_steps - 1, images.sizes["time"])
    together = est.predict_many(images, ends).values  # the frames' features computed once, shared
    alone = np.stack(
        [est.predict_many(images, [e]).values[0] for e in ends]
    )  # pixels through the whole model
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_save_load__counting_model_identical_predictions(counted, tmp_path):
    est, images, _, _ = counted
    path = est.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["gsd"] == [1.0, 1.0] and config["model_config"]["count_stage"] == 1
    again = TrafficForecaster.load(path)
    np.testing.assert_array_equal(again.predict(images).values, est.predict(images).values)
    assert (
        again.gsd_ == (1.0, 1.0)
        and again.training_summary_["counting"] == est.training_summary_["counting"]
    )


def test_predict__other_gsd_refused(counted):
    est = counted[0]
    images, _ = squares(frames=6, size=128, gsd=0.5)
    with pytest.raises(
        ModelMismatchError,
        match=r"pixels of 0.5 x 0.5 metre.*trained on 1 x 1 at tile_size=16.*"
        r"align='resample'.*--align resample",
    ):
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
    est = TrafficForecaster("convlstm", **grouped(COUNT, {"max_epochs": 1})).fit(images, fine)
    assert (
        est.grid_.shape == (4, 4)
        and est.training_summary_["counting"]["stage_a"]["sub_cell_px"] == 4
    )


def test_fit__counting_off_keeps_one_stage():
    images, points = squares(frames=24)
    est = TrafficForecaster("convlstm", **grouped(COUNT, {"max_epochs": 1, "counting": False})).fit(
        images, vehicles=points
    )
    assert "counting" not in est.training_summary_ and est.grid_.shape == (4, 4)


def test_fit__target_on_no_sub_cell_grid():
    images, points = squares(frames=12)
    odd = rasterize_points(points, fine_grid(images, 3), times=images.time.values)
    with pytest.raises(GridError, match="does not match the image grid .* nor on a sub-cell grid"):
        TrafficForecaster("convlstm", **COUNT).fit(images, odd)


def test_fit__vehicles_without_time_column():
    images, points = squares(frames=12)
    with pytest.raises(VectorError, match="vehicles has no 'time' column.*add a 'time' column"):
        TrafficForecaster("convlstm", **COUNT).fit(
            images, vehicles=points.rename(columns={"time": "when"})
        )


def test_fit__vehicles_outside_the_images():
    images, points = squares(frames=12)
    far = points.set_geometry(points.translate(50_000, 0))
    with pytest.raises(
        VectorError, match="none of its .* point\\(s\\) lies inside the image extent.*check the"
    ):
        TrafficForecaster("convlstm", **COUNT).fit(images, vehicles=far)


def test_fit__vehicles_on_the_density_path():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="vehicles= is for the image path"):
        TrafficForecaster("convlstm", **grouped(COUNT, {"tile_size": None})).fit(
            images, vehicles=points
        )


def test_fit__counting_with_log1p():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="log1p=True breaks that"):
        TrafficForecaster("convlstm", **grouped(COUNT, dict(log1p=True))).fit(
            images, vehicles=points
        )


def test_fit__counting_without_count_head():
    images, points = squares(frames=12)
    with pytest.raises(ConfigError, match="set count_head=True"):
        TrafficForecaster("convlstm", **grouped(COUNT, dict(count_head=False))).fit(
            images, vehicles=points
        )


def test_fit__tile_size_not_dividing_the_scene():
    images, points = squares(frames=12)  # 64 x 64 px
    with pytest.raises(
        GridError,
        match=r"64 × 64 px is not a multiple of tile_size=24 .*Crop it to 48 × 48 px.*"
        r"divides both sides \(8, 16, 32\)",
    ):
        TrafficForecaster("convlstm", **grouped(COUNT, {"tile_size": 24})).fit(
            images, vehicles=points
        )


def test_compare__vehicles_train_every_model_to_count():
    from trafficrnn.compare import compare

    images, points = squares(frames=30)
    settings = grouped(
        {k: v for k, v in COUNT.items() if k != "progress"}, {"max_epochs": 2, "patience": 0}
    )
    result = compare(
        images, models=("convgru", "convlstm"), vehicles=points, progress=False, **settings
    )
    for name in ("convgru", "convlstm"):
        assert result.models[name].training_summary_["counting"]["stage_a"]["epochs"] >= 1
    assert np.isfinite(result.table.loc["convlstm", "skill_rmse"]).all()


@pytest.fixture
def front(counted, tmp_path, monkeypatch):
    """The count front of the fitted squares model, installed as the packaged front."""
    est = counted[0]
    path = tmp_path / "front.safetensors"
    norm = est.input_normalizer_
    save_front(
        est.model_,
        path,
        {
            "gsd": 1.0,
            "target_scale": float(est.target_normalizer_.scale_[0]),
            "input_mean": np.ravel(norm.mean_).tolist(),
            "input_scale": np.ravel(norm.scale_).tolist(),
        },
    )
    monkeypatch.setattr(counting_module, "FRONT", path)
    return path


def test_front__round_trip(counted, front):
    state, meta = read_front()
    own = counted[0].model_.state_dict()
    assert state and all(torch.equal(own[k], v) for k, v in state.items())
    assert any(k.startswith("nowcast_head.") for k in state) and meta["count_stage_px"] == 4
    assert not any(k.startswith("cell") or k.startswith("tile_encoder.body.20") for k in state)


def test_fit__starts_from_a_fitting_count_front(counted, front):
    images, points = squares(seed=1)
    est = TrafficForecaster("convgru", **grouped(COUNT, {"max_epochs": 1})).fit(
        images, vehicles=points
    )
    stage_a = est.training_summary_["counting"]["stage_a"]
    meta = read_front()[1]
    assert stage_a["from_front"] and est.target_normalizer_.scale_[0] == meta["target_scale"]
    # the front's scaling of the pixels, not one fitted on these frames
    assert np.ravel(est.input_normalizer_.scale_).tolist() == pytest.approx(meta["input_scale"])
    truth = rasterize_points(points, Grid.from_image(images, 16), times=images.time.values).values
    pred = cell_counts(
        est, images
    )  # one epoch from the front counts as well as 25 from scratch did
    assert np.abs(pred - truth).mean() < 0.5 * truth[truth > 0].mean()


def test_fit__count_share_sets_stage_a_share_of_the_time_limit(front, monkeypatch):
    budgets = []
    real = fitting_module.pretrain_encoder

    def spy(*args, **kwargs):  # stage A as fit starts it: its limit in seconds
        budgets.append(kwargs["max_seconds"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting_module, "pretrain_encoder", spy)
    # encoding every frame after stage A is taken to need 20 s: the share is of what is left then
    monkeypatch.setattr(fitting_module, "encode_seconds", lambda net, x: 20.0)
    images, points = squares(frames=12)
    for share in (None, 0.2):
        settings = grouped(COUNT, {"max_epochs": 1, "count_share": share})
        est = TrafficForecaster("convgru", max_time=1.0, **settings).fit(images, vehicles=points)
        assert est.training_summary_["counting"]["stage_a"]["from_front"]
    default, set_ = budgets
    # from the front: FINETUNE_SHARE of the minute less the set-up (well under a second here) and
    # the 20 s of encoding
    share = counting_module.FINETUNE_SHARE
    assert 40 * share - 3 < default <= 40 * share
    assert set_ == pytest.approx(default * 0.2 / share, abs=1.0)


def test_encode_seconds__times_a_few_frames_and_scales_to_all(monkeypatch):
    enc = {"tile_size": 16, "width": 4, "depth": 0, "strides": [2, 2, 2, 2]}
    net = EncoderForecaster(3, 1, "gru", [4], encoder=enc, count_head=True)
    x = np.random.default_rng(0).normal(size=(40, 3, 32, 32)).astype("float32")
    timer = iter([10.0, 10.5])  # the first 4 frames take half a second
    monkeypatch.setattr(counting_module.time, "perf_counter", lambda: next(timer))
    assert counting_module.encode_seconds(net, x) == pytest.approx(5.0)  # 40 frames
    monkeypatch.undo()  # the real clock again
    assert counting_module.encode_seconds(net, x[:0]) == 0.0
    assert counting_module.encode_seconds(net, x[:2]) > 0.0


def test_fit__count_front_of_another_gsd_not_used(front):
    images, points = squares(frames=12, gsd=2.0)
    est = TrafficForecaster("convgru", **grouped(COUNT, {"max_epochs": 1})).fit(
        images, vehicles=points
    )
    assert not est.training_summary_["counting"]["stage_a"]["from_front"]


def test_fit__count_front_not_used_on_other_radiometry(front):
    images, points = squares(frames=12)  # 0-1 in the front's training; here 0-10000 (say 16-bit)
    est = TrafficForecaster("convgru", **grouped(COUNT, {"max_epochs": 1})).fit(
        images * 10_000, vehicles=points
    )
    assert not est.training_summary_["counting"]["stage_a"]["from_front"]


def test_read_front__tampered_file_refused(tmp_path, monkeypatch):
    path = tmp_path / "front.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    monkeypatch.setattr(counting_module, "FRONT", path)
    with pytest.raises(ModelFileError, match="front.safetensors is not a count front"):
        read_front()
    monkeypatch.setattr(counting_module, "FRONT", tmp_path / "absent.safetensors")
    assert read_front() is None


def test_packaged_front__counts_a_city_it_never_saw():
    # the shipped weights, on a synthetic city of a seed none of its training cities had
    from trafficrnn.counting import FRONT, front_fits, load_front
    from trafficrnn.estimation.fitting import encoder_config as _encoder_config
    from trafficrnn.io import as_stored
    from trafficrnn.models import get_model
    from trafficrnn.models.forecaster import count_stage_for
    from trafficrnn.synth import simulate
    from trafficrnn.windows import Normalizer

    assert FRONT.is_file(), f"{FRONT} is missing: build it with benchmarks/count_front.py"
    state, meta = read_front()
    encoder = _encoder_config(64, 16, 1, counting=True)
    stage = count_stage_for(encoder["strides"], 4)
    assert meta["gsd"] == 1.0 and front_fits(meta, encoder, stage, 3, 1, 1.0)
    net = get_model(
        "convgru",
        in_channels=3,
        out_channels=1,
        hidden_channels=[8],
        encoder=encoder,
        count_head=True,
        count_stage=stage,
        density_per_cell=True,
    )
    load_front(net, state)
    r = simulate(
        256, days=0.5, step="60min", seed=11, tile_size=64, gsd=1.0, start="2024-06-04 06:00"
    )
    images = as_stored(r.images)  # as a user's JPEG files read
    norm = Normalizer("standard").fit(images)
    norm.mean_, norm.scale_ = (
        np.reshape(meta[k], np.shape(norm.mean_)) for k in ("input_mean", "input_scale")
    )
    x = norm.transform(np.asarray(images.values, dtype="float32"), band_axis=1).astype("float32")
    with torch.inference_mode():
        pred = net.eval().nowcast(torch.from_numpy(x)[None])[0].numpy() * meta["target_scale"]
    truth = r.density.values
    assert np.corrcoef(pred.ravel(), truth.ravel())[0, 1] > 0.85
    # the cell error, well below that of the best constant (the mean count)
    assert np.abs(pred - truth).mean() < 0.6 * np.abs(truth - truth.mean()).mean()
