import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from trafficrnn.errors import ConfigError, OutputExistsError
from trafficrnn.io import rasterize_points, read_stack
from trafficrnn.synth import simulate, write_simulation


def test_simulate__deterministic_for_a_seed():
    kw = dict(
        days=0.05,
        step="10min",
        gsd=1.0,
        tile_size=16,
        seed=7,
        clouds=True,
        start="2024-06-04T06:00",
    )
    a, b = simulate(96, **kw), simulate(96, **kw)
    np.testing.assert_array_equal(a.images.values, b.images.values)
    np.testing.assert_array_equal(a.density.values, b.density.values)
    assert a.vehicles.geometry.equals(b.vehicles.geometry)
    c = simulate(96, **dict(kw, seed=8))
    assert not np.array_equal(a.density.values, c.density.values)


def test_simulate__density_equals_rasterised_vehicles(small_run):
    r = small_run
    target = rasterize_points(r.vehicles, r.grid, times=r.density["time"].values)
    np.testing.assert_array_equal(target.values, r.density.values)
    assert r.density.sum() == len(r.vehicles)


def test_simulate__vehicle_on_road_pixel_and_in_its_cell(small_run):
    r = small_run
    t = r.images["time"].values[2]
    veh = r.vehicles[r.vehicles["time"] == t]
    xs, ys = veh.geometry.x.to_numpy(), veh.geometry.y.to_numpy()
    image_tr = r.grid.image_transform
    col, row = ~image_tr * (xs, ys)
    road = r.roads.buffer(r.roads.width / 2 + 0.5, cap_style="square").union_all()
    assert road.contains(gpd.points_from_xy(xs, ys)).all()
    rows, cols = r.grid.index(xs, ys)
    counts = np.zeros(r.grid.shape)
    np.add.at(counts, (rows, cols), 1)
    np.testing.assert_array_equal(counts, r.density.sel(time=t).values[0])
    assert np.array_equal(rows, (row // r.grid.tile_size).astype(int))


def test_simulate__daily_cycle_in_totals():
    r = simulate(
        96, days=1.0, step="60min", gsd=1.0, tile_size=16, seed=1, start="2024-06-03T22:00"
    )  # a local Tuesday
    total = r.density.sum(("band", "y", "x")).to_series()
    local = total.index + pd.Timedelta(hours=2)
    night = total[(local.hour >= 1) & (local.hour <= 4)].mean()
    day = total[(local.hour >= 7) & (local.hour <= 18)].mean()
    assert day > 3 * night


def test_simulate__clouds_and_missing_frames(small_run):
    r = small_run
    assert len(r.missing) > 0 and r.images.sizes["time"] == r.density.sizes["time"] - len(r.missing)
    assert r.cloud_mask.shape == (r.images.sizes["time"], 128, 128) and r.cloud_mask.any()
    assert (r.images.values.transpose(1, 0, 2, 3)[:, r.cloud_mask.values] == 0).all()
    assert r.images.rio.nodata == 0


def test_simulate__flows_conserve_vehicles(small_run):
    f = small_run.flows
    np.testing.assert_allclose(
        f["count"] - f["count"].isel(time=0), f["inflow"] - f["outflow"], atol=1e-6
    )


def test_write_simulation__files_georeferenced_and_readable(small_run, tmp_path):
    manifest = write_simulation(small_run, tmp_path / "city")
    out = tmp_path / "city"
    images = read_stack(out / "images", allow_gaps=True)
    density = read_stack(out / "density")
    assert (
        images.sizes["time"] == small_run.images.sizes["time"] and images.rio.crs.to_epsg() == 32633
    )
    assert images.rio.transform() == small_run.grid.image_transform
    assert density.rio.transform() == small_run.grid.transform
    np.testing.assert_array_equal(density.values, small_run.density.values)
    assert np.isnan(images.values).any()  # clouds come back as NaN
    for path in (
        sorted((out / "images").glob("*.tif"))[:3] + sorted((out / "clouds").glob("*.tif"))[:1]
    ):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32633 and src.transform == small_run.grid.image_transform
    for name in ("vehicles", "roads", "landuse"):
        assert gpd.read_file(out / f"{name}.gpkg").crs.to_epsg() == 32633
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["grid"]["shape"] == [8, 8] and on_disk["crs"]["epsg"] == 32633
    assert on_disk["parameters"]["seed"] == 3 and "package_version" in on_disk


def test_write_simulation__refuses_existing(small_run, tmp_path):
    write_simulation(small_run, tmp_path / "city", image_compress="deflate")
    with pytest.raises(OutputExistsError, match="already holds images"):
        write_simulation(small_run, tmp_path / "city")


def test_write_simulation__bad_compress(small_run, tmp_path):
    with pytest.raises(ConfigError, match="image_compress='png' is invalid"):
        write_simulation(small_run, tmp_path / "city", image_compress="png")


def test_simulate__render_false_keeps_the_traffic():
    kw = dict(days=0.1, step="30min", gsd=1.0, tile_size=16, seed=2, start="2024-06-04T07:00")
    shot, unshot = simulate(64, **kw), simulate(64, render=False, **kw)
    assert unshot.images.sizes["time"] == 0 and unshot.cloud_mask.sizes["time"] == 0
    assert len(unshot.missing) == 0
    np.testing.assert_array_equal(unshot.density.values, shot.density.values)
    assert unshot.vehicles.geometry.equals(shot.vehicles.geometry)


def test_simulate__defaults_make_a_square_kilometre_of_64_m_cells():
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(simulate).parameters.items()}
    size, gsd, tile = defaults["size"], defaults["gsd"], defaults["tile_size"]
    assert (size * gsd) ** 2 >= 1e6 and tile * gsd == 64.0 and size % tile == 0


def test_simulate__tile_size_message_lists_divisors():
    with pytest.raises(ConfigError, match=r"tile_size=64 is invalid.*size=96.*such as 8, 16 or 32"):
        simulate(96, tile_size=64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_size": 24}, "tile_size=24 is invalid"),
        ({"step": "7 parsecs"}, "step='7 parsecs' is invalid"),
        ({"step": "3s"}, "multiple of 2 s"),
        ({"days": 0}, "days=0 is invalid"),
        ({"days": 0.001}, "at least 2"),
        ({"gsd": 10.0}, "gsd=10.0 is invalid"),
        ({"cloud_cover": 2.0}, "cloud_cover=2.0 is invalid"),
        ({"missing_frames": 1.0}, "missing_frames=1.0 is invalid"),
        ({"start": "yesterday-ish"}, "start='yesterday-ish' is invalid"),
    ],
)
def test_simulate__bad_parameter(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        simulate(64, **kwargs)
