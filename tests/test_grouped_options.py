"""The estimator's small core (issue 21, item 1): the options most users set as parameters, the
architecture in ``model_kwargs`` and the training in ``trainer_kwargs``, each checked at
construction; the scikit-learn contract with dict parameters; saved models of the flat layout."""

import json
import shutil

import numpy as np
import pytest
from sklearn.base import clone

from trafficrnn.errors import ConfigError
from trafficrnn.estimator import PARAMS, TrafficForecaster
from trafficrnn.params import (
    DEFAULTS,
    GROUP_OF,
    MODEL_DEFAULTS,
    TRAINER_DEFAULTS,
    grouped,
    resolve,
)

from .test_estimator import FAST, density_series

# -- the signature ---------------------------------------------------------------------------------


def test_signature__the_core_and_two_groups():
    import inspect

    names = [
        name
        for name, p in inspect.signature(TrafficForecaster.__init__).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
    ]
    assert names == [*DEFAULTS, "model_kwargs", "trainer_kwargs"] == list(PARAMS)
    assert len(names) == 13  # 41 before the groups
    assert set(MODEL_DEFAULTS) | set(TRAINER_DEFAULTS) == set(GROUP_OF)
    assert not set(MODEL_DEFAULTS) & set(TRAINER_DEFAULTS) and not set(GROUP_OF) & set(DEFAULTS)


# -- construction ----------------------------------------------------------------------------------


def test_construction__group_options_read_as_attributes():
    est = TrafficForecaster(
        "convlstm",
        horizon=3,
        model_kwargs={"hidden": (16,), "linear_lags": 2},
        trainer_kwargs={"lr": 1e-3, "max_epochs": 4},
    )
    assert est.hidden == (16,) and est.linear_lags == 2 and est.lr == 1e-3 and est.max_epochs == 4
    # options left out: their defaults
    assert est.kernel_size == MODEL_DEFAULTS["kernel_size"] == 3
    assert est.batch_size == TRAINER_DEFAULTS["batch_size"] == 16
    default = TrafficForecaster()
    assert default.model_kwargs is None and default.trainer_kwargs is None
    assert {name: getattr(default, name) for name in GROUP_OF} == {
        **MODEL_DEFAULTS,
        **TRAINER_DEFAULTS,
    }


def test_construction__group_option_attributes_are_read_only():
    est = TrafficForecaster()
    with pytest.raises(AttributeError, match=r"lr is a trainer_kwargs option, read-only here"):
        est.lr = 1e-3
    assert est.lr == TRAINER_DEFAULTS["lr"]


def test_construction__unknown_group_key_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown model_kwargs key 'hiden': expected one of hidden, kernel_size, "
        r"encoder_width",
    ):
        TrafficForecaster(model_kwargs={"hiden": (8,)})
    with pytest.raises(
        ConfigError, match=r"unknown trainer_kwargs key 'learning_rate': expected one of lr, "
    ):
        TrafficForecaster(trainer_kwargs={"learning_rate": 1e-3})


def test_construction__key_of_the_other_group_or_the_top_level_refused_naming_its_place():
    with pytest.raises(
        ConfigError,
        match=r"lr is a trainer_kwargs option, not a model_kwargs one: pass "
        r"trainer_kwargs=\{'lr': 0.001\}",
    ):
        TrafficForecaster(model_kwargs={"lr": 1e-3})
    with pytest.raises(
        ConfigError,
        match=r"hidden is a model_kwargs option, not a trainer_kwargs one: pass "
        r"model_kwargs=\{'hidden': \(8,\)\}",
    ):
        TrafficForecaster(trainer_kwargs={"hidden": (8,)})
    with pytest.raises(
        ConfigError,
        match=r"horizon is a TrafficForecaster parameter, not a model_kwargs option: pass horizon=3",
    ):
        TrafficForecaster(model_kwargs={"horizon": 3})


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"model_kwargs": {"hidden": (32, 0)}},
            r"model_kwargs: hidden=\(32, 0\) is invalid: expected a list of positive channel counts",
        ),
        (
            {"model_kwargs": {"kernel_size": 4}},
            r"model_kwargs: kernel_size=4 is invalid: expected an odd integer",
        ),
        (
            {"trainer_kwargs": {"lr": 0}},
            r"trainer_kwargs: lr=0 is invalid: expected a number > 0",
        ),
        (
            {"trainer_kwargs": {"count_share": 1.0}},
            r"trainer_kwargs: count_share=1.0 is invalid: expected a share of max_time in \(0, 1\), "
            r"or None for the default",
        ),
        (
            {"input_steps": 6, "trainer_kwargs": {"bptt_steps": 0}},
            r"trainer_kwargs: bptt_steps=0 is invalid: expected an integer from 1 to input_steps=6",
        ),
        (
            {"model_kwargs": [("hidden", (8,))]},
            r"model_kwargs=\[\('hidden', \(8,\)\)\] is invalid: expected a dict of options such as "
            r"model_kwargs=\{'hidden': \(32, 32\)\}, or None for the defaults",
        ),
    ],
)
def test_construction__bad_value_inside_a_group_refused(params, match):
    with pytest.raises(ConfigError, match=match):
        TrafficForecaster(**params)


@pytest.mark.parametrize("name", sorted(GROUP_OF))
def test_construction__flat_option_refused_naming_its_group(name):
    value = {**MODEL_DEFAULTS, **TRAINER_DEFAULTS}[name]
    group = GROUP_OF[name]
    message = (
        f"{name} is a {group} option, not a TrafficForecaster parameter: pass "
        f"{group}={{{name!r}: {value!r}}}"
    )
    with pytest.raises(ConfigError) as info:
        TrafficForecaster("convgru", **{name: value})
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        TrafficForecaster().set_params(**{name: value})
    assert str(info.value) == message


def test_construction__unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden_size'"):
        TrafficForecaster(hidden_size=8)


def test_compare__flat_option_refused_naming_its_group():
    from trafficrnn.compare import compare

    with pytest.raises(
        ConfigError,
        match=r"lr is a trainer_kwargs option, not a TrafficForecaster parameter: pass "
        r"trainer_kwargs=\{'lr': 0.001\}",
    ):
        compare(density_series(periods=40), models=["convgru"], lr=1e-3)


# -- scikit-learn plumbing -------------------------------------------------------------------------


def test_get_params__dicts_as_given_and_clone_round_trip():
    model_kwargs, trainer_kwargs = {"hidden": [8, 8], "residual": False}, {"lr": 2e-3}
    est = TrafficForecaster(
        "convgru", horizon=2, model_kwargs=model_kwargs, trainer_kwargs=trainer_kwargs
    )
    params = est.get_params()
    assert params["model_kwargs"] is model_kwargs and params["trainer_kwargs"] is trainer_kwargs
    again = clone(est)  # sklearn checks that __init__ stored each (copied) parameter unchanged
    assert again is not est and again.get_params() == params
    assert again.model_kwargs is not model_kwargs  # a copy, not shared with the original
    assert TrafficForecaster(**params).get_params() == params


def test_set_params__a_group_replaces_its_dict_validated():
    est = TrafficForecaster(trainer_kwargs={"lr": 2e-3, "patience": 1})
    assert est.set_params(trainer_kwargs={"max_epochs": 3}) is est
    assert est.trainer_kwargs == {"max_epochs": 3} and est.lr == TRAINER_DEFAULTS["lr"]
    with pytest.raises(ConfigError, match="trainer_kwargs: max_epochs=0 is invalid"):
        est.set_params(horizon=2, trainer_kwargs={"max_epochs": 0})
    assert est.trainer_kwargs == {"max_epochs": 3} and est.horizon == DEFAULTS["horizon"]


def test_set_params__nested_form_changes_one_option():
    est = TrafficForecaster(model_kwargs={"hidden": (8,)}, trainer_kwargs={"lr": 2e-3})
    est.set_params(trainer_kwargs__patience=0, model_kwargs__residual=False)
    assert est.trainer_kwargs == {"lr": 2e-3, "patience": 0}
    assert est.model_kwargs == {"hidden": (8,), "residual": False}
    with pytest.raises(ConfigError, match="unknown trainer_kwargs key 'rate'"):
        est.set_params(trainer_kwargs__rate=1)
    with pytest.raises(ConfigError, match="the nested form is <group>__<option>"):
        est.set_params(optim__lr=1)


def test_grouped__sorts_flat_options_into_their_groups():
    assert grouped(
        {"horizon": 3, "lr": 1e-3, "hidden": (8,)}, {"trainer_kwargs": {"lr": 2e-3}}
    ) == {
        "horizon": 3,
        "trainer_kwargs": {"lr": 2e-3},
        "model_kwargs": {"hidden": (8,)},
    }
    assert grouped(FAST, {"patience": 3})["trainer_kwargs"] == {
        **FAST["trainer_kwargs"],
        "patience": 3,
    }
    assert FAST["trainer_kwargs"]["patience"] == 0  # the settings given are not changed
    flat = resolve(TrafficForecaster(**grouped({"lr": 1e-3})).get_params())
    assert flat["lr"] == 1e-3 and flat["hidden"] == MODEL_DEFAULTS["hidden"]
    assert "trainer_kwargs" not in flat


# -- saved models of the flat layout ---------------------------------------------------------------


def test_load__packaged_model_and_its_flat_layout(tmp_path):
    from trafficrnn.zoo import WEIGHTS

    est = TrafficForecaster.load(WEIGHTS / "convgru_1m64")
    assert est.linear_lags == 3 and est.model_.config["linear_lags"] == 3
    # the same folder with its options written flat (the layout before the groups) loads the same
    old = tmp_path / "flat"
    shutil.copytree(WEIGHTS / "convgru_1m64", old)
    config = json.loads((old / "config.json").read_text())
    config["params"] = json.loads(json.dumps(resolve(config["params"])))
    assert "model_kwargs" not in config["params"] and "lr" in config["params"]
    (old / "config.json").write_text(json.dumps(config))
    flat = TrafficForecaster.load(old)
    assert set(flat.model_kwargs) == set(MODEL_DEFAULTS)  # every option, as it was built
    assert resolve(flat.get_params()) == resolve(est.get_params())
    weights, again = est.model_.state_dict(), flat.model_.state_dict()
    assert weights.keys() == again.keys()
    assert all(np.array_equal(weights[k].numpy(), again[k].numpy()) for k in weights)
    # saved again, it writes the grouped layout, and loads as the same estimator
    path = flat.save(tmp_path / "again")
    params = json.loads((path / "config.json").read_text())["params"]
    assert "lr" not in params and params["trainer_kwargs"]["lr"] == config["params"]["lr"]
    assert TrafficForecaster.load(path).get_params() == flat.get_params()


def test_load__flat_layout_written_by_a_test_model(tmp_path):
    da = density_series(periods=60)
    est = TrafficForecaster("convgru", **grouped(FAST, {"residual": False})).fit(da)
    path = est.save(tmp_path / "model")
    old = tmp_path / "old"
    shutil.copytree(path, old)
    config = json.loads((old / "config.json").read_text())
    config["params"] = json.loads(json.dumps(resolve(config["params"])))  # every option flat
    (old / "config.json").write_text(json.dumps(config))
    again = TrafficForecaster.load(old)
    assert again.residual is False and again.hidden == (8,) and again.max_epochs == 2
    np.testing.assert_array_equal(again.predict(da).values, est.predict(da).values)


def test_pretrained__merges_a_group_and_refuses_a_flat_option():
    from trafficrnn.zoo import FINE_TUNE, pretrained

    base = pretrained("convgru", trainer_kwargs={"lr": 1e-4})
    assert base.lr == 1e-4 and base.patience == FINE_TUNE["trainer_kwargs"]["patience"]
    assert base.batch_size == 8  # the packaged model's own, kept
    # the share of the pretraining's budget is not the fine-tuning's: it gets fit's default again
    assert base.count_share is None
    assert pretrained("convgru", trainer_kwargs={"count_share": 0.5}).count_share == 0.5
    with pytest.raises(ConfigError, match=r"pass trainer_kwargs=\{'lr': 0.0001\}"):
        pretrained("convgru", lr=1e-4)
