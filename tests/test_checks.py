"""Tests of the input checks: images warped onto a fitted model's grid (``align="reproject"``) against
hand-computed coordinates and values, and the refusals whose hints name the Python and the CLI fixes."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ModelMismatchError
from trafficrnn.estimation.checks import ALIGNS, gdalwarp_line, reproject_to_grid
from trafficrnn.estimator import TrafficForecaster

from .test_estimator import FAST, GRID, density_series

# GRID: EPSG:32633, 4 × 5 cells of 100 m from (500000, 5000000)
TIMES = pd.date_range("2024-05-01", periods=2, freq="15min")


def ramps(crs, transform, shape, x0=500000.0, y0=5000000.0):
    """Two frames of two bands: the easting and the northing of each pixel centre, less (x0, y0)."""
    grid = Grid(crs, transform, shape)
    x, y = grid.coords()["x"] - x0, grid.coords()["y"] - y0
    bands = np.stack(np.broadcast_arrays(x[None, :], y[:, None])).astype("float32")
    da = xr.DataArray(
        np.stack([bands, bands]),
        dims=("time", "band", "y", "x"),
        coords={"time": TIMES, "band": ["east", "north"]},
    )
    return grid.attach(da)


def test_aligns__reproject_is_offered():
    assert ALIGNS == ("exact", "resample", "reproject")


def test_reproject_to_grid__finer_shifted_images_hand_computed():
    # 25 m pixels from (499900, 5000100), 28 × 24 px: 100 m past the grid on every side
    images = ramps("EPSG:32633", Affine(25, 0, 499900, 0, -25, 5000100), (24, 28))
    out = reproject_to_grid(images, GRID)
    assert out.dims == ("time", "band", "y", "x") and out.dtype == np.float32
    assert out.rio.crs.to_epsg() == 32633 and out.rio.transform() == Affine(
        100, 0, 500000, 0, -100, 5000000
    )
    np.testing.assert_array_equal(out.x.values, [500050, 500150, 500250, 500350, 500450])
    np.testing.assert_array_equal(out.y.values, [4999950, 4999850, 4999750, 4999650])
    # a linear ramp survives bilinear resampling: each cell holds its centre's coordinates
    np.testing.assert_allclose(
        out.isel(time=1, band=0).values, np.tile([50, 150, 250, 350, 450], (4, 1)), atol=1e-3
    )
    np.testing.assert_allclose(
        out.isel(time=0, band=1).values, np.tile([[-50], [-150], [-250], [-350]], (1, 5)), atol=1e-3
    )
    assert list(out.time.values) == list(TIMES.values) and list(out.band.values) == [
        "east",
        "north",
    ]


def test_reproject_to_grid__onto_the_image_pixels_of_a_tiled_grid():
    grid = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5), tile_size=2)
    out = reproject_to_grid(
        ramps("EPSG:32633", Affine(25, 0, 499900, 0, -25, 5000100), (24, 28)), grid
    )
    assert out.sizes == {"time": 2, "band": 2, "y": 8, "x": 10}
    assert out.rio.transform() == Affine(50, 0, 500000, 0, -50, 5000000)
    np.testing.assert_allclose(
        out.isel(time=0, band=0, y=3).values, 25 + 50 * np.arange(10), atol=1e-3
    )


def test_reproject_to_grid__from_another_crs():
    # UTM 33S writes the same places 10 000 km further north: the grid again, in another CRS
    images = ramps("EPSG:32733", Affine(100, 0, 500000, 0, -100, 15000000), (4, 5), y0=15000000.0)
    out = reproject_to_grid(images, GRID)
    assert out.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(out.y.values, [4999950, 4999850, 4999750, 4999650])
    np.testing.assert_allclose(out.values, images.values, atol=1e-3)


def test_reproject_to_grid__on_the_grid_already_is_a_no_op():
    images = ramps("EPSG:32633", GRID.transform, GRID.shape)
    assert reproject_to_grid(images, GRID) is images


def test_reproject_to_grid__images_far_away():
    images = ramps("EPSG:32633", Affine(100, 0, 600000, 0, -100, 5000000), (4, 5))
    with pytest.raises(
        ModelMismatchError,
        match=r"the images do not overlap the model's grid \(images: \(600000, "
        r"4999600, 600500, 5000000\) in EPSG:32633; model: \(500000, "
        r"4999600, 500500, 5000000\) in EPSG:32633\)",
    ):
        reproject_to_grid(images, GRID)


def test_reproject_to_grid__images_cover_a_fifth():
    images = ramps("EPSG:32633", Affine(100, 0, 500400, 0, -100, 5000000), (4, 5))
    with pytest.raises(ModelMismatchError, match="the images cover only 20% of the model's grid"):
        reproject_to_grid(images, GRID)


def test_gdalwarp_line__hand_computed():
    assert gdalwarp_line(GRID) == (
        "gdalwarp -t_srs EPSG:32633 -te 500000 4999600 500500 5000000 -ts 5 4 "
        "-r bilinear IN.tif OUT.tif"
    )
    tiled = Grid("EPSG:32633", GRID.transform, GRID.shape, tile_size=4)
    assert "-ts 20 16 " in gdalwarp_line(tiled)


@pytest.fixture(scope="module")
def fitted():
    da = density_series(periods=60)
    return TrafficForecaster("convgru", **FAST).fit(da), da


def in_utm_south(da):
    """``da`` on the same places, written in UTM 33S."""
    south = Grid("EPSG:32733", Affine(100, 0, 500000, 0, -100, 15000000), GRID.shape)
    return south.attach(da.drop_vars(["x", "y", "spatial_ref"]))


def test_predict__reproject_onto_the_model_grid(fitted):
    est, da = fitted
    expected = est.predict(da)
    fc = est.predict(in_utm_south(da), align="reproject")
    assert fc.rio.crs.to_epsg() == 32633 and fc.rio.transform() == GRID.transform
    np.testing.assert_allclose(fc.values, expected.values, rtol=1e-5, atol=1e-5)


def test_predict__other_crs_hint_names_reproject_and_gdalwarp(fitted):
    est, da = fitted
    with pytest.raises(
        ModelMismatchError,
        match=r"stack CRS EPSG:32733 differs from the model's EPSG:32633: warp the "
        r"images onto the model's grid with predict\(..., align='reproject'\) "
        r"\(CLI: --align reproject\), or beforehand: gdalwarp -t_srs "
        r"EPSG:32633 -te 500000 4999600 500500 5000000 -ts 5 4",
    ):
        est.predict(in_utm_south(da))


def test_evaluate__reproject_scores_as_on_the_grid(fitted):
    est, da = fitted
    expected = est.evaluate(da, split=None, baselines=("persistence",))
    table = est.evaluate(
        in_utm_south(da), split=None, baselines=("persistence",), align="reproject"
    )
    pd.testing.assert_frame_equal(table, expected, rtol=1e-4)


def test_check_stack__what_predict_and_evaluate_check(fitted):
    est, da = fitted
    checked = est.check_stack(da, da)
    assert checked.grid == est.grid_ and checked.horizon == est.horizon
    assert (
        checked.images.rio.crs == da.rio.crs
        and checked.images.rio.transform() == da.rio.transform()
    )
    xr.testing.assert_equal(checked.target, checked.images)  # its own target (density-only)
    assert est.check_stack(da, horizon=1).horizon == 1 and est.check_stack(da).target is None
    with pytest.raises(ModelMismatchError, match=f"ask for at most {est.horizon}"):
        est.check_stack(da, horizon=est.horizon + 1)
    with pytest.raises(ModelMismatchError, match="differ from the model's"):
        est.check_stack(da.assign_coords(band=["other"]))


def uint8_images(target, nodata=0):
    """The image series of the estimator tests as uint8 with a declared nodata and a 'cloud' of
    nodata pixels in some frames; and the same frames as float32 with NaN there, as read_stack reads them."""
    from .test_estimator import image_series

    images = image_series(target)
    raw = np.clip(np.asarray(images.values) * 20 + 30, 1, 255).astype("uint8")
    raw[::5, :, 2:6, 3:9] = nodata
    as_int = images.copy(data=raw).rio.write_nodata(nodata)
    as_float = images.copy(data=np.where(raw == nodata, np.nan, raw).astype("float32"))
    return as_int, as_float


def test_masked_nodata__integer_stack_reads_as_read_stack_would():
    # the values every model path reads (pixel_values), and the warps' input (masked_nodata)
    from trafficrnn.estimation.checks import masked_nodata

    as_int, as_float = uint8_images(density_series(periods=12))
    out = masked_nodata(as_int)
    assert out.dtype == np.float32 and out.rio.crs == as_int.rio.crs
    np.testing.assert_array_equal(out.values, as_float.values)
    # floats, and integers without a declared nodata, are left as they are
    assert masked_nodata(as_float) is as_float
    plain = as_int.copy()
    plain = plain.rio.write_nodata(None)
    assert masked_nodata(plain) is plain


def test_fit_predict__declared_nodata_of_uint8_images_is_missing_not_black():
    target = density_series(periods=80)
    as_int, as_float = uint8_images(target)
    opts = dict(FAST, tile_size=4, input_steps=4, horizon=2, seed=0)
    a = TrafficForecaster("convgru", **opts).fit(as_int, target)
    b = TrafficForecaster("convgru", **opts).fit(as_float, target)
    np.testing.assert_allclose(a.input_normalizer_.mean_, b.input_normalizer_.mean_)
    np.testing.assert_array_equal(a.predict(as_int).values, b.predict(as_float).values)
    np.testing.assert_array_equal(a.predict(as_int).values, a.predict(as_float).values)
