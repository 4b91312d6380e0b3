"""Tests of rasterize_points, rasterize_lines and aggregate_to_segments on hand-computed grids."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point

from trafficrnn import Grid, aggregate_to_segments, rasterize_lines, rasterize_points
from trafficrnn.errors import ConfigError, GridError, VectorError

# 3 × 4 cells of 10 m in UTM 33N
GRID = Grid("EPSG:32633", Affine(10, 0, 601000, 0, -10, 5340000), (3, 4))


def points(xy, times, crs="EPSG:32633"):
    return gpd.GeoDataFrame(
        {"time": pd.to_datetime(times, format="mixed")},
        geometry=[Point(x, y) for x, y in xy],
        crs=crs,
    )


def test_rasterize_points__right_count_in_right_cell():
    pts = points(
        [(601015, 5339995), (601016, 5339991), (601035, 5339975)], ["2024-05-01 08:00"] * 3
    )
    da = rasterize_points(pts, GRID)
    assert da.dims == ("time", "band", "y", "x")
    assert list(da.band.values) == ["density"]
    expected = np.zeros((3, 4))
    expected[0, 1] = 2  # x 601015 / 601016 → col 1, y 5339995 / 5339991 → row 0
    expected[2, 3] = 1
    np.testing.assert_array_equal(da.values[0, 0], expected)
    assert da.rio.crs.to_epsg() == 32633
    assert da.rio.transform() == GRID.transform
    assert da.attrs["units"] == "vehicles per cell"


def test_rasterize_points__reprojected_from_wgs84():
    # the centre of cell (1, 2), expressed in lon/lat
    x, y = GRID.xy(1, 2)
    lonlat = gpd.GeoSeries([Point(x, y)], crs="EPSG:32633").to_crs("EPSG:4326").iloc[0]
    da = rasterize_points(points([(lonlat.x, lonlat.y)], ["2024-05-01"], crs="EPSG:4326"), GRID)
    assert da.values[0, 0, 1, 2] == 1
    assert da.values.sum() == 1


def test_rasterize_points__freq_bins():
    times = ["2024-05-01 08:01", "2024-05-01 08:04", "2024-05-01 08:12"]
    da = rasterize_points(points([(601005, 5339995)] * 3, times), GRID, freq="5min")
    assert list(da.time.values) == list(
        pd.date_range("2024-05-01 08:00", periods=3, freq="5min").values
    )
    np.testing.assert_array_equal(da.values[:, 0, 0, 0], [2, 0, 1])


def test_rasterize_points__times_align_with_images():
    bins = pd.date_range("2024-05-01 08:00", periods=2, freq="5min")
    times = ["2024-05-01 07:59", "2024-05-01 08:00", "2024-05-01 08:09:59", "2024-05-01 08:10"]
    da = rasterize_points(points([(601005, 5339995)] * 4, times), GRID, times=bins, freq="5min")
    np.testing.assert_array_equal(da.values[:, 0, 0, 0], [1, 1])  # 07:59 and 08:10 fall outside


def test_rasterize_points__outside_points_warn():
    pts = points([(601005, 5339995), (700000, 5339995)], ["2024-05-01"] * 2)
    with pytest.warns(UserWarning, match="1 of 2 points lie outside the grid"):
        da = rasterize_points(pts, GRID)
    assert da.values.sum() == 1


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(601000, 601039.99), st.floats(5339970.01, 5340000), st.integers(0, 5)),
        min_size=1,
        max_size=60,
    )
)
def test_rasterize_points__conserves_count(rows):
    pts = points(
        [(x, y) for x, y, _ in rows],
        [pd.Timestamp("2024-05-01") + pd.Timedelta(minutes=5 * k) for *_, k in rows],
    )
    da = rasterize_points(pts, GRID, freq="5min")
    assert da.values.sum() == len(rows)


def test_rasterize_points__missing_times():
    pts = points([(601005, 5339995)] * 2, ["2024-05-01", None])
    with pytest.raises(VectorError, match="1 point\\(s\\) have no time in column 'time'"):
        rasterize_points(pts, GRID)


def test_rasterize_points__no_time_column():
    pts = points([(601005, 5339995)], ["2024-05-01"]).rename(columns={"time": "when"})
    with pytest.raises(VectorError, match="no column 'time'.*pass time_col"):
        rasterize_points(pts, GRID)


def test_rasterize_points__no_crs():
    pts = points([(601005, 5339995)], ["2024-05-01"]).set_crs(None, allow_override=True)
    with pytest.raises(VectorError, match="has no CRS"):
        rasterize_points(pts, GRID)


def test_rasterize_points__not_points():
    lines = gpd.GeoDataFrame(
        {"time": [pd.Timestamp("2024-05-01")]},
        geometry=[LineString([(601000, 5339995), (601020, 5339995)])],
        crs="EPSG:32633",
    )
    with pytest.raises(VectorError, match="holds LineString geometries; expected Point"):
        rasterize_points(lines, GRID)


def test_rasterize_points__negative_freq():
    with pytest.raises(ConfigError, match="freq='-5min' is invalid"):
        rasterize_points(points([(601005, 5339995)], ["2024-05-01"]), GRID, freq="-5min")


def roads():
    return gpd.GeoDataFrame(
        {"lanes": [1, 3]},
        geometry=[
            LineString([(601000, 5339995), (601040, 5339995)]),  # along row 0
            LineString([(601025, 5340000), (601025, 5339970)]),
        ],  # down col 2
        crs="EPSG:32633",
    )


def test_rasterize_lines__mask():
    da = rasterize_lines(roads(), GRID)
    expected = np.zeros((3, 4))
    expected[0, :] = 1
    expected[:, 2] = 1
    np.testing.assert_array_equal(da.values[0], expected)
    assert da.dims == ("band", "y", "x") and list(da.band.values) == ["road"]


def test_rasterize_lines__attr_takes_largest():
    da = rasterize_lines(roads(), GRID, attr="lanes")
    assert da.values[0, 0, 2] == 3  # crossing: 3 lanes beat 1
    assert da.values[0, 0, 0] == 1
    assert da.values[0, 2, 2] == 3
    assert da.values[0, 2, 0] == 0


def test_rasterize_lines__unknown_attr():
    with pytest.raises(VectorError, match="no column 'speed'"):
        rasterize_lines(roads(), GRID, attr="speed")


def test_aggregate_to_segments__length_weighted_mean():
    values = np.arange(12, dtype="float32").reshape(1, 1, 3, 4)
    da = GRID.attach(
        xr.DataArray(
            values,
            dims=("lead", "band", "y", "x"),
            coords={"lead": pd.to_timedelta(["5min"]), "band": ["density"]},
        )
    )
    # 15 m in cell (1, 0) (value 4) and 5 m in cell (1, 1) (value 5)
    seg = gpd.GeoDataFrame(
        {"name": ["a"]},
        geometry=[LineString([(601000, 5339985), (601015, 5339985)])],
        crs="EPSG:32633",
    )
    seg2 = gpd.GeoDataFrame(
        {"name": ["b"]},
        geometry=[LineString([(601005, 5339985), (601015, 5339985)])],
        crs="EPSG:32633",
    )
    out = aggregate_to_segments(da, pd.concat([seg, seg2], ignore_index=True))
    assert list(out.columns) == ["name", "geometry", "lead_5min"]
    assert out["lead_5min"].iloc[0] == pytest.approx((4 * 10 + 5 * 5) / 15)
    assert out["lead_5min"].iloc[1] == pytest.approx((4 * 5 + 5 * 5) / 10)


def test_aggregate_to_segments__outside_grid_is_nan():
    da = GRID.attach(
        xr.DataArray(
            np.ones((1, 1, 3, 4), "float32"),
            dims=("lead", "band", "y", "x"),
            coords={"lead": pd.to_timedelta(["5min"]), "band": ["density"]},
        )
    )
    seg = gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])], crs="EPSG:32633")
    assert np.isnan(aggregate_to_segments(da, seg)["lead_5min"].iloc[0])


def test_aggregate_to_segments__wrong_dims():
    with pytest.raises(GridError, match="expects \\(lead\\|time, band, y, x\\)"):
        aggregate_to_segments(GRID.attach(xr.DataArray(np.ones((3, 4)), dims=("y", "x"))), roads())
