"""Nothing lost: atomic writers survive SIGKILL mid-write, and training killed mid-epoch resumes to the same result."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import OutputExistsError
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import to_geotiff, to_netcdf, write_geopackage
from trafficrnn.params import grouped

from .test_estimator import FAST, density_series

ROOT = Path(__file__).resolve().parents[1]


def _run_child(code: str, cwd: Path) -> subprocess.Popen:
    # the same torch thread count as this process (bit-for-bit comparisons across processes): a dask
    # nanny started earlier in this process may have left OMP_NUM_THREADS=1 in os.environ
    threads = str(torch.get_num_threads())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"child exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("child never reached the point where it should be killed")
        time.sleep(0.01)


def small_grid_array(value: float = 1.0) -> xr.DataArray:
    grid = Grid("EPSG:32633", Affine(10, 0, 600000, 0, -10, 5340000), (4, 4))
    return grid.attach(
        xr.DataArray(
            np.full((1, 4, 4), value, "float32"),
            dims=("band", "y", "x"),
            coords={"band": ["density"]},
        )
    )


def test_to_geotiff__sigkill_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "big.tif"
    to_geotiff(small_grid_array(), target)
    before, style = target.read_bytes(), target.with_suffix(".qml").read_bytes()
    # a child overwrites it with a COG of 8 bands × 2500² random floats (200 MB uncompressed,
    # seconds of deflate): it is killed once its temporary file has started to grow
    child = _run_child(
        f"""
        import numpy as np, xarray as xr
        from affine import Affine
        from trafficrnn import Grid
        from trafficrnn.io import to_geotiff
        grid = Grid("EPSG:32633", Affine(10, 0, 600000, 0, -10, 5340000), (2500, 2500))
        values = np.random.default_rng(0).random((8, 2500, 2500), dtype="float32")
        da = grid.attach(xr.DataArray(values, dims=("band", "y", "x"), coords={{"band": [f"b{{i}}" for i in range(8)]}}))
        to_geotiff(da, {str(target)!r}, overwrite=True)
    """,
        tmp_path,
    )

    def temp_growing():
        return any(
            p.name.startswith(".big.tif.") and p.stat().st_size > 0
            for p in tmp_path.iterdir()
            if p.is_file()
        )

    _wait_for(temp_growing, child, timeout=60)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL  # killed, not finished
    assert target.read_bytes() == before  # the previous file, byte for byte
    assert target.with_suffix(".qml").read_bytes() == style  # and its QGIS style
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("big.tif", "big.qml")]
    # SIGKILL gives no chance to clean up: a hidden temporary may remain, never at the final path
    assert all(name.startswith(".big.tif.") and ".tmp" in name for name in leftovers)


@pytest.mark.parametrize(
    "write, name",
    [
        (lambda da, path, **kw: to_geotiff(da, path, **kw), "f.tif"),
        (lambda da, path, **kw: to_netcdf(da, path, **kw), "f.nc"),
        (
            lambda da, path, **kw: write_geopackage(Grid.from_dataarray(da).cells(), path, **kw),
            "f.gpkg",
        ),
    ],
)
def test_writers__never_overwrite_without_flag(tmp_path, write, name):
    path = tmp_path / name
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=f"{name} already exists; pass overwrite=True"):
        write(small_grid_array(), path)
    assert path.read_bytes() == b"precious"
    write(small_grid_array(), path, overwrite=True)
    assert path.read_bytes() != b"precious"
    assert {p.name for p in tmp_path.iterdir()} - {"f.qml"} == {name}  # f.qml: f.tif's QGIS style


def test_save__failure_mid_save_keeps_previous_model(tmp_path, monkeypatch):
    import safetensors.torch

    da = density_series(periods=60)
    est = TrafficForecaster("convgru", **FAST).fit(da)
    path = est.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken(state, filename, **kwargs):  # writes half a file, then the disk "fills up"
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="No space left"):
        est.save(path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the temporary folder is gone


# -- training killed mid-epoch ------------------------------------------------------------------

_FIT_CHILD = """
    import pathlib, time, warnings
    warnings.simplefilter("ignore")
    import trafficrnn.training as training
    from tests.test_estimator import FAST, density_series
    from trafficrnn.estimator import TrafficForecaster
    real = training.ForecastModule.training_step
    def step(self, batch, batch_idx):
        if self.current_epoch == 2:  # the third epoch: last.ckpt of the second exists; wait to be killed
            pathlib.Path({marker!r}).touch()
            time.sleep(120)
        return real(self, batch, batch_idx)
    training.ForecastModule.training_step = step
    TrafficForecaster({model!r}, **{params!r}).fit(density_series(periods=60), checkpoint_dir={ckpt!r})
"""


@pytest.mark.parametrize("model", ["convgru"])
def test_fit__killed_mid_epoch_resumes_to_the_same_weights(tmp_path, model):
    params = grouped(FAST, {"max_epochs": 3, "batch_size": 8})
    da = density_series(periods=60)
    uninterrupted = TrafficForecaster(model, **params).fit(da, checkpoint_dir=tmp_path / "a")

    ckpt, marker = tmp_path / "b", tmp_path / "in-epoch-3"
    child = _run_child(
        _FIT_CHILD.format(marker=str(marker), model=model, params=params, ckpt=str(ckpt)), ROOT
    )
    _wait_for(marker.exists, child, timeout=120)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert (
        torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    )  # 2 epochs done
    resumed = TrafficForecaster(model, **params).fit(da, checkpoint_dir=ckpt, resume=True)

    assert [h["epoch"] for h in resumed.history_] == [2]  # only the lost epoch was redone
    assert resumed.history_[0]["val_loss"] == uninterrupted.history_[2]["val_loss"]
    # the weights after the third epoch (last.ckpt) and the selected best weights, bit for bit
    last_a = torch.load(tmp_path / "a" / "last.ckpt", map_location="cpu", weights_only=True)
    last_b = torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=True)
    assert last_a["epoch"] == last_b["epoch"] == 2
    for states in (
        (last_a["state_dict"], last_b["state_dict"]),
        (uninterrupted.model_.state_dict(), resumed.model_.state_dict()),
    ):
        assert states[0].keys() == states[1].keys()
        for key in states[0]:
            torch.testing.assert_close(
                states[1][key], states[0][key], rtol=0, atol=0, msg=f"{key} differs after resume"
            )
    np.testing.assert_array_equal(resumed.predict(da).values, uninterrupted.predict(da).values)


_ENSEMBLE_CHILD = """
    import pathlib, time, warnings
    warnings.simplefilter("ignore")
    import trafficrnn.training as training
    from tests.test_estimator import FAST, density_series
    from trafficrnn import ForecastEnsemble, TrafficForecaster
    real = training.ForecastModule.training_step
    def step(self, batch, batch_idx):
        # the second member, in its third epoch: member 0 has finished, member 1 has 2 epochs in last.ckpt
        if self.current_epoch == 2 and pathlib.Path(self.trainer.default_root_dir).name == "member-1":
            pathlib.Path({marker!r}).touch()
            time.sleep(120)
        return real(self, batch, batch_idx)
    training.ForecastModule.training_step = step
    ForecastEnsemble(TrafficForecaster("convgru", **{params!r}), members=2).fit(density_series(periods=60),
                                                                               checkpoint_dir={ckpt!r})
"""


def test_ensemble_fit__killed_in_the_second_member_resumes_it_and_reads_the_first_back(tmp_path):
    from trafficrnn import ForecastEnsemble

    params = grouped(FAST, {"max_epochs": 3, "batch_size": 8})
    da = density_series(periods=60)
    uninterrupted = ForecastEnsemble(TrafficForecaster("convgru", **params), members=2).fit(da)

    ckpt, marker = tmp_path / "run", tmp_path / "in-member-1-epoch-3"
    child = _run_child(
        _ENSEMBLE_CHILD.format(marker=str(marker), params=params, ckpt=str(ckpt)), ROOT
    )
    _wait_for(marker.exists, child, timeout=180)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    first_done = {p.name: p.stat().st_mtime_ns for p in (ckpt / "member-0").iterdir()}
    resumed = ForecastEnsemble(TrafficForecaster("convgru", **params), members=2).fit(
        da, checkpoint_dir=ckpt, resume=True
    )

    assert {
        p.name: p.stat().st_mtime_ns for p in (ckpt / "member-0").iterdir()
    } == first_done  # read back
    assert [h["epoch"] for h in resumed.estimators_[0].history_] == [
        0,
        1,
        2,
    ]  # its recorded history
    assert [h["epoch"] for h in resumed.estimators_[1].history_] == [
        2
    ]  # only the lost epoch was redone
    for a, b in zip(uninterrupted.estimators_, resumed.estimators_):
        sa, sb = a.model_.state_dict(), b.model_.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(
                sb[key], sa[key], rtol=0, atol=0, msg=f"{key} differs after resume"
            )
    np.testing.assert_array_equal(resumed.predict(da).values, uninterrupted.predict(da).values)
