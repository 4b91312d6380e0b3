"""TileEncoder: a strided CNN that turns each image tile of ``s x s`` pixels into one grid cell.

Images (N, T, C, H*s, W*s) -> features (N, T, F, H, W); NaN pixels (nodata, cloud) are zeroed
and flagged in an extra validity channel so that no NaN reaches the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError

__all__ = ["TileEncoder", "valid_fraction", "default_strides"]


def default_strides(tile_size: int) -> list[int]:
    """Strides ``[2, 2, ...]`` whose product is ``tile_size`` (a power of two >= 2).

    Raises
    ------
    ConfigError
        If ``tile_size`` is not a power of two >= 2.
    """
    if (
        isinstance(tile_size, bool)
        or not isinstance(tile_size, int)
        or tile_size < 2
        or tile_size & (tile_size - 1)
    ):
        raise ConfigError(
            f"tile_size must be a power of two >= 2 (8, 16, 32, ...), got {tile_size!r}; "
            "pick such a tile size or pass strides=[...] whose product is the tile size"
        )
    return [2] * int(math.log2(tile_size))


def split_valid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN/inf -> 0 per band, plus a (..., 1, H, W) 0/1 mask: pixel valid in every band."""
    finite = torch.isfinite(x)
    valid = finite.all(dim=-3, keepdim=True)
    return torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device)), valid


def valid_fraction(images: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Share of valid (finite in every band) pixels in each ``tile_size`` cell.

    Parameters
    ----------
    images : Tensor, shape (N, T, C, H*s, W*s)
    tile_size : int
        ``s``, the side of a cell in pixels.

    Returns
    -------
    Tensor, shape (N, T, 1, H, W), values in [0, 1], dtype of ``images`` (float32 for ints).

    Raises
    ------
    GridError
        If the image height or width is not a multiple of ``tile_size``.
    """
    _check_image_shape(images, None, tile_size)
    n, t = images.shape[:2]
    valid = torch.isfinite(images).all(dim=2, keepdim=True)
    dtype = images.dtype if images.is_floating_point() else torch.float32
    frac = F.avg_pool2d(valid.flatten(0, 1).to(dtype), tile_size)
    return frac.unflatten(0, (n, t))


def _check_image_shape(images: torch.Tensor, channels: int | None, tile_size: int) -> None:
    if images.dim() != 5 or (channels is not None and images.shape[2] != channels):
        want = "C" if channels is None else str(channels)
        raise ModelMismatchError(
            f"images must have shape (N, T, {want}, H*s, W*s), got {tuple(images.shape)}; "
            "stack frames along dim 1 and bands along dim 2"
        )
    h, w = images.shape[-2:]
    if h % tile_size or w % tile_size:
        raise GridError(
            f"image size {h}x{w} is not a multiple of tile_size={tile_size}; crop or pad "
            f"the images to multiples of {tile_size} pixels"
        )


class ChannelNorm(nn.Module):
    """Normalise every pixel over its channels (a LayerNorm of the channel vector) with a learned scale and shift.

    Unlike GroupNorm or BatchNorm it pools no statistics over the image or the batch, so a
    cell's features depend only on the pixels in its receptive field: a window of a large area
    is encoded exactly as the same pixels inside the whole area (tiled inference), and a crop
    exactly as in the full frame (training on crops).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[
            :, None, None
        ]


#: normalisation layers of the encoder: ``batch`` (BatchNorm; at inference an affine map per
#: channel, so local too) and ``channel`` (per-pixel :class:`ChannelNorm`, the layout before 0.5)
NORMS = {"batch": nn.BatchNorm2d, "channel": ChannelNorm}


def _norm(kind: str, channels: int) -> nn.Module:
    return NORMS[kind](channels)


def _conv_unit(ch_in: int, ch_out: int, kernel: int, stride: int, norm: str) -> list[nn.Module]:
    """A bias-free ``kernel`` x ``kernel`` convolution (padding ``kernel // 2``), norm and SiLU."""
    conv = nn.Conv2d(ch_in, ch_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, _norm(norm, ch_out), nn.SiLU()]


def _check_sizes(
    in_channels: int, width: int, depth: int, max_width: int, out_channels: int | None
) -> None:
    """Refuse a TileEncoder size that is not an int in range (ConfigError naming it)."""
    for name, value, low in (
        ("in_channels", in_channels, 1),
        ("width", width, 1),
        ("depth", depth, 0),
        ("max_width", max_width, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"TileEncoder {name} must be an int >= {low}, got {value!r}; "
                f"pass e.g. {name}={max(low, 1) if name != 'width' else 32}"
            )
    if out_channels is not None and (
        isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1
    ):
        raise ConfigError(
            f"TileEncoder out_channels must be a positive int or None, got {out_channels!r}; "
            "pass e.g. out_channels=64"
        )


def _checked_strides(tile_size: int, strides: list[int] | None) -> list[int]:
    """``strides`` as a new list, or :func:`default_strides`; refused unless valid for the tile."""
    if strides is None:
        return default_strides(tile_size)
    strides = list(strides)
    if not strides or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 2 for s in strides
    ):
        raise ConfigError(
            f"strides must be a non-empty list of ints >= 2, got {strides!r}; "
            "pass e.g. strides=[4, 2, 2] for tile_size=16"
        )
    if math.prod(strides) != tile_size:
        raise ConfigError(
            f"strides {strides} multiply to {math.prod(strides)}, not tile_size="
            f"{tile_size!r}; choose strides whose product is the tile size"
        )
    return strides


def _check_switches(stem: bool, norm: str) -> None:
    """Refuse a ``stem`` that is not a bool and an unknown ``norm``."""
    if not isinstance(stem, bool):
        raise ConfigError(f"TileEncoder stem must be True or False, got {stem!r}")
    if norm not in NORMS:
        raise ConfigError(
            f"TileEncoder norm={norm!r} is invalid: expected one of {', '.join(NORMS)}"
        )


class TileEncoder(nn.Module):
    """Strided CNN from image tiles to per-cell features.

    A 3x3 stem (optional), then one downsampling stage per stride (a ``(2s-1) x (2s-1)`` convolution of
    stride ``s``, then ``depth`` 3x3 convolutions), each followed by a normalisation (``norm``) and SiLU, and a
    1x1 projection to ``out_channels``. Frames are folded into the batch (N*T) so that each
    layer is one batched convolution.

    Parameters
    ----------
    in_channels : int
        Image bands ``C``.
    tile_size : int
        Pixels per cell side ``s``; a power of two unless ``strides`` is given.
    width : int
        Channels of the stem and the first stage; each further stage doubles them, up to
        ``max_width``.
    depth : int
        Extra 3x3 convolutions per stage (0 or more).
    out_channels : int, optional
        Feature channels ``F`` per cell; defaults to the last stage width.
    strides : list of int, optional
        Downsampling strides (each >= 2) whose product is ``tile_size``; default
        ``[2] * log2(tile_size)``.
    max_width : int
        Channel cap of the stages.
    stem : bool
        Start with a full-resolution 3x3 convolution. Without it the first strided stage reads
        the pixels directly, which is several times faster on large images (pair it with a
        first stride of 4: ``strides=[4, 2, 2]`` for tile size 16).
    norm : str
        ``"batch"`` (BatchNorm: batch statistics in training, a fixed affine map per channel at
        inference) or ``"channel"`` (:class:`ChannelNorm`, per pixel over its channels).

    Attributes
    ----------
    out_channels : int
        ``F``, for sizing whatever comes next.
    config : dict
        The constructor arguments; ``TileEncoder(**enc.config)`` rebuilds the module.

    Raises
    ------
    ConfigError
        If a size is not a positive int, ``tile_size`` is not a power of two and no
        ``strides`` are given, or the strides do not multiply to ``tile_size``.
    """

    def __init__(
        self,
        in_channels: int,
        tile_size: int = 16,
        width: int = 32,
        depth: int = 1,
        out_channels: int | None = None,
        strides: list[int] | None = None,
        max_width: int = 256,
        stem: bool = True,
        norm: str = "channel",
    ) -> None:
        super().__init__()
        _check_sizes(in_channels, width, depth, max_width, out_channels)
        strides = _checked_strides(tile_size, strides)
        _check_switches(stem, norm)
        self.config = {
            "in_channels": in_channels,
            "tile_size": tile_size,
            "width": width,
            "depth": depth,
            "out_channels": out_channels,
            "strides": strides,
            "max_width": max_width,
            "stem": stem,
            "norm": norm,
        }
        self.in_channels = in_channels
        self.tile_size = tile_size
        self.strides = strides
        self._build_body(width, depth, max_width, stem, norm, out_channels)

    def _build_body(
        self,
        width: int,
        depth: int,
        max_width: int,
        stem: bool,
        norm: str,
        out_channels: int | None,
    ) -> None:
        """Stack the stem, the downsampling stages and the 1x1 projection into ``self.body``."""
        layers: list[nn.Module] = []
        ch = self.in_channels + 1  # + the validity channel
        if stem:
            layers += _conv_unit(ch, width, 3, 1, norm)
            ch = width
        # (end index in body, channels) of each strided stage
        self._stages: list[tuple[int, int]] = []
        for i, s in enumerate(self.strides):
            nxt = min(width * 2**i, max_width)
            layers += _conv_unit(ch, nxt, 2 * s - 1, s, norm)
            for _ in range(depth):
                layers += _conv_unit(nxt, nxt, 3, 1, norm)
            ch = nxt
            self._stages.append((len(layers), ch))
        self.out_channels = out_channels if out_channels is not None else ch
        layers.append(nn.Conv2d(ch, self.out_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode every frame.

        Parameters
        ----------
        images : Tensor, shape (N, T, C, H*s, W*s)
            Float pixels; NaN or inf marks an invalid pixel.

        Returns
        -------
        Tensor, shape (N, T, out_channels, H, W)

        Raises
        ------
        ModelMismatchError
            If ``images`` is not 5-D with ``in_channels`` bands.
        GridError
            If the image height or width is not a multiple of ``tile_size``.
        """
        _check_image_shape(images, self.in_channels, self.tile_size)
        n, t = images.shape[:2]
        x, valid = split_valid(images.flatten(0, 1))
        feats = self.body(torch.cat([x, valid.to(x.dtype)], dim=1))
        return feats.unflatten(0, (n, t))

    def stage_channels(self, stage: int) -> int:
        """Channels of the output of downsampling stage ``stage`` (0-based)."""
        return self._stages[stage][1]

    def stage_factor(self, stage: int) -> int:
        """Pixels of stage ``stage``'s output per cell side: ``prod(strides[stage + 1:])``."""
        return math.prod(self.strides[stage + 1 :])

    def forward_with_stage(
        self, images: torch.Tensor, stage: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features as :meth:`forward`, the output of downsampling stage ``stage`` on the way, and
        each cell's share of valid pixels (as :meth:`valid_fraction`, from the same mask).

        Returns
        -------
        features : Tensor, shape (N, T, out_channels, H, W)
        stage_output : Tensor, shape (N * T, stage_channels(stage), H * f, W * f), ``f = stage_factor(stage)``
        valid_share : Tensor, shape (N, T, 1, H, W), values in [0, 1], dtype of the features
        """
        _check_image_shape(images, self.in_channels, self.tile_size)
        n, t = images.shape[:2]
        x, valid = split_valid(images.flatten(0, 1))
        valid = valid.to(x.dtype)
        end = self._stages[stage][0]
        early = self.body[:end](torch.cat([x, valid], dim=1))
        feats = self.body[end:](early)
        share = F.avg_pool2d(valid, self.tile_size).to(feats.dtype)
        return feats.unflatten(0, (n, t)), early, share.unflatten(0, (n, t))

    def valid_fraction(self, images: torch.Tensor) -> torch.Tensor:
        """Share of valid pixels per cell, (N, T, C, H*s, W*s) -> (N, T, 1, H, W).

        Raises
        ------
        GridError
            If the image height or width is not a multiple of ``tile_size``.
        """
        return valid_fraction(images, self.tile_size)

    def extra_repr(self) -> str:
        return (
            f"tile_size={self.tile_size}, strides={self.strides}, out_channels={self.out_channels}"
        )
