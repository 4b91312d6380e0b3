"""``max_time`` (CLI ``--max-minutes``) bounds all of ``fit``: the set-up, the counting stages, the
training and its last validation; a cut epoch is reported as a fraction (issue 22, item 3)."""

import re
import time

import pytest
from click.testing import CliRunner

# imported now: the first fit of a process pays seconds for importing Lightning, within its limit,
# which would leave the tiny limits here no batch
import trafficrnn.training  # noqa: F401
from trafficrnn.cli import main
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack
from trafficrnn.params import grouped
from trafficrnn.synth import simulate

from .test_estimator import density_series

TINY = dict(
    input_steps=4,
    horizon=2,
    progress=False,
    model_kwargs=dict(hidden=(8,)),
    trainer_kwargs=dict(max_epochs=10_000, patience=0),
)


def bound(minutes: float) -> float:
    """Seconds fit may take under ``max_time=minutes``: the limit plus max(10 %, 5 s) (the batch that
    reaches the limit and a loaded machine; an epoch that ignored the limit overruns by far more)."""
    return minutes * 60 + max(0.1 * minutes * 60, 5.0)


def timed_fit(est, *args, **kwargs) -> float:
    began = time.perf_counter()
    est.fit(*args, **kwargs)
    return time.perf_counter() - began


def check_epochs(summary: dict, history: list) -> None:
    """Whole epochs are an int; a cut one makes a fraction, the last of the epochs in the history."""
    epochs = summary["epochs"]
    if isinstance(epochs, int):
        assert epochs == len(history)
    else:
        assert isinstance(epochs, float) and not epochs.is_integer()
        assert len(history) - 1 < epochs < len(history)


@pytest.fixture(scope="module")
def city():
    return simulate(64, days=0.5, step="15min", tile_size=16)


def test_max_time__bounds_fit_of_a_density_stack():
    grids = simulate(64, days=1, step="15min", tile_size=16, render=False).density
    est = TrafficForecaster("convgru", max_time=0.1, **grouped(TINY, dict(batch_size=4)))
    wall = timed_fit(est, grids)
    summary = est.training_summary_
    assert wall <= bound(0.1), summary
    assert summary["wall_seconds"] <= wall and summary["train_seconds"] <= summary["wall_seconds"]
    assert summary["best_val_loss"] is not None  # the last (cut) epoch was validated
    check_epochs(summary, est.history_)


def test_max_time__a_cut_epoch_is_a_fraction():
    # an epoch of about 1,500 batches cannot end in 3 s: the clock cuts the first one (and a small
    # validation part keeps its validation short)
    est = TrafficForecaster(
        "convgru", max_time=0.05, val=0.01, test=0.01, **grouped(TINY, dict(batch_size=1))
    )
    wall = timed_fit(est, density_series(periods=1600))
    summary = est.training_summary_
    assert wall <= bound(0.05), summary
    assert isinstance(summary["epochs"], float) and 0 < summary["epochs"] < 1, summary
    assert len(est.history_) == 1 and summary["best_val_loss"] is not None
    check_epochs(summary, est.history_)


def test_max_time__bounds_fit_with_counting_stages(city):
    # images and vehicle points: counting stage A, the encoding of every frame and stage B share the limit
    est = TrafficForecaster(
        "convgru", tile_size=16, max_time=0.2, **grouped(TINY, dict(batch_size=8))
    )
    wall = timed_fit(est, city.images, vehicles=city.vehicles)
    summary = est.training_summary_
    assert wall <= bound(0.2), summary
    assert summary["wall_seconds"] <= wall
    stages = summary["counting"]
    assert summary["train_seconds"] == pytest.approx(
        stages["stage_a"]["seconds"] + stages["stage_b"]["seconds"], abs=0.02
    )
    assert stages["stage_b"]["epochs"] == summary["epochs"] > 0
    check_epochs(summary, est.history_)


def test_cli_train__max_minutes_bounds_the_run_and_prints_fractional_epochs(tmp_path):
    write_stack(density_series(periods=1000), tmp_path / "stack")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            str(tmp_path / "stack"),
            "--model",
            "convgru",
            "--input-steps",
            "4",
            "--horizon",
            "2",
            "--hidden",
            "8",
            "--batch-size",
            "1",
            "--max-epochs",
            "10000",
            "--val",
            "0.01",
            "--test",
            "0.01",
            "--max-minutes",
            "0.1",
            "--quiet",
            "--out",
            str(tmp_path / "model"),
        ],
    )
    assert result.exit_code == 0, result.output
    fit = re.search(
        r"^epochs     (\d+\.\d+)  \((\d+\.\d) s training, (\d+\.\d) s in all\)$",
        result.output,
        re.M,
    )
    assert fit, result.output  # about 980 batches an epoch: the clock cuts one
    epochs, training, in_all = (float(v) for v in fit.groups())
    assert not epochs.is_integer() and training <= in_all <= bound(0.1)
    est = TrafficForecaster.load(tmp_path / "model")
    assert est.training_summary_["epochs"] == epochs
    assert est.training_summary_["wall_seconds"] == pytest.approx(
        in_all, abs=0.051
    )  # printed to 0.1 s
