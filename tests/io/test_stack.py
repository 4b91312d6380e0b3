"""Tests of read_stack: sources, timestamps, nodata, laziness, alignment and every refusal."""

import dataclasses
import re
import time

import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from trafficrnn import read_stack
from trafficrnn.errors import (
    CadenceError,
    ConfigError,
    InputFileError,
    MissingCRSError,
    StackMismatchError,
    TimestampError,
)
from trafficrnn.io._chunks import check_chunk_count
from trafficrnn.io.stack import _open_meta

from ..conftest import UTM_TRANSFORM, WGS_CRS, WGS_TRANSFORM, frame_values, write_tif

TIMES = pd.date_range("2024-05-01 08:00", periods=3, freq="5min")


@pytest.mark.parametrize(
    "crs, transform", [("EPSG:32633", UTM_TRANSFORM), (WGS_CRS, WGS_TRANSFORM)]
)
def test_read_stack__folder_round_trip(tmp_path, crs, transform):
    for t in range(3):
        write_tif(
            tmp_path / f"f_{TIMES[t]:%Y%m%d_%H%M}.tif",
            frame_values(t),
            crs=crs,
            transform=transform,
        )
    images = read_stack(tmp_path)
    assert images.dims == ("time", "band", "y", "x")
    assert images.dtype == np.float32
    assert images.rio.crs.to_string() == crs
    assert images.rio.transform() == transform
    assert list(images.time.values) == list(TIMES.values)
    assert images.attrs["cadence"] == pd.Timedelta("5min").isoformat()
    for t in range(3):
        np.testing.assert_array_equal(images.isel(time=t).values, frame_values(t))
    # cell-centre coordinates, hand-computed from the transform
    assert images.x.values[0] == transform.c + transform.a / 2
    assert images.y.values[0] == transform.f + transform.e / 2


def test_read_stack__glob_and_list(utm_stack):
    by_glob = read_stack(str(utm_stack / "*.tif"))
    by_list = read_stack(sorted(utm_stack.glob("*.tif")))
    assert by_glob.identical(by_list)
    assert by_glob.sizes == {"time": 3, "band": 3, "y": 8, "x": 12}


def test_read_stack__sorted_by_time_from_tiff_tag(tmp_path):
    # names sort the other way round from the times in the tags
    for t in range(3):
        write_tif(
            tmp_path / f"img_{2 - t}.tif", frame_values(t), datetime=f"{TIMES[t]:%Y:%m:%d %H:%M:%S}"
        )
    images = read_stack(tmp_path)
    assert list(images.time.values) == list(TIMES.values)
    assert list(images.source.values) == ["img_2.tif", "img_1.tif", "img_0.tif"]
    np.testing.assert_array_equal(images.isel(time=0).values, frame_values(0))


def test_read_stack__tiff_tag_wins_over_name(tmp_path):
    write_tif(tmp_path / "a_20200101_0000.tif", frame_values(0), datetime="2024:05:01 08:00:00")
    write_tif(tmp_path / "b_20200101_0005.tif", frame_values(1), datetime="2024:05:01 08:05:00")
    assert list(read_stack(tmp_path).time.values) == list(TIMES[:2].values)


def test_read_stack__time_list(utm_stack):
    times = ["2025-01-01T00:00", "2025-01-01T01:00", "2025-01-01T02:00"]
    images = read_stack(utm_stack, time=times)
    assert list(images.time.values) == list(pd.DatetimeIndex(times).values)
    assert images.attrs["cadence"] == pd.Timedelta("1h").isoformat()


def test_read_stack__time_pattern(tmp_path):
    for t in range(3):
        write_tif(tmp_path / f"scene-{TIMES[t]:%d%m%Y-%Hh%M}.tif", frame_values(t))
    images = read_stack(tmp_path, time="%d%m%Y-%Hh%M")
    assert list(images.time.values) == list(TIMES.values)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a_2024-05-01T08-30.tif", "2024-05-01 08:30"),
        ("a_20240501_0830.tif", "2024-05-01 08:30"),
        ("S2_20240501T083015_x.tif", "2024-05-01 08:30:15"),
        ("2024-05-01 08:30:00.tif", "2024-05-01 08:30"),
        ("day_20240501.tif", "2024-05-01"),
    ],
)
def test_read_stack__iso_like_names(tmp_path, name, expected):
    write_tif(tmp_path / name, frame_values(0))
    assert read_stack(tmp_path / name).time.values[0] == pd.Timestamp(expected).to_datetime64()


def test_read_stack__single_file_bands_are_time_steps(tmp_path):
    data = np.stack([frame_values(t, bands=1)[0] for t in range(4)])
    path = write_tif(tmp_path / "series.tif", data)
    times = pd.date_range("2024-05-01", periods=4, freq="30min")
    images = read_stack(path, time=list(times))
    assert images.sizes == {"time": 4, "band": 1, "y": 8, "x": 12}
    np.testing.assert_array_equal(images.isel(band=0).values, data)


def test_read_stack__single_file_band_descriptions_hold_times(tmp_path):
    data = np.stack([frame_values(t, bands=1)[0] for t in range(3)])
    path = write_tif(tmp_path / "series.tif", data, descriptions=[t.isoformat() for t in TIMES])
    images = read_stack(path)
    assert list(images.time.values) == list(TIMES.values)
    assert images.sizes["band"] == 1


def test_read_stack__single_multiband_frame(tmp_path):
    path = write_tif(
        tmp_path / "rgb_20240501_0800.tif", frame_values(0), descriptions=["red", "green", "blue"]
    )
    images = read_stack(path)
    assert images.sizes == {"time": 1, "band": 3, "y": 8, "x": 12}
    assert list(images.band.values) == ["red", "green", "blue"]
    assert images.attrs["cadence"] == ""


def test_read_stack__nodata_becomes_nan(tmp_path):
    data = frame_values(0, bands=1).astype("int16")
    data[0, 2, 3] = -9999
    path = write_tif(tmp_path / "f_20240501_0800.tif", data, nodata=-9999)
    images = read_stack(path)
    assert np.isnan(images.values[0, 0, 2, 3])
    assert np.isfinite(images.values).sum() == 8 * 12 - 1
    assert images.dtype == np.float32


def test_read_stack__lazy_with_chunks(utm_stack):
    images = read_stack(utm_stack, chunks={"x": 6, "y": 4})
    assert isinstance(images.data, dsa.Array)
    np.testing.assert_array_equal(images.isel(time=2).values, frame_values(2))


def test_read_stack__bands_by_name_and_position(tmp_path):
    for t in range(2):
        write_tif(
            tmp_path / f"f_{TIMES[t]:%Y%m%d_%H%M}.tif",
            frame_values(t),
            descriptions=["red", "green", "blue"],
        )
    assert list(read_stack(tmp_path, bands=["blue", "red"]).band.values) == ["blue", "red"]
    assert list(read_stack(tmp_path, bands=[2]).band.values) == ["green"]


def test_read_stack__unknown_band(utm_stack):
    with pytest.raises(StackMismatchError, match="no band named 'nir'"):
        read_stack(utm_stack, bands=["nir"])


def test_read_stack__reproject_onto_first_frame(tmp_path):
    write_tif(
        tmp_path / "a_20240501_0800.tif",
        frame_values(0, bands=1, height=20, width=20),
        transform=Affine(0.0005, 0, 16.36, 0, -0.0005, 48.21),
        crs=WGS_CRS,
    )
    # an area in UTM 33N, coarser, that holds all of the first frame ((601036, 5339424) to (601799, 5340549))
    write_tif(
        tmp_path / "b_20240501_0805.tif",
        np.ones((1, 120, 90), "float32"),
        transform=Affine(10, 0, 601000, 0, -10, 5340600),
        crs="EPSG:32633",
    )
    with pytest.raises(StackMismatchError, match="disagree on CRS"):
        read_stack(tmp_path)
    images = read_stack(tmp_path, align="reproject")
    assert images.rio.crs.to_string() == WGS_CRS
    assert images.rio.transform() == Affine(0.0005, 0, 16.36, 0, -0.0005, 48.21)
    assert images.sizes == {"time": 2, "band": 1, "y": 20, "x": 20}
    np.testing.assert_allclose(images.isel(time=1).values, 1.0)  # covered: no NaN


# --- refusals -----------------------------------------------------------------------------


def test_read_stack__crs_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1), crs="EPSG:32632")
    with pytest.raises(
        StackMismatchError,
        match=r"disagree on CRS: a_20240501_0800.tif is EPSG:32633, b_20240501_0805.tif is EPSG:32632; reproject: read_stack\(..., align='reproject'\) \(CLI: --align reproject\)",
    ):
        read_stack(tmp_path)


def test_read_stack__transform_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(
        tmp_path / "b_20240501_0805.tif",
        frame_values(1),
        transform=Affine(0.5, 0, 601001, 0, -0.5, 5340000),
    )
    with pytest.raises(StackMismatchError, match="disagree on transform.*b_20240501_0805.tif"):
        read_stack(tmp_path)


def test_read_stack__shape_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1, width=10))
    with pytest.raises(
        StackMismatchError,
        match=r"disagree on shape: a_20240501_0800.tif is \(8, 12\), b_20240501_0805.tif is \(8, 10\)",
    ):
        read_stack(tmp_path)


def test_read_stack__band_count_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1, bands=1))
    with pytest.raises(
        StackMismatchError,
        match="disagree on band count: a_20240501_0800.tif is 3, b_20240501_0805.tif is 1",
    ):
        read_stack(tmp_path)


def test_read_stack__dtype_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0), dtype="uint16")
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1), dtype="float32")
    with pytest.raises(
        StackMismatchError, match="disagree on dtype: a_20240501_0800.tif is uint16"
    ):
        read_stack(tmp_path)


def test_read_stack__duplicate_timestamps(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0800.tif", frame_values(1))
    with pytest.raises(
        TimestampError,
        match=r"duplicate timestamps.*2024-05-01T08:00:00: a_20240501_0800.tif, b_20240501_0800.tif",
    ):
        read_stack(tmp_path)


def test_read_stack__timestamps_not_found(tmp_path):
    write_tif(tmp_path / "a.tif", frame_values(0))
    write_tif(tmp_path / "b.tif", frame_values(1))
    with pytest.raises(
        TimestampError, match=r"cannot find the time of 2 frame\(s\) \(a.tif, b.tif\).*pass time="
    ):
        read_stack(tmp_path)


def test_read_stack__pattern_does_not_match(utm_stack):
    with pytest.raises(TimestampError, match="do not match the pattern 'x_%Y'"):
        read_stack(utm_stack, time="x_%Y")


def test_read_stack__time_list_wrong_length(utm_stack):
    with pytest.raises(TimestampError, match="time= has 2 timestamps but the stack has 3 files"):
        read_stack(utm_stack, time=["2024-01-01", "2024-01-02"])


def test_read_stack__irregular_cadence(tmp_path):
    for minute in (0, 5, 10, 25, 30):
        write_tif(tmp_path / f"f_20240501_08{minute:02d}.tif", frame_values(0))
    with pytest.raises(
        CadenceError,
        match=r"expected a step of 0 days 00:05:00.*2024-05-01T08:10:00 → 2024-05-01T08:25:00: step 0 days 00:15:00, 2 frame\(s\) missing.*allow_gaps=True",
    ):
        read_stack(tmp_path)


def test_read_stack__allow_gaps_records_them(tmp_path):
    for minute in (0, 5, 10, 25, 30):
        write_tif(tmp_path / f"f_20240501_08{minute:02d}.tif", frame_values(0))
    images = read_stack(tmp_path, allow_gaps=True)
    assert images.attrs["gaps"] == ["2024-05-01T08:10:00/2024-05-01T08:25:00"]
    assert images.sizes["time"] == 5


def test_read_stack__not_a_raster(tmp_path):
    (tmp_path / "f_20240501_0800.tif").write_text("this is not a GeoTIFF")
    with pytest.raises(
        InputFileError, match=r"f_20240501_0800.tif is not a readable raster.*expected a GeoTIFF"
    ):
        read_stack(tmp_path)


def test_read_stack__truncated_file(tmp_path):
    path = write_tif(
        tmp_path / "f_20240501_0800.tif",
        np.random.default_rng(0).random((3, 64, 64), dtype="float32"),
    )
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(InputFileError, match="f_20240501_0800.tif"):
        read_stack(path).values


@pytest.fixture(scope="module")
def huge_sparse_tif(tmp_path_factory):
    """A header that declares 100000 × 100000 px (10 GB of uint8) with no block written: ~10 kB on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge_20240501_0800.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=100_000,
        height=100_000,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=UTM_TRANSFORM,
        tiled=True,
        blockxsize=4096,
        blockysize=4096,
        SPARSE_OK=True,
        BIGTIFF="YES",
    ):
        pass
    assert path.stat().st_size < 100_000
    return path


@pytest.mark.parametrize("chunks", [{"y": 64, "x": 64}, 64], ids=["dict", "int"])
def test_read_stack__lazy_read_with_too_many_chunks(huge_sparse_tif, chunks):
    # 1563 × 1563 chunks: building that dask graph alone took ~25 s before the guard
    with pytest.raises(
        ConfigError,
        match=(
            r"huge_20240501_0800.tif: reading its 100000 × 100000 px × 1 band\(s\) lazily with chunks="
            + re.escape(repr(chunks))
            + r" would make 2,442,969 dask chunks, more than the 1,000,000 allowed per "
            r"file .*; pass larger chunks, e.g. chunks=\{'y': 256, 'x': 256\}"
        ),
    ):
        read_stack(huge_sparse_tif, chunks=chunks)


def test_check_chunk_count__absurd_header_refused_without_building_chunks(huge_sparse_tif):
    # what a fuzzed header can declare: 2^32 - 1 px on each side; "auto" chunks are bounded, not built
    frame = dataclasses.replace(_open_meta(huge_sparse_tif), shape=(2**32 - 1, 2**32 - 1))
    started = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"4294967295 × 4294967295 px .* would make at least [\d,]+ dask chunks"
    ):
        check_chunk_count(frame, "auto")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("chunks", [{"y": 4096, "x": 4096}, "auto"], ids=["dict", "auto"])
def test_read_stack__huge_file_lazy_with_large_chunks(huge_sparse_tif, chunks):
    images = read_stack(huge_sparse_tif, chunks=chunks)
    assert images.shape == (1, 1, 100_000, 100_000) and isinstance(images.data, dsa.Array)
    assert 1 < images.data.npartitions <= 1_000_000
    if isinstance(chunks, dict):
        assert images.data.npartitions == 25 * 25


def test_read_stack__no_crs(tmp_path):
    write_tif(tmp_path / "f_20240501_0800.tif", frame_values(0), crs=None)
    with pytest.raises(
        MissingCRSError, match="f_20240501_0800.tif has no CRS.*gdal_edit.py -a_srs"
    ):
        read_stack(tmp_path)


def test_read_stack__rotated_transform(tmp_path):
    write_tif(
        tmp_path / "f_20240501_0800.tif",
        frame_values(0),
        transform=Affine(0.5, 0.1, 601000, 0.1, -0.5, 5340000),
    )
    with pytest.raises(StackMismatchError, match="not north-up"):
        read_stack(tmp_path)


def test_read_stack__missing_path(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_stack(tmp_path / "nope")


def test_read_stack__empty_folder(tmp_path):
    with pytest.raises(InputFileError, match="no GeoTIFF"):
        read_stack(tmp_path)


def test_read_stack__glob_matches_nothing(tmp_path):
    with pytest.raises(InputFileError, match="no file matches"):
        read_stack(str(tmp_path / "*.tif"))


def test_read_stack__bad_align(utm_stack):
    with pytest.raises(ValueError, match="align='nearest' is invalid"):
        read_stack(utm_stack, align="nearest")
