"""Tests of the Lightning set-up: masked loss, checkpoints and resume, precision choice."""

import pytest
import torch

from trafficrnn.errors import ConfigError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.training import masked_mse, resolve_precision

from .test_estimator import FAST, density_series


def test_masked_mse__ignores_masked_entries():
    pred = torch.tensor([1.0, 2.0, 10.0])
    target = torch.tensor([0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4) / 2)


def test_masked_mse__nothing_valid_is_zero():
    assert masked_mse(torch.ones(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_masked_mse__lead_weights_weight_each_lead():
    pred = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]]).transpose(0, 1)  # (N=1, lead=2, 2): errors 1,3 | 2,0
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[True, True], [True, False]]])  # the second entry of lead 2 is masked
    weights = torch.tensor([3.0, 1.0])
    expected = (3 * (1 + 9) + 1 * 4) / (3 * 2 + 1 * 1)
    assert masked_mse(pred, target, mask, weights).item() == pytest.approx(expected)
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 9 + 4) / 3)


def test_forecast_module__lead_weights_rescaled_and_zero_weight_leads_get_no_gradient():
    from trafficrnn.models import get_model
    from trafficrnn.training import ForecastModule

    net = get_model("convgru", in_channels=1, out_channels=1, hidden_channels=[4])
    module = ForecastModule(net, horizon=3, lead_weights=(2, 0, 0))
    assert module.lead_weights.tolist() == pytest.approx([3.0, 0.0, 0.0])  # mean 1
    torch.manual_seed(0)
    batch = {"x": torch.randn(2, 4, 1, 5, 5), "y": torch.randn(2, 3, 1, 5, 5),
             "mask": torch.ones(2, 3, 1, 5, 5, dtype=torch.bool)}
    y = batch["y"].clone().requires_grad_()
    loss, _ = module._loss({**batch, "y": y})
    loss.backward()  # the gradient w.r.t. a lead's target is zero unless the lead is weighted
    per_lead = y.grad.abs().sum(dim=(0, 2, 3, 4))
    assert per_lead[0] > 0 and per_lead[1] == 0 and per_lead[2] == 0


def test_fit__lead_weights_saved_and_loaded(tmp_path):
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **{**FAST, "lead_weights": (2, 1, 1)}).fit(da)
    est.save(tmp_path / "m")
    loaded = TrafficForecaster.load(tmp_path / "m")
    assert loaded.lead_weights == (2, 1, 1)
    assert TrafficForecaster("convgru").lead_weights is None


@pytest.mark.parametrize("value", [(1.0, 1.0), (1, 1, 1, 1), (1, -1, 1), (0, 0, 0), (1, float("nan"), 1),
                                   (True, 1, 1), "2,1,1", (1, "1", 1)])
def test_fit__lead_weights_refused(value):
    with pytest.raises(ConfigError, match=r"lead_weights=.* is invalid: expected 3 finite weights >= 0"):
        TrafficForecaster("convgru", **{**FAST, "lead_weights": value}).fit(density_series(periods=60))


def test_resolve_precision__cpu_auto_is_fp32():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_fit__checkpoints_and_resume(tmp_path):
    da = density_series(periods=100)
    params = {**FAST, "max_epochs": 2}
    first = TrafficForecaster("convgru", **params).fit(da, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.ckpt").exists() and (tmp_path / "best.ckpt").exists()
    assert len(first.history_) == 2
    resumed = TrafficForecaster("convgru", **{**params, "max_epochs": 3}).fit(da, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in resumed.history_] == [2]  # only the third epoch ran


def test_fit__learning_rate_decays_over_the_epochs():
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **{**FAST, "max_epochs": 3, "lr": 1e-2}).fit(da)
    lrs = [h["lr"] for h in est.history_]
    assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(1e-2 / 20)  # cosine to lr / 20 at the last step


def test_fit__learning_rate_decays_over_max_time():
    # stopped by the clock long before max_epochs: the schedule follows the time spent, so the
    # run still ends near lr / 20 instead of at the start of a cosine over 10,000 epochs
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **{**FAST, "max_epochs": 10_000, "lr": 1e-2, "max_time": 0.05}).fit(da)
    assert len(est.history_) < 10_000 and est.history_[-1]["lr"] < 0.3e-2


def test_fit__ema_weights_are_the_fitted_model(tmp_path):
    da = density_series(periods=100)
    est = TrafficForecaster("convgru", **{**FAST, "ema": 0.9}).fit(da, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    averaged = {k[len("ema_model.module."):]: v for k, v in state.items() if k.startswith("ema_model.module.")}
    trained = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    fitted = est.model_.state_dict()
    assert averaged.keys() == trained.keys() == fitted.keys()
    assert all(torch.equal(fitted[k], averaged[k]) for k in fitted)
    assert not all(torch.equal(fitted[k], trained[k]) for k in fitted)


@pytest.mark.parametrize("value", [1.0, 0.0, True, "0.9"])
def test_fit__ema_out_of_range(value):
    with pytest.raises(ConfigError, match=r"ema=.* is invalid: expected a decay in \(0, 1\)"):
        TrafficForecaster("convgru", **{**FAST, "ema": value}).fit(density_series(periods=60))


def test_fit__bf16_mixed_on_cpu():
    da = density_series(periods=80)
    est = TrafficForecaster("convlstm", precision="bf16-mixed", **FAST).fit(da)
    assert torch.isfinite(torch.as_tensor(est.predict(da).values)).all()
