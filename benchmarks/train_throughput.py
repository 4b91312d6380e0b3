"""Training throughput on this machine's cores: one model on all cores, or one model per core side by side
(what ``ForecastEnsemble(n_jobs=...)`` does), and fp32 against bf16-mixed autocast.

Run: ``python benchmarks/train_throughput.py [--seconds 8] [--batch 16]``; writes
``benchmarks/results/train_throughput.json``. The network is the NYC benchmark's encoder-forecaster
(2 x 32 hidden, 3 x 3 kernels, 12 steps in, 6 out, 14 x 8 grid, 2 target bands, 13 known-in-advance
channels, 2 static channels, residual on the last frame, direct decoding) on random tensors: one
training step is forward, MSE loss, backward and an AdamW step. Every configuration is timed for the
same wall time, one after another in one run, so that the ratios are comparable; the processes run side
by side start together (a barrier) and each counts its own steps. Re-executes itself with the glibc malloc
tunables of DESIGN.md.

``--widths 32,32 32 48`` instead times one-thread training (one ensemble member's share) of each model at
those hidden layouts and writes ``benchmarks/results/train_throughput_widths.json``: what a narrower or
shallower network buys in epochs within a fixed time budget. ``--bptt 12 6 4`` times one-thread training of the
2 x 32 network with truncated backpropagation through the last 12 / 6 / 4 input frames (``bptt_steps``; 12 is
all of them) and writes ``benchmarks/results/train_throughput_bptt.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

from _machine import reexec_with_tunables  # noqa: E402  (benchmarks/_machine.py)

if __name__ == "__main__":
    reexec_with_tunables()

from _machine import cpu  # noqa: E402  (benchmarks/_machine.py)

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
T_IN, HORIZON, GRID, BANDS, KNOWN, STATIC, HIDDEN = 12, 6, (14, 8), 2, 13, 2, (32, 32)


def windows_per_second(
    model: str,
    batch: int,
    seconds: float,
    threads: int,
    bf16: bool = False,
    barrier=None,
    hidden: tuple[int, ...] = HIDDEN,
    grad_steps: int | None = None,
) -> dict:
    """Train on random windows for ``seconds`` of wall time; windows (samples) per second and ms per step."""
    import torch

    from trafficrnn.models import get_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = get_model(
        model,
        in_channels=BANDS,
        out_channels=BANDS,
        hidden_channels=list(hidden),
        kernel_size=3,
        past_covariate_channels=KNOWN,
        future_covariate_channels=KNOWN,
        static_channels=STATIC,
        residual=True,
        feedback=False,
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(batch, T_IN, BANDS, *GRID)
    past, future = torch.randn(batch, T_IN, KNOWN, *GRID), torch.randn(batch, HORIZON, KNOWN, *GRID)
    static, y = torch.randn(batch, STATIC, *GRID), torch.randn(batch, HORIZON, BANDS, *GRID)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(
                x,
                horizon=HORIZON,
                past_covariates=past,
                future_covariates=future,
                static=static,
                grad_steps=grad_steps,
            )
        loss = ((out.float() - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if barrier is not None:
        barrier.wait()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - started
    return {
        "steps": steps,
        "seconds": round(elapsed, 3),
        "ms_per_step": round(1000 * elapsed / steps, 1),
        "windows_per_second": round(steps * batch / elapsed, 2),
    }


def _worker(args) -> dict:
    model, batch, seconds, barrier = args
    return windows_per_second(model, batch, seconds, threads=1, barrier=barrier)


def side_by_side(model: str, batch: int, seconds: float, processes: int) -> dict:
    """``processes`` one-thread trainings at once; their windows per second summed."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            runs = pool.map(_worker, [(model, batch, seconds, barrier)] * processes)
    return {
        "processes": processes,
        "runs": runs,
        "windows_per_second": round(sum(r["windows_per_second"] for r in runs), 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="timed wall time per configuration"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--widths",
        nargs="+",
        default=None,
        metavar="H1[,H2...]",
        help="instead: one-thread throughput of each model with these hidden layouts (e.g. 32,32 32 48), "
        "one after another, written to results/train_throughput_widths.json",
    )
    parser.add_argument(
        "--bptt",
        nargs="+",
        type=int,
        default=None,
        metavar="STEPS",
        help="instead: one-thread throughput with truncated backpropagation through the last STEPS "
        "input frames (e.g. 12 6 4), written to results/train_throughput_bptt.json",
    )
    args = parser.parse_args(argv)

    import torch

    cores = len(os.sched_getaffinity(0))
    if args.widths:
        return compare_widths(
            args, [tuple(int(h) for h in w.split(",")) for w in args.widths], torch
        )
    if args.bptt:
        return compare_bptt(args, args.bptt, torch)
    results = {}
    for model in args.models:
        one = windows_per_second(model, args.batch, args.seconds, threads=cores)
        many = side_by_side(model, args.batch, args.seconds, cores) if cores > 1 else None
        bf16 = windows_per_second(model, args.batch, args.seconds, threads=cores, bf16=True)
        results[model] = {
            f"one_process_{cores}_threads_fp32": one,
            f"{cores}_processes_1_thread_fp32": many,
            f"one_process_{cores}_threads_bf16_mixed": bf16,
            "ratio_side_by_side_to_one_process": round(
                many["windows_per_second"] / one["windows_per_second"], 3
            )
            if many
            else None,
            "ratio_bf16_to_fp32": round(bf16["windows_per_second"] / one["windows_per_second"], 3),
        }
        line = f"{model}: one process x {cores} threads {one['windows_per_second']:.1f} windows/s"
        if many:
            line += f", {cores} processes x 1 thread {many['windows_per_second']:.1f} windows/s together"
        print(line + f", bf16-mixed {bf16['windows_per_second']:.1f} windows/s", flush=True)
    report = {
        "command": _command(),
        "machine": _machine(torch),
        "shape": {
            "batch": args.batch,
            "input_steps": T_IN,
            "horizon": HORIZON,
            "grid": list(GRID),
            "bands": BANDS,
            "known_in_advance_channels": KNOWN,
            "static_channels": STATIC,
            "hidden": list(HIDDEN),
            "kernel": 3,
        },
        "timed_seconds_per_configuration": args.seconds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _command() -> str:
    return " ".join(
        ["python benchmarks/train_throughput.py", *(a for a in sys.argv[1:] if a != "--no-reexec")]
    )


def _machine(torch) -> dict:
    return {
        "platform": platform.platform(),
        "cpu": cpu(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
    }


def compare_bptt(args, steps: list[int], torch) -> dict:
    """One-thread windows per second with truncated backpropagation through the last ``s`` input frames (the
    forecast is the same; only the backward pass is shorter), and the ratio to the first setting; the settings
    alternate over two rounds so that a drift of the machine's speed hits them alike."""
    bad = [s for s in steps if not 1 <= s <= T_IN]
    if bad:
        raise SystemExit(f"--bptt {bad[0]} is out of range: expected 1..{T_IN} input frames")
    results: dict = {}
    for model in args.models:
        rounds = [
            {
                s: windows_per_second(model, args.batch, args.seconds / 2, threads=1, grad_steps=s)
                for s in steps
            }
            for _ in range(2)
        ]
        runs = {}
        for s in steps:
            wps = sum(r[s]["windows_per_second"] for r in rounds) / 2
            runs[f"last_{s}_of_{T_IN}"] = {
                "grad_steps": s,
                "rounds": [r[s] for r in rounds],
                "windows_per_second": round(wps, 2),
            }
        first = next(iter(runs.values()))["windows_per_second"]
        for run in runs.values():
            run["ratio_to_first"] = round(run["windows_per_second"] / first, 3)
        results[model] = runs
        print(
            f"{model}: "
            + ", ".join(
                f"last {r['grad_steps']} frames {r['windows_per_second']:.1f} windows/s "
                f"({r['ratio_to_first']:.2f}x)"
                for r in runs.values()
            ),
            flush=True,
        )
    out = args.out if args.out != RESULTS else RESULTS.with_name("train_throughput_bptt.json")
    report = {
        "command": _command(),
        "machine": _machine(torch),
        "shape": {
            "batch": args.batch,
            "input_steps": T_IN,
            "horizon": HORIZON,
            "grid": list(GRID),
            "bands": BANDS,
            "known_in_advance_channels": KNOWN,
            "static_channels": STATIC,
            "hidden": list(HIDDEN),
            "kernel": 3,
            "threads": 1,
        },
        "timed_seconds_per_configuration": args.seconds,
        "note": "one configuration at a time, one torch thread each, in two alternating rounds of half the time; "
        "the other core idle",
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def compare_widths(args, widths: list[tuple[int, ...]], torch) -> dict:
    """One-thread windows per second (what each member of an ensemble trained side by side gets) of every
    model at every hidden layout, and the ratio to the first layout."""
    results = {}
    for model in args.models:
        runs = {
            ",".join(map(str, w)): windows_per_second(
                model, args.batch, args.seconds, threads=1, hidden=w
            )
            for w in widths
        }
        first = next(iter(runs.values()))["windows_per_second"]
        for run in runs.values():
            run["ratio_to_first"] = round(run["windows_per_second"] / first, 3)
        results[model] = runs
        print(
            f"{model}: "
            + ", ".join(
                f"[{k}] {r['windows_per_second']:.1f} windows/s ({r['ratio_to_first']:.2f}x)"
                for k, r in runs.items()
            ),
            flush=True,
        )
    out = args.out if args.out != RESULTS else RESULTS.with_name("train_throughput_widths.json")
    report = {
        "command": _command(),
        "machine": _machine(torch),
        "shape": {
            "batch": args.batch,
            "input_steps": T_IN,
            "horizon": HORIZON,
            "grid": list(GRID),
            "bands": BANDS,
            "known_in_advance_channels": KNOWN,
            "static_channels": STATIC,
            "kernel": 3,
            "threads": 1,
        },
        "timed_seconds_per_configuration": args.seconds,
        "note": "one configuration at a time, one torch thread each; the other core idle",
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
