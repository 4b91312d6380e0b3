"""Tests of the Lightning set-up: masked loss, checkpoints and resume, precision choice."""

import pytest
import torch

from trafficrnn.estimator import TrafficForecaster
from trafficrnn.params import grouped
from trafficrnn.training import masked_mse, resolve_precision

from .test_estimator import FAST, density_series


def test_masked_mse__ignores_masked_entries():
    pred = torch.tensor([1.0, 2.0, 10.0])
    target = torch.tensor([0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4) / 2)


def test_masked_mse__nothing_valid_is_zero():
    assert masked_mse(torch.ones(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_masked_mse__every_lead_counts_the_same():
    pred = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]]).transpose(
        0, 1
    )  # (N=1, lead=2, 2): errors 1,3 | 2,0
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[True, True], [True, False]]])  # the second entry of lead 2 is masked
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 9 + 4) / 3)


def test_resolve_precision__cpu_auto_is_fp32():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_fit__checkpoints_and_resume(tmp_path):
    da = density_series(periods=100)
    params = grouped(FAST, {"max_epochs": 2})
    first = TrafficForecaster("convgru", **params).fit(da, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.ckpt").exists() and (tmp_path / "best.ckpt").exists()
    assert len(first.history_) == 2
    resumed = TrafficForecaster("convgru", **grouped(params, {"max_epochs": 3})).fit(
        da, checkpoint_dir=tmp_path, resume=True
    )
    assert [h["epoch"] for h in resumed.history_] == [2]  # only the third epoch ran


def test_fit__learning_rate_decays_over_the_epochs():
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **grouped(FAST, {"max_epochs": 3, "lr": 1e-2})).fit(da)
    lrs = [h["lr"] for h in est.history_]
    assert (
        lrs[0] > lrs[1] > lrs[2] == pytest.approx(1e-2 / 20)
    )  # cosine to lr / 20 at the last step


def test_fit__learning_rate_decays_over_max_time():
    # stopped by the clock long before max_epochs: the schedule follows the time spent, so the
    # run still ends near lr / 20 instead of at the start of a cosine over 10,000 epochs
    da = density_series(periods=100)
    est = TrafficForecaster(
        "convgru", **grouped(FAST, {"max_epochs": 10_000, "lr": 1e-2, "max_time": 0.05})
    ).fit(da)
    assert len(est.history_) < 10_000 and est.history_[-1]["lr"] < 0.3e-2


def test_fit__bf16_mixed_on_cpu():
    da = density_series(periods=80)
    est = TrafficForecaster("convlstm", **grouped(FAST, dict(precision="bf16-mixed"))).fit(da)
    assert torch.isfinite(torch.as_tensor(est.predict(da).values)).all()
