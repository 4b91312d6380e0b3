"""Convolutional recurrent cells (ConvLSTM, ConvGRU) with fused gates and a batched input projection.

Shared interface: ``input_projection(x_seq) -> (N, T, G*hidden, H, W)``, ``step(x_proj_t, state)
-> (h, state)``, ``forward_sequence(x_seq, state=None) -> (outputs (N, T, hidden, H, W), state)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trafficrnn.errors import ConfigError, ModelMismatchError
from trafficrnn.registry import Registry

State = tuple[torch.Tensor, ...]

__all__ = ["ConvLSTMCell", "ConvGRUCell", "CELLS", "get_cell", "list_cells", "State"]


def _check_int(name: str, value: object, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}; {fix}")
    return value


class _LSTMPointwise(torch.autograd.Function):
    """ConvLSTM gate math, with a hand-written backward.

    The backward writes the gate gradient into one (N, 4*hidden, H, W) buffer instead of
    letting autograd zero-fill and concatenate per-slice gradients (about 20 % of a step).
    """

    @staticmethod
    def forward(ctx, gates, c_prev):  # noqa: D102
        hid = gates.shape[1] // 4
        ifo = torch.sigmoid(gates[:, : 3 * hid])
        g = torch.tanh(gates[:, 3 * hid :])
        i, f, o = ifo.chunk(3, 1)
        c = i * g
        if c_prev is not None:
            c.addcmul_(f, c_prev)
        tc = torch.tanh(c)
        h = o * tc
        ctx.save_for_backward(ifo, g, tc, c_prev)
        ctx.set_materialize_grads(False)
        return h, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dc):  # noqa: D102
        ifo, g, tc, c_prev = ctx.saved_tensors
        hid = g.shape[1]
        i, f, o = ifo.chunk(3, 1)
        d_act = torch.empty_like(ifo)
        d_i, d_f, d_o = d_act.chunk(3, 1)
        dgates = torch.empty(
            (g.shape[0], 4 * hid, *g.shape[2:]), dtype=ifo.dtype, device=ifo.device
        )
        if dh is None:
            dh = torch.zeros_like(tc)
        torch.mul(dh, tc, out=d_o)
        dct = dh * o * (1 - tc * tc)  # dL/dc through h
        if dc is not None:
            dct = dct + dc
        torch.mul(dct, g, out=d_i)
        if c_prev is None:
            d_f.zero_()
            dc_prev = None
        else:
            torch.mul(dct, c_prev, out=d_f)
            dc_prev = dct * f
        torch.mul(d_act, ifo - ifo * ifo, out=dgates[:, : 3 * hid])
        torch.mul(dct * i, 1 - g * g, out=dgates[:, 3 * hid :])
        return dgates, dc_prev


class _GRUPointwise(torch.autograd.Function):
    """ConvGRU gate math (reset after the hidden conv) with a hand-written backward."""

    @staticmethod
    def forward(ctx, xp, hp, h_prev):  # noqa: D102
        hid = xp.shape[1] // 3
        if hp is None:
            z = torch.sigmoid(xp[:, hid : 2 * hid])
            n = torch.tanh(xp[:, 2 * hid :])
            h = n - z * n
            ctx.save_for_backward(z, n)
            return h
        # Function.forward runs without autograd: fresh temporaries may be updated in place.
        rz = torch.add(xp[:, : 2 * hid], hp[:, : 2 * hid]).sigmoid_()
        r, z = rz.chunk(2, 1)
        hn = hp[:, 2 * hid :]
        n = torch.addcmul(xp[:, 2 * hid :], r, hn).tanh_()
        h = n + z * (h_prev - n)  # (1 - z) * n + z * h_prev; lerp would need equal dtypes
        ctx.save_for_backward(rz, n, hn, h_prev)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh):  # noqa: D102
        saved = ctx.saved_tensors
        if len(saved) == 2:
            z, n = saved
            dxp = torch.empty(
                (n.shape[0], 3 * n.shape[1], *n.shape[2:]), dtype=z.dtype, device=z.device
            )
            hid = n.shape[1]
            dxp[:, :hid].zero_()
            torch.mul(dh * n, z * z - z, out=dxp[:, hid : 2 * hid])
            torch.mul(dh - dh * z, 1 - n * n, out=dxp[:, 2 * hid :])
            return dxp, None, None
        rz, n, hn, h_prev = saved
        hid = n.shape[1]
        r, z = rz.chunk(2, 1)
        dxp = torch.empty((n.shape[0], 3 * hid, *n.shape[2:]), dtype=rz.dtype, device=rz.device)
        dhp = torch.empty_like(dxp)
        dn_pre = dxp[:, 2 * hid :]
        torch.mul(dh - dh * z, 1 - n * n, out=dn_pre)
        d_rz = torch.empty_like(rz)
        torch.mul(dn_pre, hn, out=d_rz[:, :hid])
        torch.mul(dh, h_prev - n, out=d_rz[:, hid:])
        torch.mul(d_rz, rz - rz * rz, out=dxp[:, : 2 * hid])
        dhp[:, : 2 * hid].copy_(dxp[:, : 2 * hid])
        torch.mul(dn_pre, r, out=dhp[:, 2 * hid :])
        return dxp, dhp, dh * z


class _ConvRNNCell(nn.Module):
    """Base class: one fused input conv over all steps, one fused hidden conv per step.

    Parameters
    ----------
    input_channels : int
        Channels ``C`` of the input sequence; 0 means "no input": the input projection is
        then a learned constant (the bias), broadcast over the batch, time and grid.
    hidden_channels : int
        Channels of the hidden state.
    kernel_size : int
        Odd side of the square kernels of both convolutions ("same" padding).
    bias : bool
        Whether the input projection carries a bias (always on when ``input_channels`` is 0).

    Raises
    ------
    ConfigError
        If a size is not a positive int or ``kernel_size`` is even.
    """

    n_gates: int = 1
    n_state: int = 1

    def __init__(
        self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        _check_int("input_channels", input_channels, 0, "pass the channel count of the input")
        _check_int("hidden_channels", hidden_channels, 1, "pass e.g. hidden_channels=64")
        _check_int("kernel_size", kernel_size, 1, "pass an odd kernel size such as 3 or 5")
        if kernel_size % 2 == 0:
            raise ConfigError(
                f"kernel_size must be odd so that 'same' padding keeps the grid, got {kernel_size}; "
                "use 3 or 5"
            )
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        gate_ch = self.n_gates * hidden_channels
        if input_channels > 0:
            self.input_conv: nn.Conv2d | None = nn.Conv2d(
                input_channels, gate_ch, kernel_size, padding=self.padding, bias=bias
            )
            self.null_input = None
        else:
            self.input_conv = None
            self.null_input = nn.Parameter(torch.zeros(gate_ch))
        self.hidden_conv = nn.Conv2d(
            hidden_channels, gate_ch, kernel_size, padding=self.padding, bias=False
        )

    def input_projection(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Project every step of a sequence with one batched convolution (time folded into batch).

        Parameters
        ----------
        x_seq : Tensor, shape (N, T, C, H, W)

        Returns
        -------
        Tensor, shape (N, T, n_gates * hidden, H, W)

        Raises
        ------
        ModelMismatchError
            If ``x_seq`` is not 5-D or has the wrong channel count.
        """
        if x_seq.dim() != 5 or x_seq.shape[2] != self.input_channels:
            raise ModelMismatchError(
                f"{type(self).__name__} expects input (N, T, {self.input_channels}, H, W), "
                f"got shape {tuple(x_seq.shape)}; check the channel count of the input"
            )
        n, t, _, h, w = x_seq.shape
        if self.input_conv is None:
            gate_ch = self.null_input.shape[0]
            return self.null_input.view(1, 1, gate_ch, 1, 1).expand(n, t, gate_ch, h, w)
        y = self.input_conv(x_seq.flatten(0, 1))
        return y.unflatten(0, (n, t))

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zero state: a tuple of ``n_state`` tensors of shape (batch, hidden, height, width)."""
        ref = self.hidden_conv.weight
        return tuple(
            torch.zeros(
                batch,
                self.hidden_channels,
                height,
                width,
                device=device if device is not None else ref.device,
                dtype=dtype if dtype is not None else ref.dtype,
            )
            for _ in range(self.n_state)
        )

    def hidden_projection(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden-to-hidden gate pre-activations, (N, hidden, H, W) -> (N, n_gates*hidden, H, W)."""
        return F.conv2d(h, self.hidden_conv.weight, None, 1, self.padding)

    def step(self, x_proj_t: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Advance one time step.

        Parameters
        ----------
        x_proj_t : Tensor, shape (N, n_gates * hidden, H, W)
            This step's slice of :meth:`input_projection`.
        state : tuple of Tensor (N, hidden, H, W), or None
            None means a zero state (the hidden convolution is then skipped).

        Returns
        -------
        h : Tensor, shape (N, hidden, H, W)
        state : tuple of Tensor (N, hidden, H, W)
        """
        raise NotImplementedError

    def forward_sequence(
        self, x_seq: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Run the cell over a whole sequence.

        Parameters
        ----------
        x_seq : Tensor, shape (N, T, C, H, W)
        state : tuple of Tensor (N, hidden, H, W), or None for a zero state

        Returns
        -------
        outputs : Tensor, shape (N, T, hidden, H, W)
            Hidden state after every step.
        state : tuple of Tensor (N, hidden, H, W)
            State after the last step.

        Raises
        ------
        ModelMismatchError
            If ``x_seq`` does not have ``input_channels`` channels.
        """
        outputs = []
        for xp_t in self.input_projection(x_seq).unbind(1):
            h, state = self.step(xp_t, state)
            outputs.append(h)
        return torch.stack(outputs, 1), state

    forward = forward_sequence

    def extra_repr(self) -> str:
        return (
            f"input_channels={self.input_channels}, hidden_channels={self.hidden_channels}, "
            f"kernel_size={self.kernel_size}"
        )


class ConvLSTMCell(_ConvRNNCell):
    """ConvLSTM cell (Shi et al., 2015); the four gates come out of one fused convolution.

    Parameters
    ----------
    input_channels, hidden_channels, kernel_size, bias
        See the base class: ``input_channels`` may be 0 (learned constant input).

    State is ``(h, c)``, each (N, hidden, H, W). Gate channel order: input, forget, output, cell.

    Raises
    ------
    ConfigError
        If a size is not a positive int or ``kernel_size`` is even.
    """

    n_gates = 4
    n_state = 2

    def __init__(
        self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__(input_channels, hidden_channels, kernel_size, bias)
        # Forget-gate bias of 1: remember by default (Jozefowicz et al., 2015).
        bias_param = self.input_conv.bias if self.input_conv is not None else self.null_input
        if bias_param is not None:
            with torch.no_grad():
                bias_param[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def step(self, x_proj_t: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if state is None:
            gates = x_proj_t
            c_prev = None
        else:
            h_prev, c_prev = state
            gates = x_proj_t + self.hidden_projection(h_prev)
        h, c = _LSTMPointwise.apply(gates, c_prev)
        return h, (h, c)


class ConvGRUCell(_ConvRNNCell):
    """ConvGRU cell with the reset gate applied after the hidden convolution (cuDNN-style).

    ``r, z = sigmoid(Wx*x + Wh*h)``, ``n = tanh(Wx_n*x + r * (Wh_n*h))``,
    ``h' = (1 - z) * n + z * h``: all three hidden terms come from one fused convolution,
    so a step costs 3/4 of a ConvLSTM step at equal width. State is ``(h,)``.

    Parameters
    ----------
    input_channels, hidden_channels, kernel_size, bias
        See the base class.

    Raises
    ------
    ConfigError
        If a size is not a positive int or ``kernel_size`` is even.
    """

    n_gates = 3
    n_state = 1

    def step(self, x_proj_t: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if state is None:
            h = _GRUPointwise.apply(x_proj_t, None, None)
        else:
            (h_prev,) = state
            h = _GRUPointwise.apply(x_proj_t, self.hidden_projection(h_prev), h_prev)
        return h, (h,)


#: name -> cell class, built as ``cls(input_channels, hidden_channels, kernel_size, **CELL_KWARGS)``
CELLS: Registry[type[_ConvRNNCell]] = Registry("cell", {"lstm": ConvLSTMCell, "gru": ConvGRUCell})
#: the arguments of every cell besides the sizes that the EncoderForecaster sets (its ``cell_kwargs``)
CELL_KWARGS = ("bias",)


def check_cell_kwargs(name: str, kwargs: dict) -> None:
    """Refuse arguments that no cell takes (``cell_kwargs`` of the EncoderForecaster).

    Raises
    ------
    TypeError
        Naming the unknown arguments and listing the valid ones.
    """
    unknown = sorted(set(kwargs) - set(CELL_KWARGS))
    if unknown:
        raise TypeError(
            f"cell {name!r} got unexpected argument(s) {', '.join(map(repr, unknown))}; valid cell "
            f"arguments: {', '.join(CELL_KWARGS)}"
        )


def list_cells() -> list[str]:
    """Names accepted by :func:`get_cell`."""
    return CELLS.names()


def get_cell(name: str) -> type[_ConvRNNCell]:
    """Cell class by name (case-insensitive): ``"lstm"`` or ``"gru"``.

    Raises
    ------
    UnknownNameError
        If ``name`` is not a registered cell (a ``ConfigError``, hence a ``ValueError``); the message
        lists the valid names.
    """
    return CELLS.get(name)
