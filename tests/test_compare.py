"""Tests of compare(): both models and every baseline on one split, timings, the plot, refusals."""

import json

import numpy as np
import pandas as pd
import pytest

from trafficrnn.compare import (
    SUMMARY_COLUMNS,
    ComparisonResult,
    compare,
    comparison_table,
    plot_comparison,
)
from trafficrnn.errors import ConfigError
from trafficrnn.params import grouped

from .test_estimator import FAST, density_series

PARAMS = {
    **{k: v for k, v in FAST.items() if k != "progress"},
    "max_time": None,
}  # no "(at most ...)" lines
MODELS = ["convlstm", "convgru"]
BASELINES = ["persistence", "historical_average", "ridge"]


@pytest.fixture(scope="module")
def result():
    lines = []
    res = compare(density_series(periods=120), progress=False, echo=lines.append, **PARAMS)
    return res, lines


def test_compare__table_rows_per_model_and_lead(result):
    res, _ = result
    assert isinstance(res, ComparisonResult)
    assert list(res.table.index.get_level_values("model").unique()) == MODELS + BASELINES
    assert list(res.table.loc["convgru"].index) == [1, 2, 3]
    assert list(res.table.columns) == ["mae", "rmse", "mape", "skill_rmse"]
    assert res.table.attrs["split"] == "test" and res.table.attrs["issues"] > 0
    assert np.isfinite(res.table["rmse"]).all()


def test_compare__every_model_has_its_skill_against_persistence(result):
    res, _ = result
    table = res.table
    for model in MODELS + BASELINES:
        expected = 1 - table.loc[model, "rmse"] / table.loc["persistence", "rmse"]
        np.testing.assert_allclose(table.loc[model, "skill_rmse"], expected, rtol=1e-12)
    assert (table.loc["persistence", "skill_rmse"] == 0).all()


def test_compare__summary_per_model(result):
    res, _ = result
    summary = res.summary
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert list(summary.index) == MODELS + BASELINES
    assert list(summary["kind"]) == ["model"] * 2 + ["baseline"] * 3
    for name in MODELS:
        est = res.models[name]
        assert summary.loc[name, "parameters"] == est.training_summary_["parameters"]
        assert summary.loc[name, "epochs"] == len(est.history_) == 2
        assert (
            summary.loc[name, "train_seconds"] > 0
            and 0 < summary.loc[name, "inference_seconds"] < 5
        )
    assert pd.isna(summary.loc["ridge", "parameters"])
    assert summary.loc["ridge", "train_seconds"] > 0
    assert summary.loc["convgru", "mean_rmse"] == pytest.approx(
        res.table.loc["convgru", "rmse"].mean()
    )


def test_compare__models_share_the_split(result):
    res, _ = result
    assert res.models["convlstm"].split_ == res.models["convgru"].split_
    assert res.models["convgru"].model == "convgru"


def test_compare__echo_lines(result):
    _, lines = result
    assert lines[0] == "training   convlstm ..." and lines[2] == "training   convgru ..."
    assert "2 epochs in" in lines[1] and "parameters" in lines[1]


def test_compare__to_records_is_json(result):
    res, _ = result
    records = json.loads(json.dumps(res.to_records()))
    assert records["split"] == "test"
    assert [r["model"] for r in records["summary"]] == MODELS + BASELINES
    assert records["summary"][2]["parameters"] is None
    assert len(records["per_lead"]) == 5 * 3


def test_comparison_table__leads_by_models(result):
    res, _ = result
    wide = comparison_table(res.table, "mae")
    assert list(wide.columns) == MODELS + BASELINES and list(wide.index) == [1, 2, 3, "mean"]


def test_comparison_table__unknown_metric(result):
    res, _ = result
    with pytest.raises(ConfigError, match="metric 'bias' is not in the table"):
        comparison_table(res.table, "bias")


def test_plot_comparison__lines_and_bars(result):
    import matplotlib.pyplot as plt

    res, _ = result
    fig = plot_comparison(res)
    lines_ax, bar_ax = fig.axes
    assert [line.get_label() for line in lines_ax.get_lines()] == MODELS + BASELINES
    assert len(bar_ax.patches) == 5
    plt.close(fig)


def test_compare__unknown_model():
    with pytest.raises(
        ConfigError, match=r"models=\['convlstm', 'lstm3d'\] is invalid: expected one or more of"
    ):
        compare(density_series(periods=40), models=["convlstm", "lstm3d"], **PARAMS)


def test_compare__model_twice():
    with pytest.raises(ConfigError, match="lists a model twice"):
        compare(density_series(periods=40), models=["convgru", "ConvGRU"], **PARAMS)


def test_compare__unknown_parameter():
    with pytest.raises(ConfigError, match="unknown training parameter.s. hiden"):
        compare(density_series(periods=40), hiden=(8,))


def test_compare__model_given_as_parameter():
    with pytest.raises(ConfigError, match="unknown training parameter.s. model"):
        compare(density_series(periods=40), model="convgru")


def test_compare__covariates_go_to_every_model():
    from .test_covariates import daily

    table = daily(days=4)
    res = compare(
        density_series(periods=120),
        progress=False,
        covariates=table,
        **grouped(PARAMS, {"max_epochs": 1, "hidden": (4,)}),
    )
    for name in MODELS:
        assert res.models[name].covariates_.columns == ["temp", "rain"]
        assert res.models[name].model_.config["future_covariate_channels"] == 4 + 2
    assert (
        np.isfinite(res.table["rmse"]).all() and res.summary.loc["convgru", "inference_seconds"] > 0
    )


def test_compare__members_train_ensembles_scored_as_their_mean():
    from trafficrnn.ensemble import ForecastEnsemble
    from trafficrnn.metrics import align_truth, per_lead

    grids = density_series(periods=120)
    lines = []
    res = compare(
        grids,
        models=["convgru"],
        progress=False,
        echo=lines.append,
        members=2,
        **grouped(PARAMS, {"max_epochs": 1, "hidden": (4,), "seed": 5}),
    )
    label = "convgru-ensemble2"
    assert list(res.table.index.get_level_values("model").unique()) == [label, *BASELINES]
    ens = res.models[label]
    assert isinstance(ens, ForecastEnsemble) and [e.seed for e in ens.estimators_] == [5, 6]
    row = res.summary.loc[label]
    assert row["kind"] == "model" and row["members"] == 2 and row["epochs"] == 1
    assert row["parameters"] == 2 * ens.estimators_[0].training_summary_["parameters"]
    assert pd.isna(row["best_val_loss"]) and pd.isna(res.summary.loc["ridge", "members"])
    assert lines[0] == f"training   {label} ..." and "1 epochs per member in" in lines[1]
    # the table's RMSE is the member mean's, computed here by hand on the same issue times
    from trafficrnn.estimation.evaluation import evaluation_issues

    issues = evaluation_issues(ens, pd.DatetimeIndex(grids.time.values), "test").issues
    first, second = (e.predict_many(grids, issues) for e in ens.estimators_)
    mean = (first + second) / 2
    expected = per_lead(mean, align_truth(mean, grids), metrics=("rmse",))["rmse"]
    np.testing.assert_allclose(
        res.table.loc[label, "rmse"].to_numpy(), np.asarray(expected), rtol=1e-5
    )
    assert not np.allclose(first.values, second.values)  # two seeds, two different networks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"members": 0}, "members=0 is invalid"),
        ({"n_jobs": 0}, "n_jobs=0 is invalid"),
        ({"members": True}, "members=True is invalid"),
    ],
)
def test_compare__bad_member_counts_refused_before_training(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        compare(density_series(periods=40), **kwargs, **PARAMS)
