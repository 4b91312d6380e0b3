"""Tests of the demo on a tiny simulated city: every output written, georeferenced, and the table complete."""

import geopandas as gpd
import pytest
import rasterio

from trafficrnn.demo import comparison_table, run_demo
from trafficrnn.errors import InputFileError
from trafficrnn.synth.simulate import simulate, write_simulation


@pytest.fixture(scope="module")
def tiny_sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample") / "city"
    write_simulation(simulate(64, days=1, step="30min", seed=1, tile_size=16, gsd=1.0), folder)
    return folder


def test_run_demo__writes_every_output(tiny_sample, tmp_path):
    lines = []
    result = run_demo(tmp_path / "out", sample=tiny_sample, max_minutes=0.2, max_epochs=1, progress=False,
                      echo=lines.append)
    names = {p.name for p in result.files.values()}
    assert names == {"forecast.tif", "forecast.nc", "forecast.gpkg", "comparison.csv", "last_observed.png",
                     "forecast_leads.png", "error_map.png", "forecast.gif"}
    assert all(p.exists() for p in result.files.values())
    with rasterio.open(result.files["forecast_cog"]) as src:
        assert src.crs.to_epsg() == 32633 and src.count == 6
        assert src.transform.a == 16.0  # 16 px of 1 m per cell
    assert len(gpd.read_file(result.files["forecast_cells"])) == 16
    wide = comparison_table(result.table)
    assert list(wide.columns) == ["convlstm", "convgru", "persistence", "historical_average", "ridge"]
    assert list(wide.index) == [1, 2, 3, 4, 5, 6, "mean"]
    assert any("better deep model here:" in line for line in lines)


def test_run_demo__sample_without_images(tmp_path):
    (tmp_path / "density").mkdir()
    with pytest.raises(InputFileError, match="has no images/ folder"):
        run_demo(tmp_path / "out", sample=tmp_path, progress=False, echo=lambda *_: None)
