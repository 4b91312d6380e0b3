"""evaluate in one batched pass: the model's forecasts made chunk by chunk from only the frames each
chunk reads are those of one predict_many over every issue time; a progress bar (``progress=``, CLI
``--quiet``); no library warning leaks out of the Ridge baseline."""

import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.linalg import LinAlgWarning

from trafficrnn import TrafficForecaster
from trafficrnn.cli import main
from trafficrnn.datasets import nyc_bike
from trafficrnn.estimation import evaluation
from trafficrnn.estimation.evaluation import evaluate, evaluation_issues
from trafficrnn.io import write_stack
from trafficrnn.metrics import align_truth, per_lead
from trafficrnn.models.baselines import RidgeBaseline

from .test_estimator import density_series

TINY = dict(
    input_steps=4,
    horizon=3,
    progress=False,
    model_kwargs=dict(hidden=(8,)),
    trainer_kwargs=dict(max_epochs=1, batch_size=32),
)


@pytest.fixture(scope="module")
def fitted():
    """A model that reads a day back (context 1D: 96 frames before each issue time) on a stack with an
    hour of missing frames (NaN) in its test part."""
    da = density_series(periods=400)
    da[350:354] = np.nan
    est = TrafficForecaster("convgru", context=("ha", "1D"), **TINY).fit(da)
    return est, da


@pytest.mark.parametrize("split", ["test", None])
def test_evaluate__chunks_give_the_forecasts_of_one_predict_many(fitted, split, monkeypatch):
    est, da = fitted
    monkeypatch.setattr(
        evaluation, "CHUNK", 32
    )  # several chunks, some starting near the first frame
    table = evaluate(est, da, split=split, baselines=("persistence",), progress=False)
    issues = evaluation_issues(est, pd.DatetimeIndex(da.time.values), split).issues
    assert len(issues) > 32 and table.attrs["issues"] == len(issues)
    fc = est.predict_many(
        da, issues
    )  # what evaluate computed before: every issue time at once, on the whole stack
    expected = per_lead(fc, align_truth(fc, da))
    np.testing.assert_allclose(
        table.loc[est.model, list(expected.columns)].values, expected.values, rtol=1e-6, atol=0
    )
    chunked = evaluation._model_forecasts(
        est, da, None, issues, est.horizon, None, None, lambda n: None
    )
    np.testing.assert_allclose(chunked.values, fc.values, rtol=1e-6, atol=1e-7)
    assert chunked.indexes["issued"].equals(fc.indexes["issued"])
    np.testing.assert_array_equal(chunked["valid_time"].values, fc["valid_time"].values)
    assert chunked.rio.transform() == fc.rio.transform() and chunked.attrs == fc.attrs


def test_evaluate__chunk_size_does_not_change_the_table(fitted, monkeypatch):
    est, da = fitted
    whole = evaluate(est, da, split=None, progress=False)
    monkeypatch.setattr(evaluation, "CHUNK", 32)
    pd.testing.assert_frame_equal(evaluate(est, da, split=None, progress=False), whole, rtol=1e-6)


def test_evaluate__progress_bar(fitted, capsys):
    est, da = fitted
    evaluate(est, da, progress=True)
    err = capsys.readouterr().err
    assert "evaluate" in err and "forecast" in err
    issues = evaluation_issues(est, pd.DatetimeIndex(da.time.values), "test").issues
    assert f"{4 * len(issues)}/{4 * len(issues)}" in err  # the model and the three baselines


def test_evaluate__progress_follows_the_model_setting(fitted, capsys):
    est, da = fitted
    assert est.progress is False
    est.evaluate(da)
    assert capsys.readouterr().err == ""


def test_ridge__no_linalg_warning_leaks():
    # a month of NYC bike flows: the normal equations are ill-conditioned in float32
    history = nyc_bike(start="2016-08-01", end="2016-09-01")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = RidgeBaseline(horizon=6).fit(history)
        base.predict_many(history, [100, 200], 6)
    assert [w.category for w in caught if issubclass(w.category, LinAlgWarning)] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)  # the filter is restored after the fit
        with pytest.raises(LinAlgWarning):
            warnings.warn("still raised elsewhere", LinAlgWarning, stacklevel=1)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    est, da = fitted
    root = tmp_path_factory.mktemp("evaluate")
    est.save(root / "model")
    write_stack(da, root / "stack")
    return root


def test_cli_evaluate__progress_bar_unless_quiet(saved):
    shown = CliRunner().invoke(main, ["evaluate", str(saved / "model"), str(saved / "stack")])
    assert shown.exit_code == 0, shown.output
    assert "evaluate convgru" in shown.output and "forecast/s" in shown.output
    quiet = CliRunner().invoke(
        main, ["evaluate", str(saved / "model"), str(saved / "stack"), "--quiet"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert "forecast/s" not in quiet.output and "persistence" in quiet.output
