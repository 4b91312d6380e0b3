"""EncoderForecaster (Shi et al., 2015): stacked ConvLSTM/ConvGRU cells read T_in grids, then roll
H lead steps forward from the encoder states; optional TileEncoder front end for raw images.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from trafficrnn.errors import ConfigError, ModelMismatchError
from trafficrnn.models.cells import check_cell_kwargs, get_cell
from trafficrnn.models.encoder import TileEncoder, split_valid

__all__ = ["EncoderForecaster", "count_stage_for"]

_ACTIVATIONS = ("softplus", "relu")


def _positive_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}; pass e.g. {name}={low}")
    return value


def _check_sizes(
    in_channels: int,
    out_channels: int,
    hidden_channels: list[int],
    static_channels: int,
    past_covariate_channels: int,
    future_covariate_channels: int,
    linear_leads: int,
    linear_lags: int,
) -> None:
    """Refuse a channel count or size of the model that is not an int in range (naming it)."""
    _positive_int("in_channels", in_channels)
    _positive_int("out_channels", out_channels)
    if not hidden_channels or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_channels
    ):
        raise ConfigError(
            f"hidden_channels must be a non-empty list of positive ints, got "
            f"{hidden_channels!r}; pass e.g. hidden_channels=[64, 64]"
        )
    for name, value in (
        ("static_channels", static_channels),
        ("past_covariate_channels", past_covariate_channels),
        ("future_covariate_channels", future_covariate_channels),
    ):
        _positive_int(name, value, 0)
    _positive_int("linear_leads", linear_leads, 0)
    _positive_int("linear_lags", linear_lags, 1)


def _check_options(
    encoder: dict | None,
    feedback: bool,
    residual: bool,
    count_head: bool,
    output_activation: str,
) -> None:
    """Refuse a switch that is not a bool, an unknown output activation and a non-dict encoder."""
    for name, value in (
        ("feedback", feedback),
        ("residual", residual),
        ("count_head", count_head),
    ):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    if output_activation not in _ACTIVATIONS:
        raise ConfigError(
            f"output_activation must be one of {list(_ACTIVATIONS)}, got "
            f"{output_activation!r}; use 'softplus'"
        )
    if encoder is not None and not isinstance(encoder, dict):
        raise ConfigError(
            f"encoder must be a dict of TileEncoder arguments or None, got "
            f"{type(encoder).__name__}; pass e.g. encoder={{'tile_size': 16}}"
        )


def _check_targets_first(
    in_channels: int,
    out_channels: int,
    encoder: dict | None,
    feedback: bool,
    residual: bool,
    linear_leads: int,
) -> None:
    """Refuse grids too narrow to hold the target bands where the model reads them from ``x``."""
    if encoder is None and (feedback or residual or linear_leads) and in_channels < out_channels:
        raise ConfigError(
            f"without an image encoder the first out_channels={out_channels} channels of x "
            f"are the target bands, but in_channels={in_channels}; put the targets first "
            "or set feedback=False, residual=False and linear_leads=0"
        )


def _checked_count_stage(count_stage: int | None, stages: int) -> int:
    """``count_stage`` checked against the encoder's ``stages``; ``None``: the second-last stage."""
    if count_stage is not None and not (
        isinstance(count_stage, int)
        and not isinstance(count_stage, bool)
        and 0 <= count_stage < stages
    ):
        raise ConfigError(
            f"count_stage={count_stage!r} is invalid: expected a stage index in [0, {stages - 1}] "
            "of the tile encoder, or None"
        )
    if count_stage is None:
        count_stage = max(stages - 2, 0)
    return count_stage


def _cell_stack(
    cell_cls: type[nn.Module],
    first_in: int,
    hidden_channels: list[int],
    kernel_size: int,
    cell_kwargs: dict,
) -> nn.ModuleList:
    """One recurrent cell per entry of ``hidden_channels``, the first reading ``first_in``."""
    ins = [first_in] + hidden_channels[:-1]
    return nn.ModuleList(
        cell_cls(i, h, kernel_size, **cell_kwargs) for i, h in zip(ins, hidden_channels)
    )


def _as_maps(
    t: torch.Tensor, name: str, n: int, steps: int, channels: int, hw: tuple[int, int]
) -> torch.Tensor:
    """(N, S, C) vectors or (N, S, C, H, W) maps -> (N, S, C, H, W) (vectors broadcast)."""
    if t.dim() == 3 and tuple(t.shape) == (n, steps, channels):
        return t[..., None, None].expand(n, steps, channels, *hw)
    if t.dim() == 5 and tuple(t.shape) == (n, steps, channels, *hw):
        return t
    raise ModelMismatchError(
        f"{name} must have shape ({n}, {steps}, {channels}) or ({n}, {steps}, {channels}, "
        f"{hw[0]}, {hw[1]}), got {tuple(t.shape)}; check its batch, step and channel counts"
    )


def _exporting() -> bool:
    """Whether ``torch.export`` (and so ``torch.onnx.export``) is tracing the model now."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting is not None and is_exporting())


def count_stage_for(strides: list[int], target_px: int = 8) -> int:
    """The tile-encoder stage whose cumulative stride is closest to ``target_px`` pixels.

    Stages finer than the cells are preferred (the last stage is the cell itself); ties go to
    the finer stage. At 1 m pixels, 4 px sub-cells are 4 m: about one car (4.5 x 1.8 m).

    Parameters
    ----------
    strides : list of int
        The encoder's downsampling strides.
    target_px : int
        Wanted cumulative stride in pixels.

    Returns
    -------
    int
        0-based stage index.
    """
    cumulative = [math.prod(strides[: i + 1]) for i in range(len(strides))]
    candidates = list(range(len(strides) - 1)) or [0]
    return min(candidates, key=lambda i: (abs(math.log2(cumulative[i] / target_px)), cumulative[i]))


class EncoderForecaster(nn.Module):
    """Encoder-forecaster of stacked convolutional recurrent cells.

    The encoder stack reads ``T_in`` input grids; forecaster layer ``k`` starts from the final
    state of encoder layer ``k`` and unrolls ``horizon`` lead steps. At each lead step the
    forecaster input is the concatenation of whichever of these exist: the previous
    prediction (``feedback=True``; the last observed target at the first step), the future
    covariates of that step, and the static layers. With none of them the first forecaster
    cell runs on a learned constant input. The prediction comes from a 1x1 convolution over
    the hidden states of all forecaster layers (as in Shi et al.), made non-negative by
    ``output_activation`` (softplus: smooth and with gradient at zero; or relu). With
    ``residual=True`` the head instead predicts a change added to the last observed target,
    clamped at 0 in eval mode (unclamped while training, so that the gradient never dies).

    Parameters
    ----------
    in_channels : int
        Channels of ``x``: image bands (with ``encoder``) or grid channels (without); in the
        density path the first ``out_channels`` channels of ``x`` are the target bands.
    out_channels : int
        Target bands ``C_out`` (e.g. 1 for density, 2 for inflow/outflow).
    cell : {"lstm", "gru"}
        Recurrent cell, see :func:`trafficrnn.models.get_cell`.
    hidden_channels : list of int
        Hidden channels of each layer (encoder and forecaster stacks alike).
    kernel_size : int
        Odd kernel size of the cells.
    encoder : dict, optional
        :class:`TileEncoder` keyword arguments (``in_channels`` is filled in). Given, ``x``
        holds images (N, T_in, C, Hc*s, Wc*s) and a nowcast head maps features to targets.
    static_channels, past_covariate_channels, future_covariate_channels : int
        Channels of the optional ``static``, ``past_covariates`` and ``future_covariates``.
    feedback : bool
        Feed each prediction back as input of the next lead step.
    residual : bool
        Predict the change from the last observed target instead of the target.
    output_activation : {"softplus", "relu"}
        Non-negativity of the non-residual output.
    cell_kwargs : dict, optional
        Extra cell arguments (:data:`~trafficrnn.models.cells.CELL_KWARGS`), e.g. ``{"bias": False}``.
    count_head : bool
        Image path: the nowcast counts come from a density map at a finer resolution than the
        cells (stage ``count_stage`` of the tile encoder), summed over each cell — additive
        and translation-equivariant, as a count should be — and join the cell features fed to
        the recurrent encoder. ``False``: a 1x1 head on the cell features.
    count_stage : int, optional
        The 0-based downsampling stage of the tile encoder whose output the density map is read
        from (see :func:`count_stage_for`); ``None``: the second-last stage (the rule of models
        saved before this parameter existed).
    density_per_cell : bool
        ``count_head`` models: the density is ``softplus(z) / k`` with ``k`` sub-cells per cell,
        so that an empty cell's floor is that of one softplus, whatever the sub-cell count, and
        an occupied sub-cell sits in the linear range of the softplus. ``False``:
        ``softplus(z)`` (models saved before this parameter existed).
    count_validity : bool
        ``count_head`` models: the share of each cell's pixels that hold a value in every band (not
        NaN: nodata, cloud) joins the cell features, just before the counts, and the per-lead
        linear term also reads each lag's count times the share of its cell that is missing, so
        that the model can tell a count read from a clear cell from one guessed under a cloud.
        ``False``: the layout of models saved before this parameter existed.
    quantiles : list of float, optional
        Probability levels in (0, 1), sorted and unique: a quantile head, a 1x1 convolution over
        the hidden states the point head reads, gives per lead, band and level an offset from the
        point forecast (``forward(..., return_quantiles=True)``). ``None``: no head (the weights
        are those of a model built before this parameter existed).

    Attributes
    ----------
    config : dict
        The constructor arguments (JSON-serialisable); ``type(m)(**m.config)`` rebuilds.

    Raises
    ------
    ConfigError
        If a parameter is out of range or of the wrong type (the message names it).
    ValueError
        If ``cell`` is not a registered cell name.
    TypeError
        If ``cell_kwargs`` holds an argument no cell takes (the message lists the valid ones).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        cell: str = "lstm",
        hidden_channels: list[int] | None = None,
        kernel_size: int = 3,
        encoder: dict | None = None,
        static_channels: int = 0,
        past_covariate_channels: int = 0,
        future_covariate_channels: int = 0,
        feedback: bool = True,
        residual: bool = False,
        output_activation: str = "softplus",
        cell_kwargs: dict | None = None,
        count_head: bool = False,
        linear_leads: int = 0,
        linear_lags: int = 1,
        count_stage: int | None = None,
        density_per_cell: bool = False,
        quantiles: list[float] | None = None,
        count_validity: bool = False,
    ) -> None:
        super().__init__()
        hidden_channels = [64, 64] if hidden_channels is None else list(hidden_channels)
        _check_sizes(
            in_channels,
            out_channels,
            hidden_channels,
            static_channels,
            past_covariate_channels,
            future_covariate_channels,
            linear_leads,
            linear_lags,
        )
        _check_options(encoder, feedback, residual, count_head, output_activation)
        _check_targets_first(in_channels, out_channels, encoder, feedback, residual, linear_leads)
        cell_kwargs = dict(cell_kwargs or {})
        cell_cls = get_cell(cell)
        check_cell_kwargs(cell, cell_kwargs)
        config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "cell": cell.lower(),
            "hidden_channels": hidden_channels,
            "kernel_size": kernel_size,
            "encoder": encoder,
            "static_channels": static_channels,
            "past_covariate_channels": past_covariate_channels,
            "future_covariate_channels": future_covariate_channels,
            "feedback": feedback,
            "residual": residual,
            "output_activation": output_activation,
            "cell_kwargs": cell_kwargs,
            "count_head": count_head,
            "linear_leads": linear_leads,
            "linear_lags": linear_lags,
        }
        self._record_config(config, count_stage, density_per_cell, count_validity)
        feat = self._build_front(encoder, count_head, count_stage)
        self._build_recurrent(cell_cls, hidden_channels, kernel_size, cell_kwargs, feat)
        self._build_linear(linear_leads, linear_lags)
        self._build_quantile_head(quantiles, sum(hidden_channels))

    # -- construction steps (in this order: the submodules' order sets the initial weights) ------
    def _record_config(
        self, config: dict, count_stage: int | None, density_per_cell: bool, count_validity: bool
    ) -> None:
        """Keep a copy of the constructor arguments as ``config`` and the settings forward reads."""
        if not isinstance(count_validity, bool) or (
            count_validity and not (config["count_head"] and config["encoder"] is not None)
        ):
            raise ConfigError(
                f"count_validity={count_validity!r} is invalid: it is True or False, and True needs "
                "an image encoder with a count head (encoder={...}, count_head=True)"
            )
        self.config = copy.deepcopy(config)
        if count_stage is not None:
            # recorded only when given: configs without it rebuild with the old rule
            self.config["count_stage"] = count_stage
        if density_per_cell:  # likewise: configs without it rebuild the old density
            self.config["density_per_cell"] = True
        self.density_per_cell = bool(density_per_cell)
        if count_validity:  # likewise: configs without it rebuild the layout without the share
            self.config["count_validity"] = True
        self.count_validity = count_validity
        self.in_channels, self.out_channels = config["in_channels"], config["out_channels"]
        self.static_channels = config["static_channels"]
        self.past_covariate_channels = config["past_covariate_channels"]
        self.future_covariate_channels = config["future_covariate_channels"]
        self.feedback, self.residual = config["feedback"], config["residual"]
        self.output_activation = config["output_activation"]

    def _build_front(self, encoder: dict | None, count_head: bool, count_stage: int | None) -> int:
        """Build the tile encoder and nowcast (or count) head, or none for grids; returns ``F'``."""
        if encoder is None:
            if count_head or count_stage is not None:
                raise ConfigError(
                    "count_head=True needs an image encoder; build with encoder={...}"
                )
            self.tile_encoder = None
            self.nowcast_head = None
            self.count_stage = None
            return self.in_channels + 1  # + validity channel (0 where any channel is NaN)
        enc_kwargs = dict(encoder)
        if enc_kwargs.setdefault("in_channels", self.in_channels) != self.in_channels:
            raise ConfigError(
                f"encoder['in_channels']={enc_kwargs['in_channels']!r} disagrees with "
                f"in_channels={self.in_channels}; drop it from the encoder dict"
            )
        self.tile_encoder: TileEncoder | None = TileEncoder(**enc_kwargs)
        feat = self.tile_encoder.out_channels
        count_stage = _checked_count_stage(count_stage, len(self.tile_encoder.strides))
        self.count_stage = count_stage if count_head else None
        if not count_head:
            self.nowcast_head: nn.Conv2d | None = nn.Conv2d(feat, self.out_channels, 1)
            return feat
        self.nowcast_head = nn.Conv2d(
            self.tile_encoder.stage_channels(self.count_stage), self.out_channels, 1
        )
        # start near zero counts: softplus(-4) summed over a cell's pixels of that stage
        nn.init.constant_(self.nowcast_head.bias, -4.0)
        # the counts (after the valid share of each cell, with count_validity) join the features
        return feat + int(self.count_validity) + self.out_channels

    def _build_recurrent(
        self,
        cell_cls: type[nn.Module],
        hidden_channels: list[int],
        kernel_size: int,
        cell_kwargs: dict,
        feat: int,
    ) -> None:
        """Build the recurrent encoder and forecaster stacks and the head over all their layers."""
        self.feature_channels = feat  # F' of encode(): cell features, [valid share,] the counts
        enc_in = feat + self.static_channels + self.past_covariate_channels
        self.encoder_cells = _cell_stack(
            cell_cls, enc_in, hidden_channels, kernel_size, cell_kwargs
        )
        fc_in = (
            (self.out_channels if self.feedback else 0)
            + self.future_covariate_channels
            + self.static_channels
        )
        self.forecaster_cells = _cell_stack(
            cell_cls, fc_in, hidden_channels, kernel_size, cell_kwargs
        )
        self.head = nn.Conv2d(sum(hidden_channels), self.out_channels, 1)

    def _build_linear(self, linear_leads: int, linear_lags: int) -> None:
        """Build the per-lead linear term (``None`` without ``linear_leads``), zero at the start."""
        self.linear_leads, self.linear_lags = linear_leads, linear_lags
        if not linear_leads:
            self.linear: nn.Conv2d | None = None
            return
        lags_in = linear_lags * self.out_channels * (2 if self.count_validity else 1)
        lin_in = lags_in + self.future_covariate_channels + self.static_channels
        # one group of weights per lead; zero: the model starts as without the linear term
        self.linear = nn.Conv2d(
            linear_leads * lin_in, linear_leads * self.out_channels, 1, groups=linear_leads
        )
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def _build_quantile_head(self, quantiles: list[float] | None, hidden: int) -> None:
        """Build the quantile head (``None`` without ``quantiles``): a 1x1 convolution over the
        hidden states the point head reads, to ``len(quantiles) * out_channels`` offsets from the
        point forecast, zero at the start (it draws no random numbers, so that the other weights,
        and the training, are those of the model without it). Recorded in ``config`` only when
        given: configs without it rebuild the model without a head, state_dict unchanged."""
        if quantiles is None:
            self.quantiles: tuple[float, ...] | None = None
            self.quantile_head: nn.Conv2d | None = None
            return
        from trafficrnn.estimation.calibration import check_quantiles

        self.quantiles = check_quantiles(quantiles)
        self.config["quantiles"] = list(self.quantiles)
        with torch.random.fork_rng(devices=[]):  # its default initialisation's draws are undone
            self.quantile_head = nn.Conv2d(hidden, len(self.quantiles) * self.out_channels, 1)
        nn.init.zeros_(self.quantile_head.weight)
        nn.init.zeros_(self.quantile_head.bias)

    # -- helpers ---------------------------------------------------------------------------
    def _quantile_offsets(self, point: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The quantile head's forecasts (N, H, Q, C_out, Hc, Wc): the point forecast (N, H, C_out,
        Hc, Wc) plus the head's offsets from the hidden states (N, H, sum(hidden), Hc, Wc). Both
        are detached: the head's loss trains the head alone. Not sorted across the levels."""
        n, h = point.shape[:2]
        off = self.quantile_head(hidden.detach().flatten(0, 1)).unflatten(0, (n, h))
        off = off.unflatten(2, (len(self.quantiles), self.out_channels))
        return point.detach()[:, :, None] + off

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        return F.softplus(y) if self.output_activation == "softplus" else F.relu(y)

    def _residual(self, last: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``last + delta``, clamped at 0 in eval mode only: in training a hard clamp would stop the
        gradient of every cell pushed below zero (most cells of sparse counts), so the loss sees
        and corrects negative values instead."""
        out = last + delta
        return out if self.training else torch.clamp(out, min=0)

    def _head(
        self, hs: list[torch.Tensor], last: torch.Tensor | None, lin: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states of all forecaster layers at one step (plus that step's linear term)
        -> (N, C_out, Hc, Wc)."""
        y = self.head(torch.cat(hs, 1))
        if lin is not None:
            y = y + lin
        if self.residual:
            return self._residual(last, y)
        return self._activate(y)

    def _linear_term(self, inp: torch.Tensor) -> torch.Tensor:
        """The per-lead linear term, (N, horizon, C_out, Hc, Wc), on what :meth:`_linear_inputs`
        gives, (N, horizon, inputs, Hc, Wc)."""
        n, horizon, hw = inp.shape[0], inp.shape[1], tuple(inp.shape[-2:])
        k = self.out_channels * horizon
        y = F.conv2d(
            inp.flatten(1, 2), self.linear.weight[:k], self.linear.bias[:k], groups=horizon
        )
        return y.view(n, horizon, self.out_channels, *hw)

    def _linear_inputs(
        self,
        x: torch.Tensor,
        last: torch.Tensor,
        nowcast: torch.Tensor | None,
        fut: torch.Tensor | None,
        static: torch.Tensor | None,
        horizon: int,
        feats: torch.Tensor,
    ) -> torch.Tensor:
        """What each lead's group of the linear term reads, (N, horizon, inputs, Hc, Wc): the last
        target and the ``linear_lags - 1`` frames before it (grids: their values; images: their
        nowcasts), with ``count_validity`` each of them times the missing share of its cell in
        ``feats``, the static layers, and the lead's future covariates first."""
        n = last.shape[0]
        lags = [last]
        if self.linear_lags > 1:
            source = nowcast if self.tile_encoder is not None else x[:, :, : self.out_channels]
            earlier = source[:, -self.linear_lags : -1]
            lags = [*torch.nan_to_num(earlier).unbind(1), last]
        if self.count_validity:
            c = self.out_channels
            missing = 1 - feats[:, -self.linear_lags :, -c - 1 : -c]
            lags += [lag * missing[:, i] for i, lag in enumerate(lags)]
        shared = torch.cat(lags + ([static] if static is not None else []), 1)
        parts = [shared[:, None].expand(n, horizon, *shared.shape[1:])]
        if fut is not None:
            parts.insert(0, fut)
        return torch.cat(parts, 2) if len(parts) > 1 else parts[0]

    @staticmethod
    def _check(t: torch.Tensor | None, arg: str, param: str, channels: int) -> None:
        if (t is None) != (channels == 0):
            fix = f"pass {arg}=..." if t is None else f"rebuild the model with {param} > 0"
            raise ModelMismatchError(
                f"{arg} is {'missing' if t is None else 'given'} but the model was built with "
                f"{param}={channels}; {fix}"
            )

    def nowcast(self, images: torch.Tensor) -> torch.Tensor:
        """Targets of the current frames from the image features (auxiliary task).

        Parameters
        ----------
        images : Tensor, shape (N, T, C, Hc*s, Wc*s)

        Returns
        -------
        Tensor, shape (N, T, C_out, Hc, Wc), non-negative.

        Raises
        ------
        ConfigError
            If the model has no image encoder.
        """
        if self.tile_encoder is None:
            raise ConfigError("nowcast needs an image encoder; build the model with encoder={...}")
        feats, counts = self._encode(images)
        return counts if counts is not None else self._nowcast_from(feats)

    def _nowcast_from(self, feats: torch.Tensor) -> torch.Tensor:
        return self._activate(self.nowcast_head(feats.flatten(0, 1))).unflatten(0, feats.shape[:2])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Per-cell inputs of the recurrent encoder: what ``forward(..., encoded=True)`` reads.

        Parameters
        ----------
        images : Tensor, shape (N, T, C, Hc*s, Wc*s)

        Returns
        -------
        Tensor, shape (N, T, feature_channels, Hc, Wc)
            The cell features, followed (with ``count_head``) by the share of valid pixels of
            each cell (with ``count_validity``) and the ``C_out`` counts.

        Raises
        ------
        ConfigError
            If the model has no image encoder.
        """
        if self.tile_encoder is None:
            raise ConfigError("encode needs an image encoder; build the model with encoder={...}")
        return self._encode(images)[0]

    def density(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density map of the count stage and the cell features (``count_head`` models).

        Parameters
        ----------
        images : Tensor, shape (N, T, C, Hc*s, Wc*s)

        Returns
        -------
        density : Tensor, shape (N, T, C_out, Hc*f, Wc*f)
            Non-negative counts per sub-cell of ``s / f`` pixels (``f`` = :attr:`count_factor`).
        features : Tensor, shape (N, T, feature_channels, Hc, Wc)
            As :meth:`encode` (the counts are the density summed over each cell).

        Raises
        ------
        ConfigError
            If the model has no count head.
        """
        if self.count_stage is None:
            raise ConfigError("density needs a count head; build the model with count_head=True")
        feats, _, dens = self._encode(images, with_density=True)
        return dens, feats

    @property
    def count_factor(self) -> int:
        """Sub-cells of the density map per cell side (``count_head`` models), else 1."""
        return 1 if self.count_stage is None else self.tile_encoder.stage_factor(self.count_stage)

    def _encode(self, images: torch.Tensor, with_density: bool = False):
        """Cell features (N, T, F', H, W) of the images and, with ``count_head``, their counts
        (N, T, C_out, H, W) — already joined to the features; else ``None`` for the counts.
        ``with_density``: also the density map (N, T, C_out, H*f, W*f)."""
        if self.count_stage is None:
            feats = self.tile_encoder(images)
            return (feats, None, None) if with_density else (feats, None)
        feats, early, share = self.tile_encoder.forward_with_stage(images, self.count_stage)
        factor = self.tile_encoder.stage_factor(self.count_stage)
        density = F.softplus(self.nowcast_head(early))
        if self.density_per_cell:
            density = density / (factor * factor)
        counts = F.avg_pool2d(density, factor) * (factor * factor) if factor > 1 else density
        counts = counts.unflatten(0, feats.shape[:2])
        parts = [feats, counts]
        if self.count_validity:
            parts.insert(1, share)
        out = torch.cat(parts, 2)
        if with_density:
            return out, counts, density.unflatten(0, feats.shape[:2])
        return out, counts

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        *,
        horizon: int,
        static: torch.Tensor | None = None,
        past_covariates: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        last_target: torch.Tensor | None = None,
        return_nowcast: bool = False,
        grad_steps: int | None = None,
        encoded: bool = False,
        return_quantiles: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Forecast ``horizon`` lead steps.

        Parameters
        ----------
        x : Tensor
            (N, T_in, C, Hc*s, Wc*s) images with an encoder, else (N, T_in, C, Hc, Wc) grids
            whose first ``out_channels`` channels are the targets. NaN marks missing values.
        horizon : int
            Lead steps ``H`` to forecast.
        static : Tensor (N, C_s, Hc, Wc), optional
            Static layers; join the encoder and the forecaster inputs at every step.
        past_covariates : Tensor (N, T_in, C_t) or (N, T_in, C_t, Hc, Wc), optional
            Per-step inputs of the observed frames (vectors are broadcast over the grid).
        future_covariates : Tensor (N, H, C_f) or (N, H, C_f, Hc, Wc), optional
            Known inputs of the target times (time of day, same slot a week earlier, ...).
        last_target : Tensor (N, C_out, Hc, Wc), optional
            Last observed target, used by ``feedback`` and ``residual``; defaults to the first
            ``out_channels`` channels of the last frame of ``x`` (grids) or to the nowcast of
            the last frame (images). NaN is read as the nowcast (images) or as 0 (grids).
        return_nowcast : bool
            Also return the nowcast of the input frames (image encoder only).
        grad_steps : int, optional
            Training: backpropagate through the recurrent encoder's last ``grad_steps`` input
            frames only (truncated backpropagation through time). The earlier frames still set
            the state, read without a graph: the same forecast, a cheaper backward pass.
            ``None``: through every frame. Ignored where no gradient is recorded.
        encoded : bool
            ``x`` holds what :meth:`encode` returns for the images, (N, T_in, feature_channels,
            Hc, Wc): the tile encoder is skipped (e.g. a frozen encoder's cached features); the
            nowcast comes from the count channels (or the nowcast head on the features).
        return_quantiles : bool
            Also return the quantile head's forecasts (models built with ``quantiles``).

        Returns
        -------
        forecast : Tensor, shape (N, H, C_out, Hc, Wc)
            Non-negative.
        nowcast : Tensor, shape (N, T_in, C_out, Hc, Wc)
            Only with ``return_nowcast=True``.
        quantiles : Tensor, shape (N, H, Q, C_out, Hc, Wc)
            Only with ``return_quantiles=True`` (last): the point forecast plus the head's offset
            of each level of ``quantiles``, unsorted and unclipped; detached from the point
            forecast and the features (the head's loss trains the head alone).

        Raises
        ------
        ConfigError
            If ``horizon`` is not a positive int, ``return_nowcast`` without an encoder, or
            ``return_quantiles`` without a quantile head.
        ModelMismatchError
            If a tensor has the wrong shape, or an input the model was built for is missing
            (or one it was not built for is given).
        GridError
            If the image size is not a multiple of the encoder tile size.
        """
        self._check_inputs(
            x,
            horizon,
            static,
            past_covariates,
            future_covariates,
            return_nowcast,
            grad_steps,
            encoded,
        )
        if return_quantiles and self.quantile_head is None:
            raise ConfigError(
                "return_quantiles=True needs a quantile head; build the model with "
                "quantiles=[0.1, 0.5, 0.9] (TrafficForecaster: model_kwargs={'quantiles': ...})"
            )
        n, t_in = x.shape[:2]
        needs_last = self.feedback or self.residual or self.linear is not None
        feats, nowcast = self._encode_inputs(
            x, encoded, return_nowcast or (last_target is None and needs_last)
        )
        hw = tuple(feats.shape[-2:])
        if static is not None:
            if tuple(static.shape) != (n, self.static_channels, *hw):
                raise ModelMismatchError(
                    f"static must have shape {(n, self.static_channels, *hw)}, got "
                    f"{tuple(static.shape)}; it must be on the forecast grid"
                )
            static = torch.nan_to_num(static)
        states = self._run_encoder(feats, static, past_covariates, grad_steps)

        last = None
        if needs_last:
            last, nowcast = self._last_target(x, feats, nowcast, last_target)
        fut = None
        if future_covariates is not None:
            fut = _as_maps(
                future_covariates,
                "future_covariates",
                n,
                horizon,
                self.future_covariate_channels,
                hw,
            )
        lin = None
        if self.linear is not None:
            if self.linear_lags > 1 and self.tile_encoder is not None and nowcast is None:
                nowcast = self._nowcast_from(feats)
            lin = self._linear_term(
                self._linear_inputs(x, last, nowcast, fut, static, horizon, feats)
            )
        if self.feedback:
            forecast, hidden = self._decode_feedback(
                states, last, fut, static, lin, horizon, return_quantiles
            )
        else:
            forecast, hidden = self._decode_direct(
                states, last, fut, static, lin, horizon, feats, return_quantiles
            )
        out = (forecast, nowcast) if return_nowcast else (forecast,)
        if return_quantiles:
            out = (*out, self._quantile_offsets(forecast, hidden))
        return out if len(out) > 1 else forecast

    # forward's steps: check → encode the inputs → run the recurrent encoder → decode (direct or feedback)
    def _check_inputs(
        self,
        x: torch.Tensor,
        horizon: int,
        static: torch.Tensor | None,
        past_covariates: torch.Tensor | None,
        future_covariates: torch.Tensor | None,
        return_nowcast: bool,
        grad_steps: int | None,
        encoded: bool,
    ) -> None:
        """Refuse arguments that do not fit the model (see :meth:`forward`'s Raises)."""
        _positive_int("horizon", horizon)
        if grad_steps is not None:
            _positive_int("grad_steps", grad_steps)
        if return_nowcast and self.tile_encoder is None:
            raise ConfigError(
                "return_nowcast=True needs an image encoder; build with encoder={...} or "
                "pass return_nowcast=False"
            )
        if encoded and self.tile_encoder is None:
            raise ConfigError(
                "encoded=True needs an image encoder; pass the grids with encoded=False"
            )
        want = self.feature_channels if encoded else self.in_channels
        if x.dim() != 5 or x.shape[2] != want:
            raise ModelMismatchError(
                f"x must have shape (N, T_in, {want}, H, W), got {tuple(x.shape)}; "
                "check the band count and stack the frames along dim 1"
            )
        self._check(static, "static", "static_channels", self.static_channels)
        self._check(
            past_covariates,
            "past_covariates",
            "past_covariate_channels",
            self.past_covariate_channels,
        )
        self._check(
            future_covariates,
            "future_covariates",
            "future_covariate_channels",
            self.future_covariate_channels,
        )
        t_in = x.shape[1]
        if self.linear is not None and horizon > self.linear_leads:
            raise ModelMismatchError(
                f"horizon={horizon} is longer than the {self.linear_leads} lead steps the model's "
                f"linear term was built for; forecast at most {self.linear_leads} steps"
            )
        if self.linear is not None and t_in < self.linear_lags:
            raise ModelMismatchError(
                f"the linear term reads the last {self.linear_lags} frames but x has {t_in}; "
                f"pass at least {self.linear_lags} input frames"
            )

    def _encode_inputs(
        self, x: torch.Tensor, encoded: bool, want_nowcast: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-cell inputs of the recurrent encoder (N, T_in, F, Hc, Wc) and the nowcast of the
        input frames (image path: from the count channels, or from the nowcast head where
        ``want_nowcast``; else ``None``). Grids: the values (NaN as 0) and their validity mask."""
        nowcast = None
        if encoded:
            feats = x
            if self.count_stage is not None:
                nowcast = x[:, :, -self.out_channels :]
            if nowcast is None and want_nowcast:
                nowcast = self._nowcast_from(feats)
        elif self.tile_encoder is not None:
            feats, nowcast = self._encode(x)
            if nowcast is None and want_nowcast:
                nowcast = self._nowcast_from(feats)
        else:
            clean, valid = split_valid(x)
            feats = torch.cat([clean, valid.to(clean.dtype)], 2)
        return feats, nowcast

    def _run_encoder(
        self,
        feats: torch.Tensor,
        static: torch.Tensor | None,
        past_covariates: torch.Tensor | None,
        grad_steps: int | None,
    ) -> list:
        """Run the recurrent encoder stack over the input frames (joined to the static layers
        and past covariates); its final states, one per layer."""
        n, t_in, hw = feats.shape[0], feats.shape[1], tuple(feats.shape[-2:])
        parts = [feats]
        if static is not None:
            parts.append(static[:, None].expand(n, t_in, *static.shape[1:]))
        if past_covariates is not None:
            parts.append(
                _as_maps(
                    past_covariates, "past_covariates", n, t_in, self.past_covariate_channels, hw
                )
            )
        seq = torch.cat(parts, 2) if len(parts) > 1 else feats
        states = [None] * len(self.encoder_cells)
        early = t_in - grad_steps if grad_steps is not None and torch.is_grad_enabled() else 0
        if early > 0:
            # truncated backpropagation through time: the early frames set the state, without a graph
            with torch.no_grad():
                prefix = seq[:, :early]
                for i, cell in enumerate(self.encoder_cells):
                    prefix, states[i] = cell.forward_sequence(prefix)
            seq = seq[:, early:]
        for i, cell in enumerate(self.encoder_cells):
            seq, states[i] = cell.forward_sequence(seq, states[i])
        return states

    def _last_target(
        self,
        x: torch.Tensor,
        feats: torch.Tensor,
        nowcast: torch.Tensor | None,
        last_target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last observed target (``last_target``, its gaps filled by the nowcast; else the
        nowcast or the grids' last frame), NaN as 0; and the nowcast (computed here if needed)."""
        n, hw = x.shape[0], tuple(feats.shape[-2:])
        if last_target is None:
            last = nowcast[:, -1] if nowcast is not None else x[:, -1, : self.out_channels]
        else:
            if tuple(last_target.shape) != (n, self.out_channels, *hw):
                raise ModelMismatchError(
                    f"last_target must have shape {(n, self.out_channels, *hw)}, got "
                    f"{tuple(last_target.shape)}"
                )
            last = last_target
            # a missing observation (no detection, cloud) falls back to the images' nowcast; an
            # exported graph (ONNX) cannot branch on the data, so it always takes the fallback path
            if self.tile_encoder is not None and (
                _exporting() or not bool(torch.isfinite(last).all())
            ):
                if nowcast is None:
                    nowcast = self._nowcast_from(feats)
                last = torch.where(torch.isfinite(last), last, nowcast[:, -1])
        return torch.nan_to_num(last), nowcast

    def _decode_direct(
        self,
        states: list,
        last: torch.Tensor | None,
        fut: torch.Tensor | None,
        static: torch.Tensor | None,
        lin: torch.Tensor | None,
        horizon: int,
        feats: torch.Tensor,
        keep_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``feedback=False``: the inputs of every lead step are known up front, so run layer by
        layer, each with one batched input projection -> (N, H, C_out, Hc, Wc), and with
        ``keep_hidden`` the hidden states the head read (N, H, sum(hidden), Hc, Wc), else None."""
        n, hw = feats.shape[0], tuple(feats.shape[-2:])
        stat_h = None if static is None else static[:, None].expand(n, horizon, *static.shape[1:])
        ins = [p for p in (fut, stat_h) if p is not None]
        seq = torch.cat(ins, 2) if ins else feats.new_zeros((n, horizon, 0, *hw))
        outs = []
        for cell, state in zip(self.forecaster_cells, states):
            seq, _ = cell.forward_sequence(seq, state)
            outs.append(seq)
        hcat = torch.cat(outs, 2).flatten(0, 1)
        y = self.head(hcat).unflatten(0, (n, horizon))
        if lin is not None:
            y = y + lin
        hidden = hcat.unflatten(0, (n, horizon)) if keep_hidden else None
        if self.residual:
            return self._residual(last[:, None], y), hidden
        return self._activate(y), hidden

    def _decode_feedback(
        self,
        states: list,
        last: torch.Tensor,
        fut: torch.Tensor | None,
        static: torch.Tensor | None,
        lin: torch.Tensor | None,
        horizon: int,
        keep_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``feedback=True``: one lead step at a time, each reading the previous prediction (the
        last observed target at the first) -> (N, H, C_out, Hc, Wc), and with ``keep_hidden`` the
        hidden states the head read at each step (N, H, sum(hidden), Hc, Wc), else None."""
        states = list(states)
        fut_steps = fut.unbind(1) if fut is not None else [None] * horizon
        prev = last
        lin_steps = lin.unbind(1) if lin is not None else [None] * horizon
        preds, kept = [], []
        for fut_t, lin_t in zip(fut_steps, lin_steps):
            inp = torch.cat([p for p in (prev, fut_t, static) if p is not None], 1)
            hs = []
            for k, cell in enumerate(self.forecaster_cells):
                inp, states[k] = cell.step(cell.input_projection(inp[:, None])[:, 0], states[k])
                hs.append(inp)
            prev = self._head(hs, last, lin_t)
            preds.append(prev)
            if keep_hidden:
                kept.append(torch.cat(hs, 1))
        return torch.stack(preds, 1), (torch.stack(kept, 1) if keep_hidden else None)
