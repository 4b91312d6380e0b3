"""Tests of trafficrnn.models.encoder: TileEncoder and the per-cell validity fraction."""

from __future__ import annotations

import pytest
import torch

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError
from trafficrnn.models import TileEncoder, valid_fraction


@pytest.mark.parametrize(
    ("kwargs", "pixels"),
    [
        ({"tile_size": 8, "width": 4}, 8),
        ({"tile_size": 4, "width": 4, "depth": 0, "out_channels": 5}, 4),
        ({"tile_size": 12, "width": 4, "strides": [3, 4]}, 12),
    ],
)
def test_forward__shape_and_out_channels(kwargs, pixels):
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=3, **kwargs)
    y = enc(torch.rand(2, 3, 3, 2 * pixels, 3 * pixels))
    assert y.shape == (2, 3, enc.out_channels, 2, 3)
    if "out_channels" in kwargs:
        assert enc.out_channels == kwargs["out_channels"]


def test_forward__nan_pixels_give_finite_features_and_grads():
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=2, tile_size=4, width=4)
    x = torch.rand(1, 2, 2, 8, 8)
    x[0, 0, 0, :4, :4] = float("nan")
    x[0, 1, :, 2, 3] = float("inf")
    x[0, 1, 1, 7, 7] = float("nan")
    y = enc(x)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())


def test_forward__invalid_pixels_are_flagged_not_just_zeroed():
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=1, tile_size=4, width=4).eval()
    zero = torch.zeros(1, 1, 1, 4, 4)
    nan = torch.full((1, 1, 1, 4, 4), float("nan"))
    assert not torch.allclose(enc(zero), enc(nan))


def test_valid_fraction__counts_valid_pixels_per_cell():
    x = torch.ones(1, 2, 2, 4, 8)
    x[0, 0, 0, 0, 0] = float("nan")  # 1 of 16 pixels of cell (0, 0), frame 0
    x[0, 1, 1, :, 4:] = float("nan")  # all of cell (0, 1), frame 1, one band only
    frac = valid_fraction(x, 4)
    assert frac.shape == (1, 2, 1, 1, 2)
    expected = torch.tensor([[[[[15 / 16, 1.0]]], [[[1.0, 0.0]]]]])
    torch.testing.assert_close(frac, expected)
    torch.testing.assert_close(TileEncoder(2, tile_size=4).valid_fraction(x), expected)


def test_forward_with_stage__gives_forward_and_the_valid_share_of_its_own_mask():
    torch.manual_seed(0)
    enc = TileEncoder(2, tile_size=4, width=4).eval()
    x = torch.rand(1, 2, 2, 4, 8)
    x[0, 0, 0, 0, 0] = float("nan")  # 1 of 16 pixels of cell (0, 0), frame 0
    x[0, 1, 1, :, 4:] = float("inf")  # all of cell (0, 1), frame 1, one band only
    feats, early, share = enc.forward_with_stage(x, 0)
    torch.testing.assert_close(feats, enc(x))
    assert early.shape == (2, enc.stage_channels(0), 2, 4)  # stage 0: 2 px per cell side
    expected = torch.tensor([[[[[15 / 16, 1.0]]], [[[1.0, 0.0]]]]])
    torch.testing.assert_close(share, expected)


@pytest.mark.parametrize("norm", ["batch", "channel"])
def test_norm__inference_is_local_to_each_pixel(norm):
    # at inference both norms act per pixel: a crop of whole cells encodes exactly as inside the frame
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=3, tile_size=4, width=4, norm=norm)
    enc.train()
    enc(torch.rand(2, 2, 3, 16, 16) * 3 + 1)  # BatchNorm: running statistics away from the init
    enc.eval()
    x = torch.rand(1, 1, 3, 48, 48)
    whole = enc(x)
    assert isinstance(enc.body[1], torch.nn.BatchNorm2d if norm == "batch" else type(enc.body[1]))
    assert enc.config["norm"] == norm and TileEncoder(**enc.config).config == enc.config
    # a cell sees 21 px (stem, two stages of two 3x3 convolutions): compare cells 12 px inside the crop
    crop = enc(x[..., 8:40, 8:40])
    torch.testing.assert_close(crop[..., 3:5, 3:5], whole[..., 5:7, 5:7])


def test_tile_encoder__bad_norm():
    with pytest.raises(
        ConfigError, match="norm='group' is invalid: expected one of batch, channel"
    ):
        TileEncoder(in_channels=3, tile_size=4, norm="group")


def test_config__rebuilds_identical_module():
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=2, tile_size=8, width=4, strides=[4, 2], out_channels=3).eval()
    clone = TileEncoder(**enc.config).eval()
    clone.load_state_dict(enc.state_dict())
    x = torch.rand(1, 2, 2, 8, 16)
    torch.testing.assert_close(clone(x), enc(x))


def test_forward__channels_last_and_bf16():
    torch.manual_seed(0)
    enc = TileEncoder(in_channels=2, tile_size=4, width=4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = enc(torch.rand(1, 2, 2, 8, 8))
    assert y.shape == (1, 2, enc.out_channels, 2, 2) and torch.isfinite(y).all()


def test_tile_encoder__tile_size_not_power_of_two():
    with pytest.raises(ConfigError, match="tile_size must be a power of two >= 2.*got 12"):
        TileEncoder(3, tile_size=12)


def test_tile_encoder__strides_do_not_multiply_to_tile_size():
    with pytest.raises(ConfigError, match=r"strides \[2, 2\] multiply to 4, not tile_size=8"):
        TileEncoder(3, tile_size=8, strides=[2, 2])


def test_tile_encoder__stride_below_two():
    with pytest.raises(ConfigError, match="strides must be a non-empty list of ints >= 2"):
        TileEncoder(3, tile_size=8, strides=[8, 1])


def test_tile_encoder__bad_width():
    with pytest.raises(ConfigError, match="width must be an int >= 1, got 0"):
        TileEncoder(3, width=0)


def test_forward__image_not_multiple_of_tile_size():
    with pytest.raises(GridError, match="image size 8x10 is not a multiple of tile_size=4"):
        TileEncoder(1, tile_size=4)(torch.zeros(1, 1, 1, 8, 10))


def test_forward__wrong_band_count():
    with pytest.raises(ModelMismatchError, match=r"images must have shape \(N, T, 3, H\*s, W\*s\)"):
        TileEncoder(3, tile_size=4)(torch.zeros(1, 1, 2, 8, 8))


def test_tile_encoder__without_stem_reads_pixels_directly():
    enc = TileEncoder(3, tile_size=16, width=8, stem=False, strides=[4, 2, 2])
    out = enc(torch.rand(2, 3, 3, 32, 48))
    assert out.shape == (2, 3, enc.out_channels, 2, 3)
    first = enc.body[0]
    assert first.in_channels == 4 and first.stride == (4, 4)  # 3 bands + validity, no stem
    assert TileEncoder(**enc.config).config == enc.config


def test_tile_encoder__stem_must_be_bool():
    with pytest.raises(ConfigError, match="stem must be True or False"):
        TileEncoder(3, stem="no")


def test_tile_encoder__features_are_local():
    # a cell's features depend on its receptive field only: encoding a crop equals cropping the encoding
    torch.manual_seed(0)
    enc = TileEncoder(3, tile_size=4, width=8, depth=1).eval()
    images = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        whole = enc(images)
        part = enc(images[..., 16:48, 16:48])
    # cells 6..7 of the crop (its interior) sit at cells 10..11 of the whole image
    torch.testing.assert_close(part[..., 3:5, 3:5], whole[..., 7:9, 7:9], rtol=1e-5, atol=1e-5)
