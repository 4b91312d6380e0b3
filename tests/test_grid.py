"""Tests of trafficrnn.grid: transform math against hand-computed numbers, cells, conversions, refusals."""

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficrnn import Grid
from trafficrnn.errors import GridError, MissingCRSError

from .conftest import UTM_CRS, UTM_TRANSFORM


def image(height, width, transform=UTM_TRANSFORM, crs=UTM_CRS):
    da = xr.DataArray(np.zeros((1, 1, height, width), "float32"), dims=("time", "band", "y", "x"))
    return da.rio.write_crs(crs).rio.write_transform(transform)


def test_from_image__grid_transform_is_image_transform_times_tile():
    grid = Grid.from_image(image(64, 96), 16)
    # 0.5 m pixels × 16 = 8 m cells, same origin
    assert grid.transform == Affine(8.0, 0.0, 601000.0, 0.0, -8.0, 5340000.0)
    assert grid.shape == (4, 6)
    assert grid.tile_size == 16
    assert grid.crs.to_epsg() == 32633
    assert grid.image_transform == UTM_TRANSFORM
    assert grid.image_shape == (64, 96)


def test_from_image__remainder_is_cropped_with_warning():
    with pytest.warns(UserWarning, match="cropping 3 px from the bottom and 2 px from the right"):
        grid = Grid.from_image(image(35, 50), 16)
    assert grid.shape == (2, 3)
    cropped = grid.crop(image(35, 50))
    assert cropped.sizes["y"] == 32 and cropped.sizes["x"] == 48


def test_from_image__tile_larger_than_image():
    with pytest.raises(GridError, match=r"tile_size=64 is larger than the image \(35 × 50 px\)"):
        Grid.from_image(image(35, 50), 64)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_from_image__bad_tile_size(bad):
    with pytest.raises(GridError, match="tile_size"):
        Grid.from_image(image(32, 32), bad)


def test_from_image__no_crs():
    da = xr.DataArray(np.zeros((1, 1, 4, 4)), dims=("time", "band", "y", "x"))
    with pytest.raises(MissingCRSError, match="no CRS"):
        Grid.from_image(da, 2)


def test_grid__rotated_transform_refused():
    with pytest.raises(GridError, match="not north-up"):
        Grid(UTM_CRS, Affine(8, 0.5, 601000, 0.5, -8, 5340000), (4, 4))


def test_grid__south_up_transform_refused():
    with pytest.raises(GridError, match="not north-up"):
        Grid(UTM_CRS, Affine(8, 0, 601000, 0, 8, 5340000), (4, 4))


def test_grid__bad_shape():
    with pytest.raises(GridError, match="shape"):
        Grid(UTM_CRS, Affine(8, 0, 0, 0, -8, 0), (0, 4))


def test_xy__hand_computed():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (4, 6), 16)
    assert grid.xy(1, 2) == (601000 + 8 * 2.5, 5340000 - 8 * 1.5)
    assert grid.xy(1, 2, offset="ul") == (601016.0, 5339992.0)
    assert grid.index(601020.0, 5339988.0) == (1, 2)
    assert grid.index(601000.0, 5340000.0) == (0, 0)  # the upper-left corner belongs to cell (0, 0)


def test_bounds__hand_computed():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (4, 6))
    assert tuple(grid.bounds) == (601000.0, 5340000 - 32.0, 601000 + 48.0, 5340000.0)
    assert grid.resolution == (8.0, 8.0)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    res=st.floats(0.01, 500),
    x0=st.floats(-1e6, 1e6),
    y0=st.floats(-1e6, 1e7),
    data=st.data(),
)
def test_index__inverts_xy(rows, cols, res, x0, y0, data):
    grid = Grid(UTM_CRS, Affine(res, 0, x0, 0, -res, y0), (rows, cols))
    r = data.draw(st.integers(0, rows - 1))
    c = data.draw(st.integers(0, cols - 1))
    assert grid.index(*grid.xy(r, c)) == (r, c)


def test_cells__polygons_and_columns():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (2, 3))
    cells = grid.cells()
    assert len(cells) == 6
    assert cells.crs.to_epsg() == 32633
    first = cells[(cells.row == 1) & (cells.col == 2)].geometry.iloc[0]
    assert first.bounds == (601016.0, 5339984.0, 601024.0, 5339992.0)
    assert np.isclose(cells.geometry.area, 64.0).all()


def test_coords__cell_centres():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (2, 3))
    coords = grid.coords()
    np.testing.assert_array_equal(coords["x"], [601004.0, 601012.0, 601020.0])
    np.testing.assert_array_equal(coords["y"], [5339996.0, 5339988.0])


def test_attach__sets_crs_transform_and_coords():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (2, 3), 16)
    da = grid.attach(xr.DataArray(np.ones((2, 3)), dims=("y", "x")))
    assert da.rio.crs.to_epsg() == 32633
    assert da.rio.transform() == grid.transform
    assert da.rio.transform(recalc=True) == grid.transform
    assert Grid.from_dataarray(da) == grid


def test_attach__shape_mismatch():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (2, 3))
    with pytest.raises(GridError, match=r"does not match grid shape \(2, 3\)"):
        grid.attach(xr.DataArray(np.ones((3, 3)), dims=("y", "x")))


def test_to_dict__round_trip():
    grid = Grid("EPSG:4326", Affine(0.011862, 0, -74.022216, 0, -0.0085379286, 40.818562), (14, 8))
    again = Grid.from_dict(grid.to_dict())
    assert again == grid
    assert again.matches(grid)


def test_from_dict__malformed():
    with pytest.raises(GridError, match="malformed"):
        Grid.from_dict({"crs": "EPSG:4326"})


def test_repr__readable():
    grid = Grid(UTM_CRS, Affine(8, 0, 601000, 0, -8, 5340000), (2, 3), 16)
    assert (
        repr(grid)
        == "Grid(crs=EPSG:32633, shape=(2, 3), tile_size=16, cell=(8, 8), origin=(601000, 5.34e+06))"
    )
