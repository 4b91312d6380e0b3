"""``as_stored``: frames as ``write_stack`` stores and ``read_stack`` reads them back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.conftest import UTM_CRS, UTM_TRANSFORM
from trafficrnn.errors import ExportError
from trafficrnn.io import as_stored, read_stack, write_stack


def rgb_frames(n: int = 2, size: int = 64) -> xr.DataArray:
    """Smooth uint8 RGB frames with small bright dots (vehicles) and a nodata (0) block, on the
    0.5 m UTM grid of the fixtures."""
    rows, cols = np.mgrid[0:size, 0:size]
    smooth = 90 + 40 * np.sin(rows / 9.0) + 30 * np.cos(cols / 7.0)
    values = (
        np.repeat(smooth[None, None], 3, 1).repeat(n, 0) + 10 * np.arange(3)[None, :, None, None]
    )
    values[:, :, 30:32, 10:50:6] = 250  # 2 x 1 px dots, which JPEG smears
    values = values.astype("uint8")
    values[:, :, 8:20, 40:60] = 0  # a cloud: nodata
    x = UTM_TRANSFORM.c + UTM_TRANSFORM.a * (np.arange(size) + 0.5)
    y = UTM_TRANSFORM.f + UTM_TRANSFORM.e * (np.arange(size) + 0.5)
    times = pd.date_range("2024-05-01T08:00", periods=n, freq="15min")
    da = xr.DataArray(
        values,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["red", "green", "blue"], "y": y, "x": x},
        name="image",
    )
    return da.rio.write_crs(UTM_CRS).rio.write_transform(UTM_TRANSFORM)


def test_jpeg__equals_the_written_stack_read_back(tmp_path):
    frames = rgb_frames()
    stored = as_stored(frames)
    write_stack(frames, tmp_path / "s", compress="jpeg", nodata=0)
    back = read_stack(tmp_path / "s")
    assert stored.dtype == np.uint8 and stored.dims == frames.dims and stored.shape == frames.shape
    expected = np.asarray(back.values)
    got = np.where(stored.values > 0, stored.values, np.nan).astype("float32")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[np.isfinite(got)], expected[np.isfinite(expected)])
    # lossy: the dots lose contrast, the smooth background stays close
    diff = np.abs(stored.values.astype(int) - frames.values.astype(int))
    assert diff[:, :, 30:32, 10:50:6].mean() > 8
    assert np.median(diff[:, :, 40:, :]) <= 3


def test_coordinates_and_crs_kept():
    frames = rgb_frames(1)
    stored = as_stored(frames)
    xr.testing.assert_identical(stored.coords.to_dataset(), frames.coords.to_dataset())
    assert stored.rio.crs == frames.rio.crs
    assert stored.rio.transform() == UTM_TRANSFORM


def test_deflate__lossless():
    frames = rgb_frames(1)
    np.testing.assert_array_equal(as_stored(frames, "deflate").values, frames.values)


def test_jpeg_of_floats__refused_with_the_fix():
    frames = rgb_frames(1).astype("float32")
    with pytest.raises(ExportError, match=r"uint8 with 1 or 3 bands, got float32.*deflate"):
        as_stored(frames)


def test_unknown_codec__refused_naming_the_choices():
    with pytest.raises(ExportError, match=r"compress='webp'.*'jpeg', 'deflate'"):
        as_stored(rgb_frames(1), "webp")
