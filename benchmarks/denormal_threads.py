"""Speed of a fine-tuning with denormal floats flushed in the calling thread only, or in every
thread of torch's OpenMP pool (``trafficrnn.numerics.flush_denormals``).

The flush-to-zero mode is a register of each thread; torch's parallel operations compute part of
their work in the pool's other threads. Each run fine-tunes a packaged-style ConvLSTM on the
sample as the demo does (``trafficrnn.zoo.FINE_TUNE``, 32-bit), with ``--minutes`` of wall time of
which stage A (counting) takes a quarter, so that stage B's epochs per second decide. Both modes
run side by side in one invocation, each fit in a process of its own; the calling-thread mode is
made by leaving the OpenMP runtime out (``numerics._openmp_runtime`` returning ``None``).

Run: ``python benchmarks/denormal_threads.py [--weights DIR ...] [--minutes 0.8]``: each DIR holds
a ``convlstm_1m64`` folder (default: the packaged one); writes
``benchmarks/results/denormal_threads.json`` (``--out``) with the command, the machine and stage B's
epochs, seconds and epochs per second of each run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _machine import machine  # benchmarks/_machine.py
from _scores import settings_from  # benchmarks/_scores.py

ROOT = Path(__file__).resolve().parent.parent


def one_run(weights: str, mode: str, minutes: float) -> dict:
    """Fine-tune from ``weights`` with denormals flushed in ``mode`` ("every thread" or "calling
    thread"): stage B's epochs and seconds."""
    import torch

    from trafficrnn import TrafficForecaster, numerics, zoo
    from trafficrnn.io import read_stack, read_vectors
    from trafficrnn.params import grouped

    torch.set_num_threads(2)
    if mode == "calling thread":
        numerics._openmp_runtime = lambda: None
    zoo.WEIGHTS = Path(weights)
    sample = ROOT / "data" / "sample"
    images = read_stack(sample / "images", allow_gaps=True)
    target = read_stack(sample / "density", allow_gaps=True)
    points = read_vectors(sample / "vehicles.gpkg")
    init = zoo.pretrained("convlstm")
    settings = settings_from(init.get_params(), 0, {"max_time": minutes, "count_share": 0.25})
    est = TrafficForecaster("convlstm", **grouped(settings))
    est.fit(images, target, vehicles=points, init=init)
    stage_b = est.training_summary_["counting"]["stage_b"]
    return {
        "weights": weights,
        "mode": mode,
        "stage_b_epochs": stage_b["epochs"],
        "stage_b_seconds": stage_b["seconds"],
        "epochs_per_second": round(stage_b["epochs"] / stage_b["seconds"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=[str(ROOT / "trafficrnn" / "weights")])
    parser.add_argument("--minutes", type=float, default=0.8)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "denormal_threads.json")
    )
    parser.add_argument("--one", nargs=2, metavar=("WEIGHTS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one run, printed as JSON
        print(json.dumps(one_run(*args.one, args.minutes)), flush=True)
        return
    runs = []
    for weights in args.weights:
        for mode in ("calling thread", "every thread"):
            # a process of its own each: the pool's threads start in the default mode
            out = subprocess.run(
                [sys.executable, __file__, "--minutes", str(args.minutes), "--one", weights, mode],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
        calling, every = runs[-2]["epochs_per_second"], runs[-1]["epochs_per_second"]
        runs[-1]["speed_ratio_to_calling_thread"] = round(every / calling, 2)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "minutes": args.minutes,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
