"""Tests of ForecastEnsemble: members, mean and spread, evaluation, parallel fit, saving and loading, the CLI."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import trafficrnn
from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble, read_manifest
from trafficrnn.errors import ConfigError, ModelFileError, NotFittedError, OutputExistsError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.inference import forecast_large, receptive_field, receptive_halo
from trafficrnn.io import write_stack
from trafficrnn.params import grouped

from .test_estimator import FAST, GRID, density_series


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    da = density_series(periods=100)
    ens = ForecastEnsemble(TrafficForecaster("convgru", **FAST, seed=3), members=2).fit(da)
    path = ens.save(tmp_path_factory.mktemp("ensembles") / "ens")
    return ens, da, path


def copy_of(path, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(path, out)
    return out


# -- members, mean, spread ------------------------------------------------------------------
def test_fit__members_differ_by_seed_only(fitted):
    ens, _, _ = fitted
    assert [e.seed for e in ens.estimators_] == [3, 4]
    a, b = (e.get_params() for e in ens.estimators_)
    assert {k for k in a if a[k] != b[k]} == {"seed"}
    wa, wb = (next(iter(e.model_.state_dict().values())) for e in ens.estimators_)
    assert not np.allclose(wa.numpy(), wb.numpy())  # different initial weights, different training


def test_predict__is_the_member_mean_with_the_grid_of_the_input(fitted):
    ens, da, _ = fitted
    fc = ens.predict(da)
    members = [e.predict(da) for e in ens.estimators_]
    np.testing.assert_allclose(fc.values, (members[0].values + members[1].values) / 2, rtol=1e-6)
    assert fc.dims == ("lead", "band", "y", "x") and fc.attrs["model"] == "convgru-ensemble2"
    assert fc.attrs["members"] == 2 and fc.attrs["issued"] == members[0].attrs["issued"]
    assert fc.rio.crs == GRID.crs and fc.rio.transform() == GRID.transform
    np.testing.assert_array_equal(fc.valid_time.values, members[0].valid_time.values)


def test_predict__members_along_a_member_dimension(fitted):
    ens, da, _ = fitted
    every = ens.predict(da, members=True)
    assert every.dims == ("member", "lead", "band", "y", "x") and list(every.seed.values) == [3, 4]
    np.testing.assert_array_equal(
        every.isel(member=1).values, ens.estimators_[1].predict(da).values
    )
    spread = every.std("member")
    assert float(spread.max()) > 0 and spread.rio.transform() == GRID.transform


def test_predict_many__mean_of_members(fitted):
    ens, da, _ = fitted
    issues = [10, 40, 70]
    fc = ens.predict_many(da, issues, horizon=2)
    assert fc.dims == ("issued", "lead", "band", "y", "x") and fc.sizes["lead"] == 2
    expected = np.mean(
        [e.predict_many(da, issues, horizon=2).values for e in ens.estimators_], axis=0
    )
    np.testing.assert_allclose(fc.values, expected, rtol=1e-6)


def test_evaluate__ensemble_beside_the_baselines(fitted):
    ens, da, _ = fitted
    table = ens.evaluate(da, split=None)
    assert set(table.index.get_level_values("model")) == {
        "convgru-ensemble2",
        "persistence",
        "historical_average",
        "ridge",
    }
    # the ensemble row scores the member mean
    fc = ens.predict_many(da, np.arange(5, 97))
    truth = np.stack([da.values[i + 1 : i + 4] for i in range(5, 97)])
    lead1 = np.sqrt(np.mean((fc.values[:, 0] - truth[:, 0]) ** 2))
    assert table.loc[
        ("convgru-ensemble2", table.loc["convgru-ensemble2"].index[0]), "rmse"
    ] == pytest.approx(lead1, rel=1e-5)


def test_training_summary__per_member(fitted):
    ens, _, _ = fitted
    s = ens.training_summary_
    assert s["members"] == 2 and s["seeds"] == [3, 4] and len(s["runs"]) == 2
    assert s["parameters"] == sum(r["parameters"] for r in s["runs"])
    assert s["train_seconds"] == max(r["train_seconds"] for r in s["runs"])


def test_forecast_large__ensemble_equals_whole_area(tmp_path):
    from .test_inference import TINY
    from .test_inference import density_series as wide_series

    da = wide_series()
    ens = ForecastEnsemble(TrafficForecaster("convgru", **TINY), members=2).fit(da)
    assert receptive_halo(ens) == receptive_field(ens.estimators_[0].model_, 4, 2)
    path = forecast_large(ens, da, tmp_path / "fc.tif", window=8)
    whole = ens.predict(da)
    with rasterio.open(path) as src:
        np.testing.assert_allclose(
            src.read(), whole.values.reshape(-1, 24, 24), rtol=1e-5, atol=1e-5
        )
        assert src.transform == whole.rio.transform()


# -- parameters -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"members": 0}, "members=0 is invalid: expected an integer >= 1"),
        ({"members": 2.5}, "members=2.5 is invalid"),
        ({"n_jobs": 0}, "n_jobs=0 is invalid"),
        ({"members": 65}, "at most 64"),
        ({"estimator": "convgru"}, "estimator is a str, expected a TrafficForecaster"),
    ],
)
def test_fit__bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ForecastEnsemble(**kwargs).fit(density_series(periods=40))


def test_not_fitted__clear_errors():
    ens = ForecastEnsemble(TrafficForecaster("convgru"), members=2)
    assert ens.model == "convgru-ensemble2" and "not fitted" in repr(ens)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ens.predict(density_series(periods=40))
    with pytest.raises(NotFittedError, match="grid_ needs fit"):
        ens.grid_
    with pytest.raises(NotFittedError):
        ens.save("anywhere")
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        ens.nonsense
    assert ens.set_params(members=3).get_params()["members"] == 3
    with pytest.raises(ValueError, match="unknown parameter 'seed'"):
        ens.set_params(seed=1)


def test_fit__bad_data_refused_as_by_one_model():
    from trafficrnn.errors import TimestampError

    one = density_series(periods=40).isel(time=slice(0, 1))
    with pytest.raises(TimestampError, match="one frame"):
        ForecastEnsemble(TrafficForecaster(**FAST), members=2).fit(one)


def test_fit__in_worker_processes_equals_one_after_another(fitted):
    """n_jobs=2: each member in its own process (joblib/loky), same seeds, same forecasts."""
    ens, da, _ = fitted
    parallel = ForecastEnsemble(
        TrafficForecaster("convgru", **FAST, seed=3), members=2, n_jobs=2
    ).fit(da)
    assert [e.seed for e in parallel.estimators_] == [3, 4]
    assert all(e.progress is False for e in parallel.estimators_)
    np.testing.assert_allclose(
        parallel.predict(da).values, ens.predict(da).values, rtol=1e-3, atol=1e-3
    )


# -- saving and loading ---------------------------------------------------------------------
def test_save_load__identical_forecast_and_layout(fitted):
    ens, da, path = fitted
    assert sorted(p.name for p in path.iterdir()) == ["ensemble.json", "member-0", "member-1"]
    manifest = json.loads((path / "ensemble.json").read_text())
    assert manifest["format"] == "trafficrnn-ensemble" and manifest["members"] == [
        "member-0",
        "member-1",
    ]
    again = ForecastEnsemble.load(path)
    np.testing.assert_array_equal(again.predict(da).values, ens.predict(da).values)
    assert [e.seed for e in again.estimators_] == [3, 4] and again.members == 2
    assert isinstance(trafficrnn.load(path), ForecastEnsemble)
    # each member is an ordinary saved model
    np.testing.assert_array_equal(
        TrafficForecaster.load(path / "member-1").predict(da).values,
        ens.estimators_[1].predict(da).values,
    )


def test_load__one_model_through_the_generic_loader(tmp_path):
    est = TrafficForecaster(**FAST).fit(density_series(periods=40))
    assert isinstance(trafficrnn.load(est.save(tmp_path / "m")), TrafficForecaster)


def test_load__an_ensemble_folder_as_one_model_points_to_the_ensemble_loader(fitted):
    with pytest.raises(ModelFileError, match=r"holds an ensemble .* ForecastEnsemble.load\(path\)"):
        TrafficForecaster.load(fitted[2])


def test_save__refuses_existing(fitted, tmp_path):
    ens, _, path = fitted
    with pytest.raises(OutputExistsError, match="already exists"):
        ens.save(path)
    ens.save(tmp_path / "again")
    ens.save(tmp_path / "again", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda m: m.update(format="something-else"),
            "format 'something-else', expected 'trafficrnn-ensemble'",
        ),
        (lambda m: m.update(format_version=99), "ensemble format 99 is newer"),
        (lambda m: m.update(format_version="1"), "format_version = '1'"),
        (
            lambda m: m.update(members=["../../etc"]),
            "expected a list of 1 to 64 distinct folder names",
        ),
        (lambda m: m.update(members=["member-0", "member-0"]), "distinct"),
        (lambda m: m.update(members=[]), "expected a list of 1 to 64"),
        (lambda m: m.update(members="member-0"), "expected a list"),
        (lambda m: m.update(n_jobs=-1), "n_jobs = -1"),
    ],
)
def test_load__tampered_manifest(fitted, tmp_path, edit, match):
    path = copy_of(fitted[2], tmp_path)
    manifest = json.loads((path / "ensemble.json").read_text())
    edit(manifest)
    (path / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=match):
        ForecastEnsemble.load(path)


def test_load__manifest_not_json_or_missing(fitted, tmp_path):
    path = copy_of(fitted[2], tmp_path)
    (path / "ensemble.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        ForecastEnsemble.load(path)
    (path / "ensemble.json").unlink()
    with pytest.raises(ModelFileError, match="not a saved ensemble folder"):
        ForecastEnsemble.load(path)
    with pytest.raises(ModelFileError, match="not a saved ensemble folder"):
        read_manifest(tmp_path / "nowhere")


def test_load__tampered_member_weights(fitted, tmp_path):
    path = copy_of(fitted[2], tmp_path)
    weights = path / "member-1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ModelFileError, match=r"member-1/model.safetensors: checksum .* refusing to load"
    ):
        ForecastEnsemble.load(path)


def test_load__missing_member(fitted, tmp_path):
    path = copy_of(fitted[2], tmp_path)
    shutil.rmtree(path / "member-1")
    with pytest.raises(
        ModelFileError, match="member-1 does not exist: the ensemble .* lists it as a member"
    ):
        ForecastEnsemble.load(path)


def test_load__member_of_another_model_refused(fitted, tmp_path):
    path = copy_of(fitted[2], tmp_path)
    other = TrafficForecaster("convgru", **grouped(FAST, {"horizon": 2})).fit(
        density_series(periods=100)
    )
    shutil.rmtree(path / "member-1")
    other.save(path / "member-1")
    with pytest.raises(ModelFileError, match=r"member-1: horizon = 2 but the first member has 3"):
        ForecastEnsemble.load(path)


# -- the CLI --------------------------------------------------------------------------------
def test_cli__train_info_forecast_evaluate_an_ensemble(tmp_path):
    da = density_series()
    stack = tmp_path / "grids"
    write_stack(da, stack)
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "train",
            str(stack),
            "--model",
            "convgru",
            "--input-steps",
            "6",
            "--horizon",
            "3",
            "--hidden",
            "8",
            "--max-epochs",
            "1",
            "--members",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "ens"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "convgru-ensemble2" in res.output and "(2 members)" in res.output
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == [
        "ensemble.json",
        "member-0",
        "member-1",
    ]
    res = runner.invoke(main, ["info", str(tmp_path / "ens")])
    assert res.exit_code == 0, res.output
    assert "ensemble   2 members (member-0, member-1)" in res.output and "EPSG:32633" in res.output
    res = runner.invoke(
        main, ["forecast", str(tmp_path / "ens"), str(stack), "--out", str(tmp_path / "f.tif")]
    )
    assert res.exit_code == 0, res.output
    ens = ForecastEnsemble.load(tmp_path / "ens")
    expected = ens.predict(da.isel(time=slice(-ens.history_needed, None)))
    with rasterio.open(tmp_path / "f.tif") as src:
        np.testing.assert_allclose(
            src.read(), expected.values.reshape(-1, *GRID.shape), rtol=1e-5, atol=1e-5
        )
        assert src.transform == GRID.transform and src.crs == GRID.crs
    res = runner.invoke(main, ["evaluate", str(tmp_path / "ens"), str(stack), "--split", "all"])
    assert res.exit_code == 0, res.output
    assert "convgru-ensemble2" in res.output and "ridge" in res.output


def test_cli__members_out_of_range(tmp_path):
    res = CliRunner().invoke(
        main, ["train", str(tmp_path), "--members", "0", "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 2 and "--members" in res.output
