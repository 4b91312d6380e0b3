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
    "covariates_static": {
        "static_channels": 1,
        "past_covariate_channels": 2,
        "future_covariate_channels": 3,
    },
    "residual": {"residual": True, "future_covariate_channels": 2},
    "no_feedback_no_inputs": {"feedback": False},
    "no_feedback_covariates": {
        "feedback": False,
        "future_covariate_channels": 2,
        "static_channels": 1,
    },
    "relu": {"output_activation": "relu"},
    "count_head_residual": {"count_head": True, "residual": True, "feedback": False},  # images only
    "linear_term": {
        "linear_leads": HORIZON + 1,
        "future_covariate_channels": 2,
        "static_channels": 1,
    },
    "linear_term_no_feedback": {
        "linear_leads": HORIZON,
        "feedback": False,
        "residual": True,
        "future_covariate_channels": 2,
    },
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
    if not with_encoder:
        kwargs.pop("count_head", None)
    torch.manual_seed(0)
    model = get_model(
        name,
        in_channels=3,
        out_channels=2,
        hidden_channels=[4, 5],
        encoder=ENCODER if with_encoder else None,
        **kwargs,
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
    model = get_model(
        name, in_channels=2, out_channels=2, hidden_channels=[16], future_covariate_channels=1
    )
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
    torch.testing.assert_close(
        model(x, horizon=2, last_target=last), last[:, None].expand(1, 2, 1, 3, 3)
    )


def _linear_model(feedback: bool, **kwargs) -> EncoderForecaster:
    return get_model(
        "convlstm",
        in_channels=2,
        out_channels=2,
        hidden_channels=[4],
        future_covariate_channels=3,
        static_channels=1,
        residual=True,
        feedback=feedback,
        **kwargs,
    )


@pytest.mark.parametrize("feedback", [False, True], ids=["direct", "feedback"])
def test_forward__linear_term_starts_at_zero_and_learns(feedback):
    torch.manual_seed(0)
    model = _linear_model(feedback, linear_leads=4, linear_lags=2)
    plain = _linear_model(feedback)
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("linear.")}
    )
    x, fut, static = torch.rand(2, 5, 2, 3, 4), torch.rand(2, 3, 3, 3, 4), torch.rand(2, 1, 3, 4)
    out = model(x, horizon=3, future_covariates=fut, static=static)
    torch.testing.assert_close(
        out, plain(x, horizon=3, future_covariates=fut, static=static), rtol=0, atol=0
    )
    out.square().mean().backward()
    assert model.linear.weight.grad.abs().sum() > 0 and model.linear.bias.grad.abs().sum() > 0


def test_forward__linear_term_has_its_own_weights_per_lead():
    """With a silent network (zero head), lead h is last + its own linear map: lead 1 learns the frame before
    the last (a lag), lead 2 the second covariate of its own time, lead 3 twice the static layer."""
    torch.manual_seed(0)
    model = _linear_model(False, linear_leads=3, linear_lags=2)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x, fut, static = torch.rand(8, 4, 2, 3, 4), torch.rand(8, 3, 3, 3, 4), torch.rand(8, 1, 3, 4)
    last = x[:, -1, :2]
    y = torch.stack(
        [
            last + x[:, -2, :2],
            last + fut[:, 1, 1:2].expand_as(last),
            last + 2 * static.expand_as(last),
        ],
        1,
    )
    opt = torch.optim.Adam(model.linear.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = (model(x, horizon=3, future_covariates=fut, static=static) - y).square().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4
    # the per-lead groups read [covariates of the lead (3), lag before last (2), last (2), static (1)]
    w = model.linear.weight.detach()[:, :, 0, 0].view(3, 2, 8)
    torch.testing.assert_close(w[0, :, 3:5], torch.eye(2), atol=0.02, rtol=0)
    torch.testing.assert_close(w[1, :, 1], torch.ones(2), atol=0.02, rtol=0)
    torch.testing.assert_close(w[2, :, 7], torch.full((2,), 2.0), atol=0.02, rtol=0)
    # a shorter horizon uses the first leads' weights
    with torch.no_grad():
        short = model(x, horizon=2, future_covariates=fut[:, :2], static=static)
        full = model(x, horizon=3, future_covariates=fut, static=static)
    torch.testing.assert_close(short, full[:, :2])


def test_forward__linear_term_refuses_a_longer_horizon_and_too_few_frames():
    model = _linear_model(False, linear_leads=2, linear_lags=3)
    x, static = torch.rand(1, 4, 2, 3, 4), torch.rand(1, 1, 3, 4)
    with pytest.raises(ModelMismatchError, match="horizon=3 is longer than the 2 lead steps"):
        model(x, horizon=3, future_covariates=torch.rand(1, 3, 3), static=static)
    with pytest.raises(ModelMismatchError, match="reads the last 3 frames but x has 2"):
        model(x[:, :2], horizon=2, future_covariates=torch.rand(1, 2, 3), static=static)


@pytest.mark.parametrize("count_head", [False, True], ids=["features", "count_head"])
def test_forward__linear_term_on_images_reads_the_nowcasts_of_earlier_frames(count_head):
    """Image path: the lags before the last are the nowcasts of those input frames (no observed
    targets there); with a silent network and the lag weight at 1, lead 1 is last + nowcast[-2]."""
    torch.manual_seed(0)
    model = EncoderForecaster(
        in_channels=3,
        encoder=ENCODER,
        hidden_channels=[4],
        residual=True,
        count_head=count_head,
        linear_leads=2,
        linear_lags=2,
    ).eval()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    with torch.no_grad():
        model.linear.weight[0, 0, 0, 0] = 1.0  # lead 1 reads the lag before the last
    x = torch.rand(2, 4, 3, 2 * TILE, 3 * TILE)
    with torch.no_grad():
        out, nowcast = model(x, horizon=2, return_nowcast=True)
        plain = model(x, horizon=2)
    torch.testing.assert_close(plain, out)
    torch.testing.assert_close(out[:, 0], (nowcast[:, -1] + nowcast[:, -2]).clamp(min=0))
    torch.testing.assert_close(out[:, 1], nowcast[:, -1])
    # an observed last target keeps the earlier lags on the nowcasts
    last = torch.full_like(nowcast[:, -1], 3.0)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, horizon=1, last_target=last)[:, 0], last + nowcast[:, -2]
        )


def _validity_model(**kw) -> EncoderForecaster:
    return EncoderForecaster(
        in_channels=3,
        encoder=ENCODER,
        hidden_channels=[4],
        residual=True,
        feedback=False,
        count_head=True,
        count_validity=True,
        **kw,
    ).eval()


def test_encode__count_validity_puts_each_cell_s_valid_share_before_the_counts():
    torch.manual_seed(0)
    model = _validity_model()
    plain = EncoderForecaster(
        in_channels=3, encoder=ENCODER, hidden_channels=[4], count_head=True
    ).eval()
    assert model.feature_channels == plain.feature_channels + 1 == ENCODER["out_channels"] + 2
    x = torch.rand(1, 2, 3, 2 * TILE, 3 * TILE)
    x[0, 0, :, :TILE, :2] = float("nan")  # half of cell (0, 0) under a cloud in frame 0
    x[0, 1, 1, TILE:, TILE:] = float("nan")  # cells (1, 1), (1, 2) missing in one band of frame 1
    with torch.no_grad():
        feats = model.encode(x)
    share = torch.ones(2, 2, 3)
    share[0, 0, 0] = 0.5
    share[1, 1, 1:] = 0.0
    torch.testing.assert_close(feats[0, :, -2], share)
    torch.testing.assert_close(feats[0, :, -1:], model.nowcast(x)[0])
    assert model.config["count_validity"] is True
    assert "count_validity" not in plain.config  # older configs rebuild the layout without it


def test_forward__count_validity_lets_the_linear_term_drop_a_count_under_a_cloud():
    """With a silent network, residual on the last count and the weight of (count x missing share)
    at -1, a clear cell is forecast at its count and a clouded one at 0; the per-lead groups read
    [the lags' counts (2), the same times their missing share (2)]."""
    torch.manual_seed(0)
    model = _validity_model(linear_leads=1, linear_lags=2)
    assert model.linear.weight.shape == (1, 4, 1, 1)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    with torch.no_grad():
        model.linear.weight[0, 3, 0, 0] = -1.0
    x = torch.rand(2, 3, 3, 2 * TILE, 3 * TILE)
    x[:, -1, :, :TILE, :TILE] = float("nan")  # cell (0, 0) clouded in the last frame
    x[:, -2, :, TILE:, :TILE] = float("nan")  # cell (1, 0) in the frame before: not read here
    with torch.no_grad():
        out, nowcast = model(x, horizon=1, return_nowcast=True)
    want = nowcast[:, -1].clone()
    want[:, :, 0, 0] = 0.0
    torch.testing.assert_close(out[:, 0], want)
    # a partly clouded cell loses that share of its count
    x[:, -1, :, :TILE, :TILE] = torch.rand(2, 3, TILE, TILE)
    x[:, -1, :, : TILE // 2, :TILE] = float("nan")
    with torch.no_grad():
        out, nowcast = model(x, horizon=1, return_nowcast=True)
    torch.testing.assert_close(out[:, 0, :, 0, 0], 0.5 * nowcast[:, -1, :, 0, 0])


def test_encoder_forecaster__count_validity_needs_a_count_head():
    for kw in (
        {},
        {"encoder": ENCODER},
        {"encoder": ENCODER, "count_head": True, "count_validity": 1},
    ):
        with pytest.raises(ConfigError, match="count_validity=.* is invalid"):
            EncoderForecaster(in_channels=3, **{"count_validity": True, **kw})


def test_encoder_forecaster__linear_leads_out_of_range():
    with pytest.raises(ConfigError, match="linear_leads must be an int >= 0"):
        EncoderForecaster(in_channels=3, linear_leads=-1)


@pytest.mark.parametrize("name", ["convlstm", "convgru"])
def test_forward__grad_steps_truncates_the_gradient_not_the_forecast(name):
    torch.manual_seed(0)
    model = get_model(
        name,
        in_channels=2,
        out_channels=2,
        hidden_channels=[4, 3],
        future_covariate_channels=1,
        residual=True,
        feedback=False,
    )
    x = torch.rand(2, 5, 2, 3, 4, requires_grad=True)
    fut = torch.rand(2, 2, 1)
    full = model(x, horizon=2, future_covariates=fut)
    (gx_full,) = torch.autograd.grad(full.square().sum(), x)
    cut = model(x, horizon=2, future_covariates=fut, grad_steps=2)
    torch.testing.assert_close(cut, full, rtol=1e-6, atol=1e-6)
    (gx_cut,) = torch.autograd.grad(cut.square().sum(), x)
    assert (gx_cut[:, :3] == 0).all() and (gx_cut[:, 3:].abs().sum((0, 2, 3, 4)) > 0).all()
    assert (
        gx_full[:, :3].abs().sum((0, 2, 3, 4)) > 0
    ).all()  # without truncation the early frames get gradient
    # through every frame: the same gradient as without grad_steps
    (gx_all,) = torch.autograd.grad(
        model(x, horizon=2, future_covariates=fut, grad_steps=5).square().sum(), x
    )
    torch.testing.assert_close(gx_all, gx_full)
    with pytest.raises(ConfigError, match="grad_steps must be an int >= 1"):
        model(x, horizon=2, future_covariates=fut, grad_steps=0)


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
    model = get_model(
        "convgru", in_channels=3, hidden_channels=[4], encoder=ENCODER, count_head=True
    ).eval()
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
    with pytest.raises(
        ValueError, match=r"unknown model 'unet': expected one of \['convgru', 'convlstm'\]"
    ):
        get_model("unet", in_channels=1)


def test_get_model__cell_argument_refused():
    with pytest.raises(ConfigError, match="sets the cell itself, got cell='gru'"):
        get_model("convlstm", in_channels=1, cell="gru")


def test_encoder_forecaster__unknown_cell():
    with pytest.raises(ValueError, match=r"unknown cell 'rnn': expected one of \['gru', 'lstm'\]"):
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
    with pytest.raises(
        ConfigError, match="first out_channels=2 channels of x are the target bands"
    ):
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
    with pytest.raises(
        ModelMismatchError, match="static is missing but the model was built with static_channels=1"
    ):
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


def test_count_stage_for__stride_of_about_8_px():
    from trafficrnn.models.forecaster import count_stage_for

    assert count_stage_for([4, 2, 2, 2]) == 1  # 4, 8, 16, 32 px
    assert count_stage_for([4, 2, 2]) == 1
    assert count_stage_for([2, 2, 2, 2, 2]) == 2
    assert count_stage_for([4, 2]) == 0  # the last stage is the cell itself


def test_encoder_forecaster__config_without_count_stage_keeps_the_old_rule():
    enc = {"tile_size": 16, "width": 4, "depth": 0, "strides": [2, 2, 2, 2]}
    old = EncoderForecaster(3, 1, "gru", [4], encoder=enc, count_head=True)
    assert old.count_stage == 2 and "count_stage" not in old.config  # second-last stage
    new = EncoderForecaster(3, 1, "gru", [4], encoder=enc, count_head=True, count_stage=1)
    assert new.count_stage == 1 and new.count_factor == 4
    assert EncoderForecaster(**new.config).count_stage == 1


def test_encoder_forecaster__bad_count_stage():
    enc = {"tile_size": 16, "width": 4, "depth": 0}
    with pytest.raises(ConfigError, match="count_stage=9 is invalid"):
        EncoderForecaster(3, 1, "gru", [4], encoder=enc, count_head=True, count_stage=9)


@pytest.mark.parametrize("count_head", [True, False])
def test_forward__encoded_features_equal_images(count_head):
    torch.manual_seed(0)
    net = EncoderForecaster(
        3, 1, "gru", [4], encoder=dict(ENCODER), count_head=count_head, residual=True
    ).eval()
    x = torch.rand(N, T_IN, 3, HC * TILE, WC * TILE)
    with torch.no_grad():
        feats = net.encode(x)
        assert feats.shape == (N, T_IN, net.feature_channels, HC, WC)
        torch.testing.assert_close(
            net(feats, horizon=HORIZON, encoded=True), net(x, horizon=HORIZON)
        )


def test_density__sums_to_the_counts():
    net = EncoderForecaster(
        3,
        1,
        "gru",
        [4],
        encoder={"tile_size": 8, "width": 4, "depth": 0},
        count_head=True,
        count_stage=1,
    )
    x = torch.rand(1, 2, 3, 16, 24)
    dens, feats = net.density(x)
    assert dens.shape == (1, 2, 1, 4, 6)
    torch.testing.assert_close(dens.reshape(1, 2, 1, 2, 2, 3, 2).sum((4, 6)), feats[:, :, -1:])


def test_forward__encoded_without_encoder():
    net = EncoderForecaster(2, 1, "gru", [4])
    with pytest.raises(ConfigError, match="encoded=True needs an image encoder"):
        net(torch.rand(1, 2, 2, 3, 3), horizon=1, encoded=True)
