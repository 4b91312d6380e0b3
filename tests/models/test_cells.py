"""Tests of trafficrnn.models.cells: ConvLSTM/ConvGRU cells and their registry."""

from __future__ import annotations

import pytest
import torch

from trafficrnn.errors import ConfigError, ModelMismatchError
from trafficrnn.models import ConvGRUCell, ConvLSTMCell, get_cell
from trafficrnn.models.cells import _GRUPointwise, _LSTMPointwise, list_cells

CELL_CASES = {
    "lstm": lambda: ConvLSTMCell(3, 4),
    "gru": lambda: ConvGRUCell(3, 4),
    "gru_k5": lambda: ConvGRUCell(3, 4, kernel_size=5),
}


@pytest.mark.parametrize("case", sorted(CELL_CASES))
def test_forward_sequence__contract(case):
    torch.manual_seed(0)
    cell = CELL_CASES[case]()
    x = torch.randn(2, 3, 3, 5, 6)
    out, state = cell.forward_sequence(x)
    assert out.shape == (2, 3, 4, 5, 6)
    assert len(state) == cell.n_state and all(s.shape == (2, 4, 5, 6) for s in state)
    torch.testing.assert_close(out[:, -1], state[0])
    # step-by-step with the same projection gives the same result
    st = None
    for t, xp in enumerate(cell.input_projection(x).unbind(1)):
        h, st = cell.step(xp, st)
        torch.testing.assert_close(h, out[:, t])
    # an explicit zero state equals the implicit one
    out0, _ = cell.forward_sequence(x, cell.init_state(2, 5, 6))
    torch.testing.assert_close(out0, out)
    # backward reaches every parameter with finite gradients
    (out.square().sum() + state[-1].sum()).backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf, _ = cell.forward_sequence(x)
    assert out_bf.shape == out.shape
    assert torch.isfinite(out_bf).all()
    torch.testing.assert_close(out_bf.float(), out, atol=0.05, rtol=0.05)


def test_step__lstm_matches_textbook_formula():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3)
    x = torch.randn(2, 4, 2, 5, 5)
    out, _ = cell.forward_sequence(x)
    weight = torch.cat([cell.input_conv.weight, cell.hidden_conv.weight], 1)
    h = c = torch.zeros(2, 3, 5, 5)
    for t in range(4):
        g = torch.nn.functional.conv2d(
            torch.cat([x[:, t], h], 1), weight, cell.input_conv.bias, padding=1
        )
        i, f, o, gg = g.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(out[:, t], h)


def test_step__gru_matches_reference_formula():
    torch.manual_seed(0)
    cell = ConvGRUCell(2, 3)
    x = torch.randn(2, 4, 2, 5, 5)
    out, _ = cell.forward_sequence(x)
    h = torch.zeros(2, 3, 5, 5)
    for t in range(4):
        xr, xz, xn = cell.input_conv(x[:, t]).chunk(3, 1)
        hr, hz, hn = torch.nn.functional.conv2d(h, cell.hidden_conv.weight, padding=1).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        torch.testing.assert_close(out[:, t], h)


def test_pointwise__gradcheck():
    torch.manual_seed(0)
    d = torch.double
    gates = torch.randn(2, 8, 3, 3, dtype=d, requires_grad=True)
    c = torch.randn(2, 2, 3, 3, dtype=d, requires_grad=True)
    xp = torch.randn(2, 6, 3, 3, dtype=d, requires_grad=True)
    hp = torch.randn(2, 6, 3, 3, dtype=d, requires_grad=True)
    h = torch.randn(2, 2, 3, 3, dtype=d, requires_grad=True)
    assert torch.autograd.gradcheck(_LSTMPointwise.apply, (gates, c))
    assert torch.autograd.gradcheck(lambda g: _LSTMPointwise.apply(g, None), (gates,))
    assert torch.autograd.gradcheck(lambda g: _LSTMPointwise.apply(g, None)[0], (gates,))
    assert torch.autograd.gradcheck(_GRUPointwise.apply, (xp, hp, h))
    assert torch.autograd.gradcheck(lambda a: _GRUPointwise.apply(a, None, None), (xp,))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_input_projection__zero_input_channels_is_learned_constant(name):
    cell = get_cell(name)(0, 4)
    out, _ = cell.forward_sequence(torch.zeros(2, 3, 0, 5, 5))
    assert out.shape == (2, 3, 4, 5, 5)
    out.sum().backward()
    assert cell.null_input.grad is not None and cell.null_input.grad.abs().sum() > 0


def test_get_cell__case_insensitive():
    assert get_cell("LSTM") is ConvLSTMCell
    assert get_cell("Gru") is ConvGRUCell
    assert list_cells() == ["gru", "lstm"]


def test_get_cell__unknown_name():
    with pytest.raises(ValueError, match=r"unknown cell 'rnn': expected one of \['gru', 'lstm'\]"):
        get_cell("rnn")


def test_cell__bad_hidden_channels():
    with pytest.raises(ConfigError, match="hidden_channels must be an int >= 1, got 0"):
        ConvLSTMCell(3, 0)


def test_cell__even_kernel():
    with pytest.raises(ConfigError, match="kernel_size must be odd.*got 4"):
        ConvGRUCell(3, 4, kernel_size=4)


def test_input_projection__wrong_channels():
    with pytest.raises(ModelMismatchError, match="expects input \\(N, T, 3, H, W\\), got shape"):
        ConvLSTMCell(3, 4).forward_sequence(torch.zeros(1, 2, 5, 4, 4))
