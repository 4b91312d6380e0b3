"""Training past one process: 2-process DDP on CPU (gloo) ends with identical weights on both ranks."""

import json
import os
import subprocess
import sys
import textwrap

import torch

# Lightning's subprocess launcher re-runs this script for rank 1, so it must be a file of its own.
SCRIPT = textwrap.dedent("""
    import json
    import os
    import sys

    import numpy as np
    import pandas as pd
    import torch
    import xarray as xr
    from affine import Affine

    from trafficrnn import Grid
    from trafficrnn.estimator import TrafficForecaster

    out = sys.argv[1]
    grid = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (6, 6))
    times = pd.date_range("2024-05-01", periods=40, freq="15min")
    values = np.random.default_rng(0).uniform(0, 5, (40, 1, 6, 6)).astype("float32")
    da = grid.attach(xr.DataArray(values, dims=("time", "band", "y", "x"),
                                  coords={"time": times, "band": ["density"]}))
    est = TrafficForecaster("convgru", input_steps=4, horizon=2, progress=False,
                            model_kwargs={"hidden": (4,)},
                            trainer_kwargs={"max_epochs": 2, "batch_size": 4, "accelerator": "cpu",
                                            "devices": 2, "strategy": "ddp", "patience": 0})
    est.fit(da)  # a temporary checkpoint folder per rank: the barrier keeps rank 0 from deleting it early
    rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.save(dict(est.model_.state_dict()), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else None
        json.dump({"world": world, "epochs": len(est.history_)}, f)
""")


def test_fit__ddp_two_cpu_processes_identical_weights(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info == [{"world": 2, "epochs": 2}] * 2
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
