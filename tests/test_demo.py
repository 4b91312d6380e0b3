"""Tests of the demo on a tiny simulated city: every output written, georeferenced, and the table complete."""

import geopandas as gpd
import pandas as pd
import pytest
import rasterio

from trafficrnn.demo import comparison_table, run_demo, verdict
from trafficrnn.errors import InputFileError
from trafficrnn.synth.simulate import simulate, write_simulation
from trafficrnn.zoo import pretrained


@pytest.fixture(scope="module")
def tiny_sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample") / "city"
    write_simulation(simulate(64, days=1, step="30min", seed=1, tile_size=16, gsd=1.0), folder)
    return folder


def test_run_demo__writes_every_output(tiny_sample, tmp_path):
    lines = []
    result = run_demo(
        tmp_path / "out",
        sample=tiny_sample,
        max_minutes=0.2,
        max_epochs=1,
        progress=False,
        echo=lines.append,
    )
    names = {p.name for p in result.files.values()}
    assert names == {
        "forecast.tif",
        "forecast.nc",
        "forecast.gpkg",
        "comparison.csv",
        "last_observed.png",
        "forecast_leads.png",
        "error_map.png",
        "forecast.gif",
    }
    assert all(p.exists() for p in result.files.values())
    with rasterio.open(result.files["forecast_cog"]) as src:
        assert src.crs.to_epsg() == 32633 and src.count == 6
        assert src.transform.a == 16.0  # 16 px of 1 m per cell
    assert len(gpd.read_file(result.files["forecast_cells"])) == 16
    wide = comparison_table(result.table)
    assert list(wide.columns) == [
        "convlstm",
        "convgru",
        "persistence",
        "historical_average",
        "ridge",
    ]
    assert list(wide.index) == [1, 2, 3, 4, 5, 6, "mean"]
    assert any("better deep model here:" in line for line in lines)
    assert sum(line.startswith(("convlstm: ", "convgru: ")) for line in lines) == 2


def test_verdict__names_the_leads_and_baselines_that_win():
    wide = pd.DataFrame(
        {
            "convgru": [1.0, 2.0],
            "convlstm": [0.5, 0.6],
            "persistence": [1.5, 1.2],
            "ridge": [0.9, 1.9],
        },
        index=[1, 2],
    )
    wide.loc["mean"] = wide.mean()
    lines = verdict(wide, ("convlstm", "convgru"))
    assert lines[0] == "convlstm: beats every baseline at every lead"
    assert lines[1] == (
        "convgru: does NOT beat every baseline on this run (lead 1: ridge 0.900 vs 1.000; "
        "lead 2: persistence 1.200 vs 2.000)"
    )


def test_run_demo__sample_without_images(tmp_path):
    (tmp_path / "density").mkdir()
    with pytest.raises(InputFileError, match="has no images/ folder"):
        run_demo(tmp_path / "out", sample=tmp_path, progress=False, echo=lambda *_: None)


def test_run_demo__fine_tunes_the_pretrained_models_where_they_fit(tmp_path):
    """A 128 px city at 1 m with 64 px tiles: each model starts from its packaged pretrained weights."""
    folder = tmp_path / "city64"
    write_simulation(simulate(128, days=1, step="30min", seed=2, tile_size=64, gsd=1.0), folder)
    lines = []
    result = run_demo(
        tmp_path / "out",
        sample=folder,
        max_minutes=0.3,
        max_epochs=1,
        progress=False,
        echo=lines.append,
    )
    assert "start      from the packaged pretrained weights" in "\n".join(lines)
    for name, est in result.models.items():
        base = pretrained(name)
        assert est.get_params() == {
            **base.get_params(),
            "max_time": 0.3,
            "trainer_kwargs": {**base.trainer_kwargs, "max_epochs": 1},
            "progress": False,
        }
        assert est.input_normalizer_.to_dict() == base.input_normalizer_.to_dict()
    assert list(comparison_table(result.table).index) == [1, 2, 3, 4, 5, 6, "mean"]


def test_run_demo__trains_from_scratch_where_no_pretrained_model_fits(tiny_sample, tmp_path):
    from trafficrnn.demo import starting_points
    from trafficrnn.io import read_stack

    init, line = starting_points(read_stack(tiny_sample / "images"), 16)
    assert init == {}
    assert (
        line
        == "from scratch (the pretrained models read 3-band images of 1 m pixels in tiles of 64 px)"
    )
