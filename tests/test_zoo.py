"""Tests of the model zoo (trafficrnn.zoo): listed, loaded with their fine-tuning settings, refused by name."""

import pytest

from trafficrnn.errors import UnknownNameError
from trafficrnn.zoo import FINE_TUNE, list_pretrained, pretrained


def test_list_pretrained__both_deep_models():
    assert list_pretrained() == ["convgru", "convlstm"]


@pytest.mark.parametrize("name", ["convgru", "convlstm"])
def test_pretrained__fitted_on_1m_images_with_the_fine_tuning_settings(name):
    est = pretrained(name.upper(), max_time=2.0)
    assert est.is_fitted and est.model == name
    assert est.grid_.tile_size == 64 and est.gsd_ == pytest.approx((1.0, 1.0))
    assert est.input_bands_ == ["red", "green", "blue"] and est.bands_ == ["density"]
    params = est.get_params()
    assert params["max_time"] == 2.0
    top = {k: v for k, v in FINE_TUNE.items() if k not in ("max_time", "trainer_kwargs")}
    assert {k: params[k] for k in top} == top
    training = FINE_TUNE["trainer_kwargs"]  # merged into the model's own training options
    assert {k: params["trainer_kwargs"][k] for k in training} == training
    # trained on 15-minute frames of cities that are not the sample: four weeks of one city (the
    # ConvGRU), one week of four cities side by side (the ConvLSTM)
    summary = est.training_summary_
    frames, start = {"convgru": (28 * 96, "2024-05-06"), "convlstm": (7 * 96, "2024-05-27")}[name]
    assert summary["frames"] == frames and summary["period"][0].startswith(start)
    assert est.grid_.shape == {"convgru": (8, 8), "convlstm": (16, 16)}[name]


def test_pretrained__unknown_name_lists_the_packaged_ones():
    with pytest.raises(
        UnknownNameError, match=r"no packaged pretrained model 'lstm'.*\['convgru', 'convlstm'\]"
    ):
        pretrained("lstm")
