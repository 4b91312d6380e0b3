"""CPU inference time of an exported model in onnxruntime against the same model in torch, on the same
input; writes benchmarks/results/onnx_speed.json.

Run: ``python benchmarks/onnx_speed.py [--repeats 15] [--models convgru convlstm]``. Two settings:
the demo's image path (8 frames in, 6 leads, hidden (32, 32), encoder width 16, an 8 x 8 grid of
64 px tiles from 512 x 512 px RGB frames) and a density-only 32 x 32 grid (8 in, 6 leads, hidden
(32, 32)). Each model is fitted for one epoch on random frames (speed does not depend on the
weights), exported with ``TrafficForecaster.export_onnx``, and timed two ways, torch and
onnxruntime one after the other on the same machine with the same thread count: the network alone
on the prepared tensors of one forecast (batch 1) and of 8 forecasts (batch 8), and a whole
``predict`` (input checks, normalisation, calendar channels, the network, the georeferenced
DataArray). Each is warmed up, then the median (and min) of ``--repeats`` runs is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from _machine import machine  # benchmarks/_machine.py
from affine import Affine

from trafficrnn import Grid, TrafficForecaster
from trafficrnn.onnx import OnnxForecaster
from trafficrnn.params import grouped

OUT = Path(__file__).parent / "results" / "onnx_speed.json"
CRS = "EPSG:32633"
COMMON = dict(
    input_steps=8,
    horizon=6,
    hidden=(32, 32),
    max_epochs=1,
    batch_size=4,
    val=0,
    test=0,
    max_time=None,
    progress=False,
)
FRAMES = 16  # 2 training windows of 8 + 6 frames: the fit only has to produce a fitted state


def _stack(values: np.ndarray, grid: Grid, bands: list[str]) -> xr.DataArray:
    times = pd.date_range("2024-06-03", periods=len(values), freq="15min")
    da = xr.DataArray(
        values.astype("float32"),
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": bands},
    )
    return grid.attach(da)


def image_case(rng: np.random.Generator) -> tuple[dict, xr.DataArray, xr.DataArray | None]:
    """The demo's image path: 512 px RGB frames at 1 m, 64 px tiles -> 8 x 8 cells."""
    pixels = Grid(CRS, Affine(1, 0, 600000, 0, -1, 5340000), (512, 512))
    cells = Grid(CRS, pixels.transform * Affine.scale(64), (8, 8), 64)
    images = _stack(rng.uniform(0, 255, (FRAMES, 3, 512, 512)), pixels, ["red", "green", "blue"])
    target = _stack(rng.poisson(3.0, (FRAMES, 1, 8, 8)), cells, ["density"])
    return dict(tile_size=64, encoder_width=16), images, target


def density_case(rng: np.random.Generator) -> tuple[dict, xr.DataArray, xr.DataArray | None]:
    """Density-only: the stack is its own target, a 32 x 32 grid of 100 m cells."""
    grid = Grid(CRS, Affine(100, 0, 500000, 0, -100, 5000000), (32, 32))
    return {}, _stack(rng.poisson(5.0, (FRAMES, 1, 32, 32)), grid, ["density"]), None


CASES = {"images_8x8": image_case, "density_32x32": density_case}


def _time(run, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def _prepared(est: TrafficForecaster, images: xr.DataArray) -> dict:
    """The tensors ``predict`` hands the torch network (captured from one call)."""
    seen = {}
    forward = est.model_.forward

    def spy(x, **kw):
        seen.update(kw, x=x)
        return forward(x, **kw)

    est.model_.forward = spy
    try:
        est.predict(images)
    finally:
        del est.model_.forward
    return seen


def bench(name: str, model: str, case, repeats: int, threads: int, folder: Path) -> dict:
    settings, images, target = case(np.random.default_rng(0))
    began = time.perf_counter()
    est = TrafficForecaster(model, **grouped(settings, COMMON)).fit(images, target)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    path = est.export_onnx(folder / f"{name}-{model}.onnx")
    export_s = time.perf_counter() - began
    runner = OnnxForecaster(path, threads=threads)
    session = runner.forecaster.model_.session
    prepared = _prepared(est, images)
    kwargs = {k: v for k, v in prepared.items() if k not in ("x", "horizon", "encoded")}
    row = {
        "case": name,
        "model": model,
        "grid": list(est.grid_.shape),
        "tile_size": est.grid_.tile_size,
        "fit_seconds": round(fit_s, 1),
        "export_seconds": round(export_s, 1),
        "onnx_bytes": path.stat().st_size,
    }
    for batch in (1, 8):
        x = prepared["x"].expand(batch, *prepared["x"].shape[1:]).contiguous()
        extra = {k: v.expand(batch, *v.shape[1:]).contiguous() for k, v in kwargs.items()}
        net = runner.forecaster.model_

        def run_torch(x=x, extra=extra):
            with torch.inference_mode():
                est.model_(x, horizon=est.horizon, **extra)

        def run_onnx(x=x, extra=extra, net=net):
            net(x, horizon=est.horizon, **extra)

        row[f"network_batch{batch}"] = _ratio(_time(run_torch, repeats), _time(run_onnx, repeats))
    row["predict"] = _ratio(
        _time(lambda: est.predict(images), repeats),
        _time(lambda: runner.predict(images), repeats),
    )
    got, want = runner.predict(images).values, est.predict(images).values
    row["max_abs_difference"] = float(np.max(np.abs(got - want)))
    row["onnx_providers"] = session.get_providers()
    return row


def _ratio(torch_t: dict, onnx_t: dict) -> dict:
    return {
        "torch": torch_t,
        "onnxruntime": onnx_t,
        "speedup": round(torch_t["median_ms"] / onnx_t["median_ms"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases:
            for model in args.models:
                rows.append(
                    bench(name, model, CASES[name], args.repeats, args.threads, Path(folder))
                )
                r = rows[-1]
                print(
                    f"{name:14s} {model:9s} network b1 torch {r['network_batch1']['torch']['median_ms']:7.1f} ms"
                    f" onnx {r['network_batch1']['onnxruntime']['median_ms']:7.1f} ms"
                    f" ({r['network_batch1']['speedup']}x) | b8 {r['network_batch8']['speedup']}x"
                    f" | predict {r['predict']['speedup']}x",
                    flush=True,
                )
    result = {
        "command": "python " + " ".join(["benchmarks/onnx_speed.py", *sys.argv[1:]]),
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "notes": (
            "median (and min) of the repeats after 3 warm-up runs; speedup = torch median / "
            "onnxruntime median (> 1: onnxruntime faster); network_batchN: the network alone on "
            "the prepared tensors of N forecasts; predict: a whole TrafficForecaster.predict vs "
            "OnnxForecaster.predict on the same stack (the same input preparation)"
        ),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
