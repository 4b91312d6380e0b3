"""Tests of FittedState: one object for what a fitted model knows about its data."""

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from trafficrnn import ForecastEnsemble, TrafficForecaster
from trafficrnn.estimation.state import STATE_FIELDS, FittedState
from trafficrnn.params import grouped

from .test_estimator import FAST, GRID, density_series, image_series


@pytest.fixture(scope="module")
def fitted():
    return TrafficForecaster("convgru", context=("ha",), **grouped(FAST, dict(cell_mean=True))).fit(
        density_series(periods=100)
    )


def test_fitted_attributes_are_views_of_the_state(fitted):
    state = fitted.state_
    assert isinstance(state, FittedState)
    for name in STATE_FIELDS:
        assert getattr(fitted, f"{name}_") is getattr(state, name)
    assert state.grid.matches(GRID) and state.cadence == pd.Timedelta("15min")
    assert state.split == state.training_summary["split"]
    assert state.training_summary["frames"] == 100 and state.history


def test_every_state_field_has_an_estimator_attribute():
    assert {f.name for f in fields(FittedState)} == set(STATE_FIELDS)
    for name in STATE_FIELDS:
        assert isinstance(getattr(TrafficForecaster, f"{name}_"), property)


def test_unfitted_estimator_has_no_fitted_attributes():
    est = TrafficForecaster()
    assert not hasattr(est, "state_") and not hasattr(est, "grid_")
    with pytest.raises(AttributeError, match="set by fit or load"):
        est.grid_ = GRID


def test_state_to_dict_is_json_and_round_trips(fitted):
    state = fitted.state_
    config = json.loads(json.dumps(state.to_dict()))
    again = FittedState.from_dict(config, arrays=state.context.arrays())
    for name in ("cadence", "gsd", "bands", "input_bands", "units", "density_only", "naive_zone"):
        assert getattr(again, name) == getattr(state, name), name
    assert again.grid.matches(state.grid) and again.grid.tile_size == state.grid.tile_size
    assert again.split == state.split and again.history == json.loads(json.dumps(state.history))
    assert again.target_normalizer.to_dict() == state.target_normalizer.to_dict()
    assert again.context.to_dict() == state.context.to_dict()
    for key, arr in state.context.arrays().items():
        np.testing.assert_array_equal(again.context.arrays()[key], arr)


def test_saved_config_holds_the_state_and_load_restores_it(fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert {k: config[k] for k in fitted.state_.to_dict()} == json.loads(
        json.dumps(fitted.state_.to_dict())
    )
    loaded = TrafficForecaster.load(path)
    assert loaded.state_.to_dict() == json.loads(json.dumps(fitted.state_.to_dict()))
    da = density_series(periods=100)
    np.testing.assert_array_equal(loaded.predict(da).values, fitted.predict(da).values)


def test_ensemble_answers_with_its_first_members_state():
    ens = ForecastEnsemble(TrafficForecaster("convgru", **FAST), members=2).fit(
        density_series(periods=80)
    )
    assert ens.state_ is ens.estimators_[0].state_
    assert ens.grid_ is ens.estimators_[0].state_.grid


def test_channels_declared_by_the_providers_size_the_model():
    """The model's channel counts come from one Channels object: calendar (4) + covariates +
    context maps for the leads; the same plus observed targets (2 per band) for the inputs."""
    from trafficrnn.estimation.inputs import Channels

    target = density_series(periods=80)
    images = image_series(target)
    est = TrafficForecaster(
        "convgru",
        tile_size=4,
        context=("ha",),
        **grouped(FAST, dict(target_inputs=True, context_inputs=True)),
    ).fit(images, target)
    ch = Channels.of(est, bands=1, context=est.context_, covariates=est.covariates_, static=0)
    assert (ch.calendar, ch.covariates, ch.context, ch.targets) == (4, 0, 1, 2)
    cfg = est.model_.config
    assert cfg["future_covariate_channels"] == ch.future == 4 + 1
    assert cfg["past_covariate_channels"] == ch.past == 4 + 1 + 2
    assert "4 calendar, 0 covariate, 1 context, 2 observed-target" in ch.describe()
