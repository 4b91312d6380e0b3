"""Property-based tests of the geometry: any north-up grid in any CRS survives read, grid, export and read-back.

Each property is checked on small random cases (a few pixels, a few cells) so that the file
stays fast: round trips through GeoTIFF and NetCDF keep the CRS, the transform
``image transform @ Affine.scale(tile)`` and cell-centre coordinates; rasterising points
given in another CRS conserves their count; a tiled forecast equals the whole-area one.
"""

import math
import tempfile
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.crs import CRS

from trafficrnn import Grid, rasterize_points, read_netcdf, read_stack, to_geotiff, to_netcdf
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.inference import forecast_large
from trafficrnn.timeaxis import make_forecast

from .conftest import frame_values, write_tif
from .test_inference import density_series

# where each CRS is used: (x range, y range) of plausible origins, in CRS units
AREAS = {
    "EPSG:32633": ((3e5, 7e5), (4.0e6, 6.5e6)),  # UTM 33N (Vienna)
    "EPSG:32618": ((3e5, 7e5), (4.0e6, 5.0e6)),  # UTM 18N (New York)
    "EPSG:3857": ((-1.9e7, 1.9e7), (-1.4e7, 1.4e7)),  # web Mercator
    "EPSG:2056": ((2.5e6, 2.8e6), (1.1e6, 1.3e6)),  # Swiss LV95
    "EPSG:27700": ((1e5, 6e5), (1e5, 1.0e6)),  # British National Grid
    "EPSG:4326": ((-179.0, 179.0), (-80.0, 85.0)),  # lon / lat, degrees
}
PROJECTED = [crs for crs in AREAS if crs != "EPSG:4326"]
RTOL = 1e-9  # on transform coefficients
# pyproj's CF attributes cannot hold one parameter of EPSG:2056 (oblique Mercator); the CRS still
# travels whole as crs_wkt / spatial_ref, which is what the round trips below check
pytestmark = pytest.mark.filterwarnings(
    "ignore:angle from rectified to skew grid parameter lost:UserWarning"
)
PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TILED = settings(PROPERTY, max_examples=4)  # each example runs up to 4 window forecasts


@st.composite
def north_up(draw, crs=None):
    """A CRS and a north-up transform in it: random origin in the CRS's area, random (non-square) pixels."""
    crs = crs or draw(st.sampled_from(sorted(AREAS)))
    (x_lo, x_hi), (y_lo, y_hi) = AREAS[crs]
    size = st.floats(1e-7, 1e-2) if crs == "EPSG:4326" else st.floats(0.1, 100.0)
    a, e = draw(size), draw(size)
    return crs, Affine(a, 0.0, draw(st.floats(x_lo, x_hi)), 0.0, -e, draw(st.floats(y_lo, y_hi)))


def assert_transform_close(found: Affine, expected: Affine) -> None:
    """Coefficients equal to ``RTOL`` (relative; origins near 0 to ``RTOL`` of a pixel)."""
    pixel = max(abs(expected.a), abs(expected.e))
    for name, p, q in zip("abcdef", found[:6], expected[:6]):
        assert math.isclose(p, q, rel_tol=RTOL, abs_tol=RTOL * pixel), (
            f"{name}: {found} != {expected}"
        )


def assert_cell_centres(da, transform: Affine) -> None:
    """``x`` / ``y`` are the centres of the columns / rows of ``transform`` (to 1e-6 of a cell)."""
    x = transform.c + transform.a * (np.arange(da.sizes["x"]) + 0.5)
    y = transform.f + transform.e * (np.arange(da.sizes["y"]) + 0.5)
    np.testing.assert_allclose(da.x.values, x, rtol=0, atol=1e-6 * abs(transform.a))
    np.testing.assert_allclose(da.y.values, y, rtol=0, atol=1e-6 * abs(transform.e))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A module-wide folder; each example makes (and removes) its own sub-folder in it."""
    return tmp_path_factory.mktemp("properties")


# --- GeoTIFF stack → Grid → GeoTIFF / NetCDF --------------------------------------------------


@PROPERTY
@given(
    geo=north_up(),
    tile=st.integers(1, 4),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
    extra=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    frames=st.integers(2, 3),
    bands=st.integers(1, 2),
)
def test_grid_from_image__exports_keep_crs_transform_and_centres(
    workdir, geo, tile, rows, cols, extra, frames, bands
):
    crs, transform = geo
    height, width = rows * tile + extra[0] % tile, cols * tile + extra[1] % tile
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        for t in range(frames):
            write_tif(
                folder / f"frame_2024-05-01T08-{5 * t:02d}.tif",
                frame_values(t, bands, height, width),
                crs=crs,
                transform=transform,
            )
        images = read_stack(folder)
        assert images.rio.crs == CRS.from_user_input(crs)
        assert_transform_close(images.rio.transform(), transform)
        assert_cell_centres(images, transform)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="image of .* is not a multiple of tile_size")
            grid = Grid.from_image(images, tile)
        expected = transform @ Affine.scale(tile)
        assert grid.shape == (rows, cols) and grid.crs == CRS.from_user_input(crs)
        assert_transform_close(grid.transform, expected)

        values = np.arange(2 * rows * cols, dtype="float32").reshape(2, 1, rows, cols)
        forecast = make_forecast(
            values,
            grid,
            issued=images.time.values[-1],
            cadence=images.attrs["cadence"],
            bands="density",
            model="test",
            units="vehicles per cell",
        )
        tif = read_stack(to_geotiff(forecast, folder / "forecast.tif"))
        with rasterio.open(
            folder / "forecast.tif"
        ) as src:  # what GIS tools read, not only read_stack
            assert src.crs == CRS.from_user_input(crs)
            assert_transform_close(src.transform, expected)
        nc = read_netcdf(to_netcdf(forecast, folder / "forecast.nc"))
        for back in (tif, nc):
            assert back.rio.crs == CRS.from_user_input(crs)
            assert_transform_close(back.rio.transform(), expected)
            assert_cell_centres(back, expected)
            np.testing.assert_array_equal(back.values.reshape(values.shape), values)


# --- points in EPSG:4326 onto a projected grid ----------------------------------------------


@PROPERTY
@given(
    geo=st.sampled_from(PROJECTED).flatmap(north_up),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    cell=st.integers(1, 50),
    data=st.data(),
)
def test_rasterize_points__wgs84_points_on_projected_grid_conserve_count(geo, shape, cell, data):
    crs, transform = geo
    grid = Grid(crs, transform @ Affine.scale(cell), shape, cell)
    # points inside cells, at least 10 % of a cell (>= 1 cm) from every edge, in the grid's CRS: the
    # datum shifts of EPSG:2056 / 27700 to WGS 84 (Helmert) round-trip only to ~1 mm in PROJ
    inside = st.tuples(
        st.integers(0, shape[0] - 1),
        st.integers(0, shape[1] - 1),
        st.floats(0.1, 0.9),
        st.floats(0.1, 0.9),
        st.integers(0, 3),
    )
    rows = data.draw(st.lists(inside, min_size=1, max_size=40))
    r, c, fy, fx, k = (np.array(v) for v in zip(*rows))
    x, y = grid.xy(r, c, offset="ul")
    x, y = x + fx * grid.resolution[0], y - fy * grid.resolution[1]
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    points = gpd.GeoDataFrame(
        {"time": pd.Timestamp("2024-05-01") + pd.to_timedelta(5 * k, unit="min")},
        geometry=gpd.points_from_xy(lon, lat),
        crs="EPSG:4326",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".* lie outside the grid")  # no point may be lost
        counts = rasterize_points(points, grid, freq="5min")
    assert counts.values.sum() == len(rows)
    expected = np.zeros(grid.shape)
    np.add.at(expected, (r, c), 1)
    np.testing.assert_array_equal(counts.values.sum(axis=(0, 1)), expected)  # each in its own cell
    assert counts.rio.crs == grid.crs
    assert_transform_close(counts.rio.transform(), grid.transform)


# --- tiled inference --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    """A density-only ConvGRU fitted once (one epoch) on 8 × 8 cells of the 24 × 24 series of test_inference."""
    series = density_series(periods=24)
    model = TrafficForecaster(
        "convgru",
        input_steps=2,
        horizon=2,
        progress=False,
        model_kwargs=dict(hidden=(4,)),
        trainer_kwargs=dict(max_epochs=1),
    )
    return model.fit(series.isel(y=slice(0, 8), x=slice(0, 8))), series


@st.composite
def areas_and_windows(draw):
    """An area of 6 to 20 cells (each side at most 6) and a window side from 1 to its longest side.

    At most 4 windows per area, so that an example stays near a second.
    """
    rows, cols = draw(
        st.tuples(st.integers(1, 6), st.integers(1, 6)).filter(lambda s: 6 <= s[0] * s[1] <= 20)
    )
    window = draw(
        st.integers(1, max(rows, cols)).filter(
            lambda w: math.ceil(rows / w) * math.ceil(cols / w) <= 4
        )
    )
    return (rows, cols), window


@TILED
@given(case=areas_and_windows(), offset=st.tuples(st.integers(0, 18), st.integers(0, 18)))
@example(
    case=((2, 3), 2), offset=(0, 0)
)  # longest side 3 < receptive field 4: the default halo is clipped
def test_forecast_large__equals_whole_area_for_any_window(tiny_model, workdir, case, offset):
    model, series = tiny_model
    (rows, cols), window = case
    stack = series.isel(
        time=slice(-4, None),
        y=slice(offset[0], offset[0] + rows),
        x=slice(offset[1], offset[1] + cols),
    )
    whole = model.predict(stack)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="tiled forecast")  # the default halo is exact
            path = forecast_large(model, stack, Path(tmp) / "fc.tif", window=window, overwrite=True)
        with rasterio.open(path) as src:
            values, crs, transform = src.read(), src.crs, src.transform
    np.testing.assert_allclose(values, whole.values.reshape(values.shape), rtol=1e-6, atol=1e-6)
    assert crs == whole.rio.crs == series.rio.crs
    assert (
        transform
        == whole.rio.transform()
        == series.rio.transform() @ Affine.translation(offset[1], offset[0])
    )
