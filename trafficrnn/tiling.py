"""Tiling for large-area inference: the receptive field of a model (the halo that makes tiles exact) and the plan of
windows (cores, halos and blending weights) that covers an area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from trafficrnn.errors import ConfigError

__all__ = ["BLENDS", "Window", "plan_windows", "receptive_field", "receptive_halo"]

BLENDS = ("cosine", "linear", "none")


# -- receptive field ------------------------------------------------------------------------
def _encoder_reach(encoder: nn.Module) -> int:
    """Cells beyond its own tile that the TileEncoder output of a cell reads (its convolutions' reach)."""
    stride, lo, hi = 1, 0, 0  # output index o reads input pixels [o * stride + lo, o * stride + hi]
    for layer in encoder.modules():
        if isinstance(layer, nn.Conv2d):
            k, s, q, d = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.dilation[0]
            lo, hi = lo - q * stride, hi + (d * (k - 1) - q) * stride
            stride *= s
    tile = encoder.tile_size
    return max(0, math.ceil(-lo / tile), math.ceil((hi - (tile - 1)) / tile))


def receptive_field(net: nn.Module, input_steps: int, horizon: int) -> int:
    """Cells ``r`` around a cell that its forecast after ``horizon`` leads depends on (Chebyshev radius).

    Every recurrent layer convolves its hidden state with a ``k × k`` kernel at every step, so
    information travels ``p = k // 2`` cells per layer and step. For the encoder stack (``L``
    layers, ``T_in`` steps) the top state reads ``(T_in + L - 1) · p`` cells; with prediction
    feedback each lead step passes the whole forecaster stack again (the head reads every layer,
    its output is the next step's input), adding ``L · p`` per lead: after ``H`` leads
    ``r = p · (T_in + L · H)``. Without feedback ``r = p · (T_in + L - 1 + H)``. On the image
    path the convolutions of the TileEncoder add their pixel reach, rounded up to cells.

    Parameters
    ----------
    net : EncoderForecaster
    input_steps, horizon : int
        ``T_in`` and ``H``.

    Returns
    -------
    int
    """
    p = int(net.config["kernel_size"]) // 2
    layers = len(net.config["hidden_channels"])
    r = (
        p * (input_steps + layers * horizon)
        if net.feedback
        else p * (input_steps + layers - 1 + horizon)
    )
    if net.tile_encoder is not None:
        r += _encoder_reach(net.tile_encoder)
    return int(r)


def receptive_halo(model: Any) -> int:
    """Halo in grid cells that makes tiled inference of a fitted model identical to whole-area inference.

    ``receptive_field(model.model_, model.input_steps, model.horizon)`` (an ensemble: its widest member);
    see :func:`receptive_field`.

    Raises
    ------
    NotFittedError
        If ``model`` is not fitted.
    """
    model._check_fitted()
    return max(
        receptive_field(net, int(model.input_steps), int(model.horizon)) for net in networks(model)
    )


def networks(model: Any) -> list[nn.Module]:
    """The networks of a fitted forecaster: its own, or every member's for a ForecastEnsemble."""
    return [m.model_ for m in getattr(model, "estimators_", [model])]


def global_layer_names(model: Any) -> list[str]:
    """Layers whose output at a cell depends on the whole input area (spatial statistics)."""
    kinds = (
        nn.GroupNorm,
        nn.InstanceNorm2d,
        nn.LayerNorm,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool2d,
    )
    return sorted(
        {type(m).__name__ for net in networks(model) for m in net.modules() if isinstance(m, kinds)}
    )


# -- windows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One task: the cells ``rows × cols`` read (core plus halo) and the weights of its forecast.

    ``weights`` is ``(rows, cols)``; the weights of all windows sum to 1 in every cell. ``write``
    is the sub-range (row0, row1, col0, col1) of the area where ``weights`` are not zero.
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    wy: np.ndarray
    wx: np.ndarray

    @property
    def write(self) -> tuple[int, int, int, int]:
        (ry,), (rx,) = np.nonzero(self.wy), np.nonzero(self.wx)
        return (
            self.rows[0] + ry[0],
            self.rows[0] + ry[-1] + 1,
            self.cols[0] + rx[0],
            self.cols[0] + rx[-1] + 1,
        )


def _ramp(t: np.ndarray, blend: str) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * t) if blend == "cosine" else t


def _axis_plan(
    n: int, window: int, halo: int, blend: str
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Split ``n`` cells into near-equal cores of at most ``window``; extents and 1-D weights.

    Every extent is its core plus ``halo`` cells on each side; at the area's edges it slides
    inward instead of being clipped, so that all windows read the same number of cells (their
    memory and compute shapes do not depend on where they lie).
    """
    bounds = np.linspace(0, n, math.ceil(n / window) + 1).round().astype(int)
    cores = np.diff(bounds)
    half = [0] * len(bounds)  # ramp half-width at each interior boundary
    if blend != "none":
        for j in range(1, len(bounds) - 1):
            half[j] = int(min(halo, cores[j - 1] // 2, cores[j] // 2))
    plan = []
    for k in range(len(cores)):
        span = min(n, cores[k] + 2 * halo)
        lo = min(max(0, bounds[k] - halo), n - span)
        hi = lo + span
        pos = np.arange(lo, hi)
        w = np.ones(hi - lo)
        for j, side in ((k, 1.0), (k + 1, -1.0)):
            if 0 < j < len(bounds) - 1:
                b, h = bounds[j], half[j]
                up = (
                    (pos >= b).astype(float)
                    if h == 0
                    else _ramp(np.clip((pos - b + h + 0.5) / (2 * h), 0, 1), blend)
                )
                w *= up if side > 0 else 1.0 - up
        plan.append(((int(lo), int(hi)), w))
    return plan


def plan_windows(
    shape: tuple[int, int], window: int, halo: int, *, blend: str = "none"
) -> list[Window]:
    """Windows covering a ``(rows, cols)`` area: cores of at most ``window`` cells plus ``halo``.

    With ``blend="none"`` the weights are 1 on each core and 0 on its halo (the cores partition
    the area); with ``"linear"`` or ``"cosine"`` neighbouring windows cross-fade over the cells
    where they overlap (up to ``halo`` on each side of a core boundary). Weights sum to 1.

    Raises
    ------
    ConfigError
        For an unknown ``blend``.
    """
    if blend not in BLENDS:
        raise ConfigError(f"blend={blend!r} is invalid: expected one of {', '.join(BLENDS)}")
    ys, xs = _axis_plan(shape[0], window, halo, blend), _axis_plan(shape[1], window, halo, blend)
    return [Window(ry, rx, wy, wx) for ry, wy in ys for rx, wx in xs]
