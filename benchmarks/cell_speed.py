"""Forward+backward speed of our ConvLSTM/ConvGRU stacks against a textbook ConvLSTM and a
conv-only reference on the same convolution shapes; writes benchmarks/results/cell_speed.json.

Run: ``python benchmarks/cell_speed.py [--repeats 7]`` (re-executes itself with the glibc malloc
tunables of DESIGN.md so that big conv buffers are not handed back to the OS on every call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _machine import TUNABLES as _MALLOC  # benchmarks/_machine.py
from _machine import reexec_with_tunables

TUNABLES = _MALLOC + ":glibc.malloc.hugetlb=1"  # and huge pages
reexec_with_tunables(TUNABLES)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _machine import cpu  # noqa: E402  (benchmarks/_machine.py)
from torch import nn  # noqa: E402

from trafficrnn.models.cells import ConvGRUCell, ConvLSTMCell  # noqa: E402

N, T, C, HID, S, K, LAYERS = 8, 12, 64, 64, 32, 3, 2


class TextbookConvLSTM(nn.Module):
    """Shi et al. as usually written: cat([x_t, h]) -> one conv per step, ``x[:, t]`` slicing."""

    def __init__(self, cin: int, hid: int) -> None:
        super().__init__()
        self.hid = hid
        self.conv = nn.Conv2d(cin + hid, 4 * hid, K, padding=K // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _, h, w = x.shape
        hh = x.new_zeros(n, self.hid, h, w)
        c = x.new_zeros(n, self.hid, h, w)
        outs = []
        for i in range(t):
            gi, gf, gg, go = self.conv(torch.cat([x[:, i], hh], 1)).chunk(4, 1)
            c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
            hh = torch.sigmoid(go) * torch.tanh(c)
            outs.append(hh)
        return torch.stack(outs, 1)


class Stack(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x) if isinstance(layer, TextbookConvLSTM) else layer.forward_sequence(x)[0]
        return x


def conv_only(gates: int, bf16: bool):
    """The conv calls our cells make (batched input projection, T-1 hidden convs per layer)."""
    w_in = [torch.randn(gates * HID, c, K, K, requires_grad=True) for c in (C, HID)]
    w_h = [torch.randn(gates * HID, HID, K, K, requires_grad=True) for _ in range(LAYERS)]
    x0 = torch.randn(N * T, C, S, S)
    x1 = torch.randn(N * T, HID, S, S, requires_grad=True)
    hs = [torch.randn(N, HID, S, S, requires_grad=True) for _ in range(T - 1)]

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ys = [F.conv2d(x0, w_in[0], padding=1), F.conv2d(x1, w_in[1], padding=1)]
            ys += [F.conv2d(h, w, padding=1) for w in w_h for h in hs]
        torch.autograd.backward([y.float().sum() for y in ys])

    fwd = 2 * K * K * gates * HID * S * S * (N * T * (C + HID) + LAYERS * N * (T - 1) * HID)
    bwd_in = 2 * K * K * gates * HID * S * S * (N * T * HID + LAYERS * N * (T - 1) * HID)
    return run, 2 * fwd + bwd_in  # fwd + grad-weight (= fwd) + grad-input where needed


def nominal_flops(gates: int) -> int:
    """Textbook-equivalent conv FLOPs of fwd+bwd (3x forward), same count for every variant."""
    per_layer = [2 * K * K * (cin + HID) * gates * HID * N * T * S * S for cin in (C, HID)]
    return 3 * sum(per_layer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cell_speed.json"))
    ap.add_argument("--no-reexec", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(N, T, C, S, S)
    models = {
        "textbook_lstm": Stack([TextbookConvLSTM(C, HID), TextbookConvLSTM(HID, HID)]),
        "convlstm": Stack([ConvLSTMCell(C, HID, K), ConvLSTMCell(HID, HID, K)]),
        "convgru": Stack([ConvGRUCell(C, HID, K), ConvGRUCell(HID, HID, K)]),
    }

    def fwd_bwd(model: nn.Module, bf16: bool):
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = model(x)
            y.float().sum().backward()

        return run

    cases = {
        "textbook_lstm_fp32": (fwd_bwd(models["textbook_lstm"], False), 4),
        "convlstm_fp32": (fwd_bwd(models["convlstm"], False), 4),
        "convgru_fp32": (fwd_bwd(models["convgru"], False), 3),
        "textbook_lstm_bf16": (fwd_bwd(models["textbook_lstm"], True), 4),
        "convlstm_bf16": (fwd_bwd(models["convlstm"], True), 4),
        "convgru_bf16": (fwd_bwd(models["convgru"], True), 3),
    }
    refs = {
        f"conv_only_{g}gates_{p}": conv_only(g, p == "bf16")
        for g in (4, 3)
        for p in ("fp32", "bf16")
    }
    runs = {**{k: v[0] for k, v in cases.items()}, **{k: v[0] for k, v in refs.items()}}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: oneDNN primitives, allocator caches
        fn()
        fn()
    for _ in range(args.repeats):  # interleaved rounds
        for name, fn in runs.items():
            for m in models.values():
                m.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    results = {}
    for name, (_, gates) in cases.items():
        prec = name.rsplit("_", 1)[1]
        ref = f"conv_only_{gates}gates_{prec}"
        results[name] = {
            "median_s": med[name],
            "min_s": min(times[name]),
            "all_s": times[name],
            "nominal_gflop": nominal_flops(gates) / 1e9,
            "nominal_gflops_per_s": nominal_flops(gates) / med[name] / 1e9,
            "conv_only_reference_s": med[ref],
            "fraction_of_conv_only_speed": med[ref] / med[name],
        }
    for name, (_, flops) in refs.items():
        results[name] = {
            "median_s": med[name],
            "min_s": min(times[name]),
            "all_s": times[name],
            "executed_gflop": flops / 1e9,
            "gflops_per_s": flops / med[name] / 1e9,
        }

    def target_table(t: dict[str, float]) -> dict:
        tb = t["textbook_lstm_fp32"]
        vals = {
            "fp32_convlstm_speedup_vs_textbook": (tb / t["convlstm_fp32"], 1.0),
            "fp32_convlstm_fraction_of_conv_only": (
                t["conv_only_4gates_fp32"] / t["convlstm_fp32"],
                0.85,
            ),
            "fp32_convgru_fraction_of_conv_only": (
                t["conv_only_3gates_fp32"] / t["convgru_fp32"],
                0.85,
            ),
            "bf16_convlstm_speedup_vs_textbook_fp32": (tb / t["convlstm_bf16"], 1.7),
            "convgru_speedup_vs_convlstm_fp32": (t["convlstm_fp32"] / t["convgru_fp32"], 1.2),
            "convgru_speedup_vs_convlstm_bf16": (t["convlstm_bf16"] / t["convgru_bf16"], 1.2),
        }
        return {k: {"value": v, "target": f">= {g}", "met": v >= g} for k, (v, g) in vals.items()}

    mins = {k: min(v) for k, v in times.items()}
    targets = {"from_median_times": target_table(med), "from_min_times": target_table(mins)}
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "env": {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu": cpu(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "shape": {
            "batch": N,
            "steps": T,
            "in_channels": C,
            "hidden": HID,
            "layers": LAYERS,
            "grid": [S, S],
            "kernel": K,
        },
        "notes": (
            "times: median of interleaved repeats after 2 warm-up runs, fwd+bwd of the whole "
            "stack (input without grad). nominal_gflops_per_s counts the textbook conv FLOPs "
            "(3x forward) for every variant; conv_only_* executes exactly the conv calls our "
            "cells make (batched input projection, T-1 hidden convs, grad-input only where "
            "needed) and fraction_of_conv_only_speed = t_conv_only / t_model. The 2 cores are shared "
            "with other jobs: a contended round can be 2-5x slower, so targets are given from "
            "median and from min times (min = least-disturbed run)."
        ),
        "repeats": args.repeats,
        "results": results,
        "targets": targets,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for k, v in results.items():
        print(f"{k:24s} median {v['median_s']:.3f} s  min {v['min_s']:.3f} s")
    for basis, table in targets.items():
        for k, v in table.items():
            flag = "met" if v["met"] else "MISSED"
            print(f"{basis:17s} {k:40s} {v['value']:.2f} (target {v['target']}) {flag}")


if __name__ == "__main__":
    main()
