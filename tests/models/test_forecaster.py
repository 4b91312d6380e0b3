"""Tests of trafficrnn.models.forecaster and the model registry: one contract for every entry."""

from __future__ import annotations

import json

import pytest
import torch

from trafficrnn.errors import ConfigError, ModelMismatchError
from trafficrnn.models import EncoderForecaster, get_model, list_models

N, T_IN, HORIZON, HC, WC, TILE = 2, 3, 2, 3, 4, 4
ENCODER = {"tile_size": TILE, "width": 4, "depth": 0, "out_channels": 6}
VARIANTS = {
    "plain": {},
    "covariates_static": {"static_channels": 1, "past_covariate_channels": 2, "future_covariate_channels": 3},
    "residual": {"residual": True, "future_covariate_channels": 2},
    "no_feedback_no_inputs": {"feedback": False},
    "no_feedback_covariates": {"feedback": False, "future_covariate_channels": 2, "static_channels": 1},
    "peephole_relu": {"cell_kwargs": {"peephole": "channel"}, "output_activation": "relu"},
    "count_head_residual": {"count_head": True, "residual": True, "feedback": False},  # images only
}





def _inputs(model: EncoderForecaster, with_encoder: bool) -> tuple[torch.Tensor, dict]:
    cfg = model.config
    s = TILE if with_encoder else 1
    x = torch.rand(N, T_IN, cfg["in_channels"], HC * s, WC * s)
    x[0, 0, 0, 0, 0] = float("nan")
    x[1, -1, :, -1, -1] = float("nan")
    kw: dict = {}
    if cfg["static_channels"]:
        kw["static"] = torch.rand(N, cfg["static_channels"], HC, WC)
    if cfg["past_covariate_channels"]:
        kw["past_covariates"] = torch.rand(N, T_IN, cfg["past_covariate_channels"])
    if cfg["future_covariate_channels"]:
        kw["future_covariates"] = torch.rand(N, HORIZON, cfg["future_covariate_channels"], HC, WC)
    return x, kw


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("with_encoder", [False, True], ids=["grid", "images"])
@pytest.mark.parametrize("name", list_models())
def test_get_model__contract(name, with_encoder, variant):
    kwargs = dict(VARIANTS[variant])
    if variant == "peephole_relu" and name == "convgru":
        kwargs.pop("cell_kwargs")
    if not with_encoder:
        kwargs.pop("count_head", None)
    torch.manual_seed(0)
    model = get_model(
        name, in_channels=3, out_channels=2, hidden_channels=[4, 5],
        encoder=ENCODER if with_encoder else None, **kwargs,
    )
    x, kw = _inputs(model, with_encoder)
    out = model(x, horizon=HORIZON, return_nowcast=with_encoder, **kw)
    forecast, nowcast = out if with_encoder else (out, None)
    assert forecast.shape == (N, HORIZON, 2, HC, WC)
    assert torch.isfinite(forecast).all()
    if not model.residual:  # residual outputs are clamped at 0 in eval mode only (checked below)
        assert (forecast >= 0).all()
    if with_encoder:
        assert nowcast.shape == (N, T_IN, 2, HC, WC)
        assert torch.isfinite(nowcast).all() and (nowcast >= 0).all()
    # backward: finite gradients on every parameter
    loss = forecast.square().mean() + (nowcast.square().mean() if with_encoder else 0)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    # rebuild from the JSON config + state dict: identical outputs
    model.eval()
    clone = type(model)(**json.loads(json.dumps(model.config))).eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = model(x, horizon=HORIZON, **kw)
        b = clone(x, horizon=HORIZON, **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a >= 0).all()
    # bf16 autocast forward
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        c = model(x, horizon=HORIZON, **kw)
    assert c.shape == a.shape and torch.isfinite(c).all() and (c >= 0).all()


@pytest.mark.parametrize("name", ["convlstm", "convgru"])
def test_forward__overfits_tiny_batch(name):
    torch.manual_seed(0)
    model = get_model(name, in_channels=2, out_channels=2, hidden_channels=[16], future_covariate_channels=1)
    x = torch.rand(1, 3, 2, 3, 3)
    fut = torch.rand(1, 2, 1)
    y = torch.rand(1, 2, 2, 3, 3) * 3
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(200):
        opt.zero_grad()
        loss = (model(x, horizon=2, future_covariates=fut) - y).square().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * y.var().item()


def test_forward__residual_with_zero_head_repeats_last_target():
    torch.manual_seed(0)
    model = EncoderForecaster(in_channels=2, out_channels=1, hidden_channels=[4], residual=True)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x = torch.rand(1, 3, 2, 3, 3)
    out = model(x, horizon=3)
    torch.testing.assert_close(out, x[:, -1:, :1].expand(1, 3, 1, 3, 3))
    last = torch.full((1, 1, 3, 3), 2.0)
    torch.testing.assert_close(model(x, horizon=2, last_target=last), last[:, None].expand(1, 2, 1, 3, 3))


def test_forward__deterministic_under_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = get_model("convgru", in_channels=1, hidden_channels=[4])
        outs.append(model(torch.rand(1, 2, 1, 3, 3), horizon=2))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_nowcast__matches_forward_nowcast():
    torch.manual_seed(0)
    model = get_model("convlstm", in_channels=3, hidden_channels=[4], encoder=ENCODER).eval()
    x = torch.rand(1, 2, 3, 8, 8)
    _, now = model(x, horizon=1, return_nowcast=True)
    torch.testing.assert_close(model.nowcast(x), now)


def test_nowcast__count_head_sums_a_density_map_over_each_cell():
    torch.manual_seed(0)
    model = get_model("convgru", in_channels=3, hidden_channels=[4], encoder=ENCODER, count_head=True).eval()
    x = torch.rand(1, 2, 3, 8, 8)
    _, now = model(x, horizon=1, return_nowcast=True)
    torch.testing.assert_close(model.nowcast(x), now)
    # a constant image gives the same count in every cell: the density map is summed, not pooled into a feature
    flat = torch.full((1, 1, 3, 16, 16), 0.5)
    counts = model.nowcast(flat)[0, 0, 0]
    assert counts.shape == (4, 4)
    inner = counts[1:3, 1:3]  # cells whose density map sees no zero padding
    torch.testing.assert_close(inner, torch.full_like(inner, float(inner[0, 0])))


def test_encoder_forecaster__count_head_needs_an_encoder():
    with pytest.raises(ConfigError, match="count_head=True needs an image encoder"):
        get_model("convgru", in_channels=2, count_head=True)


def test_get_model__case_insensitive():
    assert get_model("ConvGRU", in_channels=1).config["cell"] == "gru"


def test_get_model__unknown_name():
    with pytest.raises(ValueError, match="unknown model 'unet'; valid names: convgru, convlstm"):
        get_model("unet", in_channels=1)


def test_get_model__cell_argument_refused():
    with pytest.raises(ConfigError, match="sets the cell itself, got cell='gru'"):
        get_model("convlstm", in_channels=1, cell="gru")


def test_encoder_forecaster__unknown_cell():
    with pytest.raises(ValueError, match="unknown cell 'rnn'; valid names: gru, lstm"):
        EncoderForecaster(in_channels=1, cell="rnn")


def test_encoder_forecaster__empty_hidden_channels():
    with pytest.raises(ConfigError, match=r"hidden_channels must be a non-empty list.*got \[\]"):
        EncoderForecaster(in_channels=1, hidden_channels=[])


def test_encoder_forecaster__bad_output_activation():
    with pytest.raises(ConfigError, match="output_activation must be one of.*got 'tanh'"):
        EncoderForecaster(in_channels=1, output_activation="tanh")


def test_encoder_forecaster__negative_static_channels():
    with pytest.raises(ConfigError, match="static_channels must be an int >= 0, got -1"):
        EncoderForecaster(in_channels=1, static_channels=-1)


def test_encoder_forecaster__too_few_input_channels_for_targets():
    with pytest.raises(ConfigError, match="first out_channels=2 channels of x are the target bands"):
        EncoderForecaster(in_channels=1, out_channels=2)


def test_encoder_forecaster__gru_peephole_refused():
    with pytest.raises(TypeError, match="peephole"):
        EncoderForecaster(in_channels=1, cell="gru", cell_kwargs={"peephole": "channel"})


def test_forward__bad_horizon():
    model = EncoderForecaster(in_channels=1, hidden_channels=[2])
    with pytest.raises(ConfigError, match="horizon must be an int >= 1, got 0"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=0)


def test_forward__missing_static():
    model = EncoderForecaster(in_channels=1, hidden_channels=[2], static_channels=1)
    with pytest.raises(ModelMismatchError, match="static is missing but the model was built with static_channels=1"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=1)


def test_forward__unexpected_future_covariates():
    model = EncoderForecaster(in_channels=1, hidden_channels=[2])
    with pytest.raises(ModelMismatchError, match="future_covariates is given but"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=1, future_covariates=torch.rand(1, 1, 2))


def test_forward__future_covariates_wrong_horizon():
    model = EncoderForecaster(in_channels=1, hidden_channels=[2], future_covariate_channels=2)
    with pytest.raises(ModelMismatchError, match=r"future_covariates must have shape \(1, 3, 2\)"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=3, future_covariates=torch.rand(1, 2, 2))


def test_forward__nowcast_without_encoder():
    model = EncoderForecaster(in_channels=1, hidden_channels=[2])
    with pytest.raises(ConfigError, match="return_nowcast=True needs an image encoder"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=1, return_nowcast=True)


def test_forward__wrong_channel_count():
    model = EncoderForecaster(in_channels=2, hidden_channels=[2])
    with pytest.raises(ModelMismatchError, match=r"x must have shape \(N, T_in, 2, H, W\)"):
        model(torch.rand(1, 2, 1, 3, 3), horizon=1)
