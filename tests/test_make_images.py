"""docs/make_images.py: the README pictures redrawn from a demo folder (forecast.nc) and its sample."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from trafficrnn import Grid, to_netcdf, write_stack
from trafficrnn.timeaxis import make_forecast

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "make_images.py"
IMAGE = Grid("EPSG:32633", Affine(1, 0, 602978, 0, -1, 5340781), (32, 32))
CELLS = Grid("EPSG:32633", Affine(16, 0, 602978, 0, -16, 5340781), (2, 2), 16)


def load_script():
    spec = importlib.util.spec_from_file_location("make_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def demo_run(tmp_path):
    times = pd.date_range("2024-06-03T08:00", periods=3, freq="15min")
    rng = np.random.default_rng(0)
    images = IMAGE.attach(
        xr.DataArray(
            rng.integers(0, 255, (3, 3, 32, 32)).astype("float32"),
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["red", "green", "blue"]},
        )
    )
    density = CELLS.attach(
        xr.DataArray(
            np.arange(12, dtype="float32").reshape(3, 1, 2, 2),
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
        )
    )
    density.attrs["units"] = "vehicles per cell"
    write_stack(images, tmp_path / "sample" / "images")
    write_stack(density, tmp_path / "sample" / "density")
    demo = tmp_path / "trafficrnn-demo"
    demo.mkdir()
    forecast = make_forecast(
        np.ones((2, 1, 2, 2), "float32"),
        CELLS,
        issued=times[-1],
        cadence="15min",
        bands=["density"],
        model="convgru",
        units="vehicles per cell",
    )
    to_netcdf(forecast, demo / "forecast.nc")
    return demo, tmp_path / "sample"


def test_make_images__writes_the_readme_pictures_and_captions(demo_run, tmp_path, capsys):
    demo, sample = demo_run
    load_script().main([str(demo), "--sample", str(sample), "--out", str(tmp_path / "img")])
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert names == ["forecast_leads.png", "sample_density.png", "sample_frame.png"]
    assert all((tmp_path / "img" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    out = capsys.readouterr().out
    assert "at its busiest time, 08:30" in out  # the last frame holds the most vehicles
    assert "vehicles per 16 m cell at that time" in out
    assert "(ConvGRU, 2 leads of 15 minutes" in out


def test_make_images__needs_a_demo_run(tmp_path):
    with pytest.raises(SystemExit):
        load_script().main([str(tmp_path / "nothing")])
