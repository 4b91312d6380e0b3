"""Tests of trafficrnn.numerics: denormal floats flushed to zero inside the block, the mode restored
after it, and fit and predict leaving the mode as they found it."""

from __future__ import annotations

import pytest
import torch

from trafficrnn.estimation import fitting
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.numerics import flush_denormals, flushing_denormals

from .test_estimator import FAST, density_series

DENORMAL = 2e-39  # below float32's smallest normal, 1.2e-38

pytestmark = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode (not SSE3)"
)


def test_flush_denormals__zero_inside_and_the_mode_restored():
    tiny = torch.tensor([DENORMAL], dtype=torch.float32)
    assert not flushing_denormals()
    assert float((tiny * 1.0)[0]) > 0
    with flush_denormals():
        assert flushing_denormals()
        assert float((tiny * 1.0)[0]) == 0.0
        assert float((torch.tensor([1e-30]) * 1.0)[0]) == pytest.approx(1e-30)  # normals kept
    assert not flushing_denormals()
    assert float((tiny * 1.0)[0]) > 0


def test_flush_denormals__every_thread_of_a_parallel_operation_flushes_then_none():
    # the mode is a register of each thread: a parallel operation's share computed by torch's
    # other OpenMP threads must flush too (a ConvLSTM's fine-tuning ran at little more than half
    # its speed on 2 threads when only the calling thread did)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        big = torch.full((1 << 20,), 1e-30)  # 32 parallel chunks and more: every thread has some
        assert int(((big * 2e-10) != 0).sum()) == big.numel()  # denormals, kept
        with flush_denormals():
            assert int(((big * 2e-10) != 0).sum()) == 0
            assert bool(((big * 2.0) == 2e-30).all())  # normals kept
        assert int(((big * 2e-10) != 0).sum()) == big.numel()
    finally:
        torch.set_num_threads(threads)


def test_flush_denormals__keeps_a_mode_set_before_it():
    torch.set_flush_denormal(True)
    try:
        with flush_denormals():
            assert flushing_denormals()
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)


def test_fit__trains_with_denormals_flushed_then_fit_and_predict_restore_the_mode(monkeypatch):
    seen = []
    train = fitting.train

    def spy(*args, **kwargs):  # the real training, noting the mode it runs under
        seen.append(flushing_denormals())
        return train(*args, **kwargs)

    monkeypatch.setattr(fitting, "train", spy)
    da = density_series(periods=40)
    est = TrafficForecaster("convlstm", **FAST).fit(da)
    assert seen == [True]
    assert not flushing_denormals()
    fc = est.predict(da)
    assert not flushing_denormals() and bool(fc.notnull().all())
