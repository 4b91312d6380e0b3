"""Tests of TrafficForecaster: fit / predict / evaluate on both paths, refusals, determinism."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, NotFittedError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.params import grouped

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))
FAST = dict(
    input_steps=6,
    horizon=3,
    progress=False,
    model_kwargs=dict(hidden=(8,)),
    trainer_kwargs=dict(max_epochs=2, batch_size=32, patience=0),
)


def density_series(periods=160, freq="15min", seed=0):
    times = pd.date_range("2024-05-01", periods=periods, freq=freq)
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


def image_series(target, tile=4, seed=0):
    """RGB-like images whose first band is the density repeated over each tile, plus noise."""
    rng = np.random.default_rng(seed)
    up = np.repeat(np.repeat(target.values, tile, axis=2), tile, axis=3)
    values = np.concatenate([up, up * 0.5, rng.random(up.shape, dtype="float32")], axis=1)
    da = xr.DataArray(
        values,
        dims=("time", "band", "y", "x"),
        coords={"time": target.time.values, "band": ["red", "green", "blue"]},
    )
    pixels = Grid(
        GRID.crs,
        GRID.transform @ Affine.scale(1 / tile),
        (GRID.shape[0] * tile, GRID.shape[1] * tile),
    )
    return pixels.attach(da)


@pytest.fixture(scope="module", params=["convlstm", "convgru"])
def fitted(request):
    da = density_series()
    return TrafficForecaster(request.param, **FAST).fit(da), da


def test_predict__forecast_contract(fitted):
    est, da = fitted
    fc = est.predict(da)
    assert fc.dims == ("lead", "band", "y", "x")
    assert fc.rio.crs == GRID.crs and fc.rio.transform() == GRID.transform
    assert fc.attrs["issued"] == "2024-05-02T15:45:00" and fc.attrs["units"] == "vehicles per cell"
    expected = pd.Timestamp("2024-05-02T15:45") + pd.to_timedelta([15, 30, 45], unit="min")
    assert list(fc.valid_time.values) == list(expected.values)
    assert (fc.values >= 0).all() and np.isfinite(fc.values).all()


def test_predict__shorter_horizon(fitted):
    est, da = fitted
    assert est.predict(da, horizon=2).sizes["lead"] == 2


def test_predict__horizon_longer_than_trained(fitted):
    est, da = fitted
    with pytest.raises(
        ModelMismatchError, match="horizon=5 is longer than the 3 steps the model was trained for"
    ):
        est.predict(da, horizon=5)


def test_predict__bands_differ(fitted):
    est, da = fitted
    with pytest.raises(
        ModelMismatchError, match=r"stack bands \['flow'\] differ from the model's \['density'\]"
    ):
        est.predict(da.assign_coords(band=["flow"]))


def test_predict__cadence_differs(fitted):
    est, _ = fitted
    with pytest.raises(ModelMismatchError, match="stack cadence 0 days 00:30:00 differs"):
        est.predict(density_series(periods=20, freq="30min"))


def test_predict__too_few_frames(fitted):
    est, da = fitted
    with pytest.raises(
        ModelMismatchError, match="the stack has 3 frame\\(s\\); the model reads input_steps=6"
    ):
        est.predict(da.isel(time=slice(0, 3)))


def test_predict__other_crs(fitted):
    est, da = fitted
    with pytest.raises(ModelMismatchError, match="CRS"):
        est.predict(da.rio.write_crs("EPSG:32632"))


def test_evaluate__table_with_baselines(fitted):
    est, da = fitted
    table = est.evaluate(da)
    assert list(table.index.get_level_values("model").unique()) == [
        est.model,
        "persistence",
        "historical_average",
        "ridge",
    ]
    assert list(table.loc[est.model].index) == [1, 2, 3]
    assert set(table.columns) == {"mae", "rmse", "mape", "skill_rmse"}
    assert np.allclose(table.loc["persistence", "skill_rmse"], 0)
    assert table.attrs["issues"] > 0 and table.attrs["split"] == "test"


def test_repr__shows_config_and_status(fitted):
    est, _ = fitted
    assert "[fitted, grid=(4, 5), bands=['density']" in repr(est)
    assert repr(TrafficForecaster("convgru")) == "TrafficForecaster(model='convgru') [not fitted]"


def test_fit__image_path_with_encoder():
    target = density_series(periods=60)
    images = image_series(target)
    est = TrafficForecaster("convgru", tile_size=4, **FAST).fit(images, target)
    fc = est.predict(images)
    assert fc.sizes == {"lead": 3, "band": 1, "y": 4, "x": 5}
    assert fc.rio.transform() == GRID.transform  # image transform × 4
    assert est.model_.tile_encoder is not None


def test_fit__image_path_with_historical_average_and_cell_means():
    target = density_series(periods=120)
    images = image_series(target)
    est = TrafficForecaster(
        "convlstm", tile_size=4, context=("ha",), **grouped(FAST, dict(cell_mean=True))
    ).fit(images, target)
    fc = est.predict(images)
    assert fc.sizes == {"lead": 3, "band": 1, "y": 4, "x": 5} and np.isfinite(fc.values).all()


def test_fit__image_nan_pixels_do_not_poison():
    target = density_series(periods=60)
    images = image_series(target)
    images[5:9, :, 0:6, 0:6] = np.nan  # a cloud
    est = TrafficForecaster("convlstm", tile_size=4, **FAST).fit(images, target)
    assert np.isfinite(est.predict(images.isel(time=slice(0, 9))).values).all()


@pytest.mark.parametrize("cell", ["convgru", "convlstm"])
@pytest.mark.parametrize("path", ["density", "images"])
def test_fit__deterministic_for_a_seed(cell, path):
    """Two fits with one seed on CPU: bit-identical weights and forecasts, on both paths, for both cells."""
    target = density_series(periods=60)
    args = (target,) if path == "density" else (image_series(target), target)
    params = grouped(FAST, dict(tile_size=4)) if path == "images" else FAST
    a, b = (
        TrafficForecaster(cell, seed=3, **grouped(params, dict(accelerator="cpu"))).fit(*args)
        for _ in range(2)
    )
    for name, weights in a.model_.state_dict().items():
        assert torch.equal(weights, b.model_.state_dict()[name]), name
    np.testing.assert_array_equal(a.predict(args[0]).values, b.predict(args[0]).values)


def test_fit__target_on_other_grid():
    target = density_series(periods=60)
    images = image_series(target)
    with pytest.raises(GridError, match="does not match the image grid"):
        TrafficForecaster(tile_size=2, **FAST).fit(images, target)


def test_fit__tile_size_without_target():
    with pytest.raises(ConfigError, match="tile_size=4 needs a target"):
        TrafficForecaster(tile_size=4, **FAST).fit(density_series(periods=40))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"horizon": 0}, "horizon=0 is invalid"),
        ({"input_steps": -1}, "input_steps=-1 is invalid"),
        ({"kernel_size": 4}, "kernel_size=4 is invalid"),
        ({"val": 0.6, "test": 0.5}, "val=0.6, test=0.5 are invalid"),
        ({"hidden": ()}, "hidden=\\(\\) is invalid"),
    ],
)
def test_fit__bad_parameters(kw, match):
    params = grouped(FAST, kw)
    with pytest.raises(ConfigError, match=match):
        TrafficForecaster(**params).fit(density_series(periods=40))


def test_fit__stack_too_short():
    with pytest.raises(ConfigError, match="needs input_steps \\+ horizon"):
        TrafficForecaster(**FAST).fit(density_series(periods=12))


def test_fit__not_a_dataarray():
    with pytest.raises(ConfigError, match="must be a DataArray \\(time, band, y, x\\)"):
        TrafficForecaster(**FAST).fit(np.zeros((10, 1, 4, 5)))


def test_predict__not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        TrafficForecaster().predict(density_series(periods=20))


def test_set_params__unknown():
    with pytest.raises(ValueError, match="unknown parameter 'depth'"):
        TrafficForecaster().set_params(depth=3)


def road_layer(values=None):
    values = np.zeros((1, *GRID.shape), "float32") if values is None else values
    if values.sum() == 0:
        values[0, 1, :] = 3.0  # a three-lane road along row 1
    return GRID.attach(xr.DataArray(values, dims=("band", "y", "x"), coords={"band": ["lanes"]}))


def test_fit__context_cell_mean_and_static_layers(tmp_path):
    da = density_series(periods=300)
    est = TrafficForecaster("convlstm", context=("ha", "1D"), **grouped(FAST, dict(cell_mean=True)))
    est.fit(da, static=road_layer())
    cfg = est.model_.config
    assert cfg["static_channels"] == 2  # lanes + the cell mean of the one band
    assert cfg["future_covariate_channels"] == 4 + 1 + 2  # calendar + ha + (1D value, validity)
    fc = est.predict(da, static=road_layer())
    assert np.isfinite(fc.values).all() and (fc.values >= 0).all()
    again = TrafficForecaster.load(est.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.predict(da, static=road_layer()).values, fc.values)
    assert again.static_bands_ == ["lanes"] and again.context_.entries == ["ha", "1D"]


def test_fit__context_inputs_join_the_encoder(tmp_path):
    da = density_series(periods=300)
    est = TrafficForecaster(
        "convgru", context=("ha", "1D"), **grouped(FAST, dict(context_inputs=True))
    ).fit(da)
    cfg = est.model_.config
    assert cfg["past_covariate_channels"] == cfg["future_covariate_channels"] == 4 + 1 + 2
    fc = est.predict(da)
    again = TrafficForecaster.load(est.save(tmp_path / "m"))
    assert again.context_inputs is True
    np.testing.assert_array_equal(again.predict(da).values, fc.values)


def test_fit__linear_lags_build_a_linear_term_that_is_saved_and_loaded(tmp_path):
    da = density_series(periods=100)
    est = TrafficForecaster(
        "convgru", context=("ha",), **grouped(FAST, dict(linear_lags=2, cell_mean=True))
    ).fit(da)
    cfg = est.model_.config
    assert cfg["linear_leads"] == FAST["horizon"] and cfg["linear_lags"] == 2
    # per lead: 2 lags + calendar (4) + ha context (1) + cell mean (1) -> 1 band
    assert tuple(est.model_.linear.weight.shape) == (FAST["horizon"], 2 + 4 + 1 + 1, 1, 1)
    again = TrafficForecaster.load(est.save(tmp_path / "m"))
    assert again.linear_lags == 2
    np.testing.assert_array_equal(again.predict(da).values, est.predict(da).values)
    assert TrafficForecaster("convgru", **FAST).fit(da).model_.linear is None


def test_fit__linear_lags_on_images_read_nowcasts_saved_and_loaded(tmp_path):
    target = density_series(periods=80)
    images = image_series(target)
    est = TrafficForecaster("convgru", tile_size=4, **grouped(FAST, dict(linear_lags=3))).fit(
        images, target
    )
    assert est.model_.config["linear_lags"] == 3 and est.model_.tile_encoder is not None
    again = TrafficForecaster.load(est.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.predict(images).values, est.predict(images).values)


def test_fit__bptt_steps_truncate_training_only(tmp_path):
    """Truncated backpropagation changes what training learns from, not what the model reads."""
    da = density_series(periods=100)
    full = TrafficForecaster("convlstm", **FAST).fit(da)
    cut = TrafficForecaster("convlstm", **grouped(FAST, dict(bptt_steps=2))).fit(da)
    assert cut.model_.config == full.model_.config  # the same network, trained differently
    assert not np.array_equal(cut.predict(da).values, full.predict(da).values)
    again = TrafficForecaster.load(cut.save(tmp_path / "m"))
    assert again.bptt_steps == 2
    np.testing.assert_array_equal(again.predict(da).values, cut.predict(da).values)
    # through all input frames: identical to no truncation
    every = TrafficForecaster(
        "convlstm", **grouped(FAST, dict(bptt_steps=FAST["input_steps"]))
    ).fit(da)
    np.testing.assert_allclose(
        every.predict(da).values, full.predict(da).values, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"bptt_steps": 0},
            r"bptt_steps=0 is invalid: expected an integer from 1 to input_steps=6",
        ),
        ({"bptt_steps": 7}, "bptt_steps=7 is invalid"),
        ({"bptt_steps": True}, "bptt_steps=True is invalid"),
        (
            {"linear_lags": -1},
            r"linear_lags=-1 is invalid: expected an integer from 0 \(no linear term\) to input_steps=6",
        ),
        ({"linear_lags": 7}, "linear_lags=7 is invalid"),
        ({"linear_lags": 1.5}, "linear_lags=1.5 is invalid"),
    ],
)
def test_fit__linear_lags_refused(params, match):
    with pytest.raises(ConfigError, match=match):
        TrafficForecaster("convlstm", **grouped(FAST, params)).fit(density_series(periods=60))


def test_prediction_batch__context_maps_equal_training_windows():
    """The maps a forecast reads for its input and target frames are those its training window had
    (past-period context: no causal difference between training and prediction)."""
    from trafficrnn.estimation.inputs import normalised_inputs, prediction_batch
    from trafficrnn.windows import WindowDataset

    da = density_series(periods=300)
    est = TrafficForecaster(
        "convgru", context=("1D",), **grouped(FAST, dict(context_inputs=True))
    ).fit(da)
    times = pd.DatetimeIndex(da.time.values)
    x = normalised_inputs(est, da)
    maps = est.context_.series(x, times, len(times))
    start = 150
    item = WindowDataset(x, x, [start], est.input_steps, est.horizon, future_maps=maps)[0]
    batch = prediction_batch(est, x, times, np.array([start + est.input_steps - 1]), est.horizon)
    assert item["ctx_in"].shape == (est.input_steps, 2, *GRID.shape)
    np.testing.assert_array_equal(batch["ctx_in"][0].numpy(), item["ctx_in"].numpy())
    np.testing.assert_array_equal(batch["ctx_out"][0].numpy(), item["ctx_out"].numpy())


def test_fit__target_inputs_read_observed_targets_beside_images(tmp_path):
    target = density_series(periods=120)
    images = image_series(target)
    est = TrafficForecaster(
        "convgru", tile_size=4, **grouped(FAST, dict(target_inputs=True, count_head=True))
    ).fit(images, target)
    assert est.model_.config["past_covariate_channels"] == 4 + 2  # calendar + (target, observed)
    fc = est.predict(images, target=target)
    assert fc.shape == (3, 1, *GRID.shape) and np.isfinite(fc.values).all()
    # an unobserved last frame falls back to the nowcast instead of failing or reading zeros
    gappy = target.copy(data=target.values.copy())
    gappy.values[-1] = np.nan
    assert np.isfinite(est.predict(images, target=gappy).values).all()
    table = est.evaluate(images, target)
    assert set(table.index.get_level_values("model")) == {
        "convgru",
        "persistence",
        "historical_average",
        "ridge",
    }
    again = TrafficForecaster.load(est.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.predict(images, target=target).values, fc.values)


def test_predict__target_inputs_need_the_target():
    target = density_series(periods=80)
    images = image_series(target)
    est = TrafficForecaster("convgru", tile_size=4, **grouped(FAST, dict(target_inputs=True))).fit(
        images, target
    )
    with pytest.raises(
        ModelMismatchError, match=r"reads the observed targets of its input frames .* pass target="
    ):
        est.predict(images)


def test_fit__target_inputs_on_the_density_path():
    with pytest.raises(ConfigError, match="target_inputs=True is for the image path"):
        TrafficForecaster("convgru", **grouped(FAST, dict(target_inputs=True))).fit(
            density_series(periods=60)
        )


@pytest.fixture(scope="module")
def static_model():
    da = density_series(periods=120)
    return TrafficForecaster("convgru", **FAST).fit(da, static=road_layer()), da


def test_predict__kept_static_layers_when_not_given(static_model):
    est, da = static_model
    np.testing.assert_array_equal(est.static_.values, road_layer().values)
    np.testing.assert_array_equal(
        est.predict(da).values, est.predict(da, static=road_layer()).values
    )


def test_predict__kept_static_layers_only_on_the_training_grid(static_model):
    est, da = static_model
    with pytest.raises(
        ModelMismatchError,
        match=r"keeps its static layers \['lanes'\] on its training grid "
        r"Grid\(.*shape=\(4, 5\).*the stack is on Grid\(.*shape=\(4, 3\)",
    ):
        est.predict(da.isel(x=slice(0, 3)))


def test_predict__static_layers_required_when_not_kept(static_model):
    est, da = static_model
    old = copy.copy(est)
    old.static_ = None  # as a model saved before the layers were kept
    with pytest.raises(ModelMismatchError, match=r"trained with static layers \['lanes'\]"):
        old.predict(da)


def test_fit__static_layers_on_another_grid():
    other = Grid(GRID.crs, GRID.transform, (3, 5))
    static = other.attach(
        xr.DataArray(
            np.ones((1, 3, 5), "float32"), dims=("band", "y", "x"), coords={"band": ["lanes"]}
        )
    )
    with pytest.raises(GridError, match="not on the forecast grid"):
        TrafficForecaster(**FAST).fit(density_series(periods=60), static=static)


def test_fit__image_path_refuses_past_value_context():
    target = density_series(periods=60)
    with pytest.raises(ConfigError, match="past-value periods need observed targets"):
        TrafficForecaster(tile_size=4, context=("1D",), **FAST).fit(image_series(target), target)


def test_fit__split_by_timestamps():
    da = density_series(periods=200)
    est = TrafficForecaster(val="2024-05-02T12:00", test="2024-05-02T18:00", **FAST).fit(da)
    assert est.split_["test"][1] == "2024-05-03 01:45:00"
    assert est.split_["train"][1] == "2024-05-02 11:45:00"
