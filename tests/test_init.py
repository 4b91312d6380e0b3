"""Tests of fine-tuning: ``fit(..., init=...)`` starts from a fitted model's weights and scalings."""

import numpy as np
import pytest
import torch
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, ModelMismatchError, NotFittedError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.params import grouped

from .test_estimator import FAST, GRID, density_series, image_series

#: a learning rate so small that training leaves the starting weights as they were
FROZEN = grouped(FAST, {"lr": 1e-12, "max_epochs": 1})


@pytest.fixture(scope="module")
def pretrained():
    return TrafficForecaster("convgru", **FAST).fit(density_series(seed=0))


def weights(est):
    return {k: v.clone() for k, v in est.model_.state_dict().items()}


def max_change(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fit_init__training_starts_from_its_weights_and_scalings(pretrained):
    other = density_series(seed=1) * 3  # another city, on another scale
    tuned = TrafficForecaster("convgru", **FROZEN).fit(other, init=pretrained)
    assert max_change(weights(tuned), weights(pretrained)) < 1e-6
    assert tuned.target_normalizer_.to_dict() == pretrained.target_normalizer_.to_dict()
    scratch = TrafficForecaster("convgru", **FROZEN).fit(other)
    assert max_change(weights(scratch), weights(pretrained)) > 1e-2
    assert scratch.target_normalizer_.to_dict() != pretrained.target_normalizer_.to_dict()
    # the context maps are this stack's own
    assert tuned.grid_ == pretrained.grid_
    assert tuned.training_summary_["period"][0] == str(other.time.values[0]).replace("T", " ")[:19]


def test_fit_init__learns_from_the_new_stack(pretrained):
    tuned = TrafficForecaster("convgru", **FAST).fit(density_series(seed=1), init=pretrained)
    assert max_change(weights(tuned), weights(pretrained)) > 1e-4
    assert np.isfinite(tuned.predict(density_series(seed=1)).values).all()


def test_fit_init__from_a_saved_folder_in_half_precision(pretrained, tmp_path):
    path = pretrained.save(tmp_path / "half", half=True)
    assert (path / "model.safetensors").stat().st_size < 0.6 * (
        pretrained.save(tmp_path / "full") / "model.safetensors"
    ).stat().st_size
    tuned = TrafficForecaster("convgru", **FROZEN).fit(density_series(seed=1), init=path)
    assert next(tuned.model_.parameters()).dtype == torch.float32
    change = max_change(weights(tuned), weights(pretrained))
    assert change < 1e-2  # float16 rounding of the weights, nothing more


def test_fit_init__refuses_another_architecture(pretrained):
    with pytest.raises(ConfigError, match=r"another architecture .* hidden"):
        TrafficForecaster("convgru", **grouped(FAST, {"hidden": (4,)})).fit(
            density_series(seed=1), init=pretrained
        )


def test_fit_init__refuses_another_model(pretrained):
    with pytest.raises(ConfigError, match=r"init= is a 'convgru' model, this one is 'convlstm'"):
        TrafficForecaster("convlstm", **FAST).fit(density_series(seed=1), init=pretrained)


def test_fit_init__refuses_an_unfitted_model_or_another_object():
    with pytest.raises(NotFittedError):
        TrafficForecaster("convgru", **FAST).fit(
            density_series(seed=1), init=TrafficForecaster("convgru", **FAST)
        )
    with pytest.raises(ConfigError, match="init= takes a fitted TrafficForecaster"):
        TrafficForecaster("convgru", **FAST).fit(density_series(seed=1), init=42)


def test_fit_init__refuses_images_of_another_gsd():
    target = density_series(periods=100)
    est = TrafficForecaster("convgru", tile_size=4, **FAST).fit(image_series(target), target)
    # the same scene at 2x coarser pixels: cells of 2 x 4 px = 200 m
    coarse = Grid(GRID.crs, GRID.transform @ Affine.scale(2), GRID.shape)
    target2 = coarse.attach(target.drop_vars(["x", "y", "spatial_ref"], errors="ignore"))
    images2 = image_series(target2)
    pixels = Grid(coarse.crs, coarse.transform @ Affine.scale(1 / 4), images2.shape[-2:])
    images2 = pixels.attach(images2.drop_vars(["x", "y", "spatial_ref"], errors="ignore"))
    with pytest.raises(
        ModelMismatchError, match=r"init= was trained on images of 25 x 25 .* 50 x 50"
    ):
        TrafficForecaster("convgru", tile_size=4, **FAST).fit(images2, target2, init=est)
    with pytest.raises(ConfigError, match="density grids"):
        TrafficForecaster("convgru", **FAST).fit(target, init=est)


def test_fit_init__keeps_the_feature_layout_of_the_model_it_starts_from():
    """A model saved before the cells' valid share joined the features (no ``count_validity``) is
    fine-tuned in its own layout; a new one gets the share."""
    target = density_series(periods=100)
    images = image_series(target)
    est = TrafficForecaster("convgru", tile_size=4, **FAST).fit(images, target)
    assert est.model_.config["count_validity"] is True
    older = {k: v for k, v in est.model_.config.items() if k != "count_validity"}
    est.model_ = type(est.model_)(**older)
    tuned = TrafficForecaster("convgru", tile_size=4, **FAST).fit(images, target, init=est)
    assert "count_validity" not in tuned.model_.config
    assert tuned.model_.feature_channels == est.model_.feature_channels
    again = TrafficForecaster("convgru", tile_size=4, **FAST).fit(images, target, init=tuned)
    assert "count_validity" not in again.model_.config
