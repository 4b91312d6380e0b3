"""Tests of the footprints of warped grids, and of read_stack(..., align="reproject") refusing frames that
do not overlap the first frame or would be mostly NaN once warped onto it."""

import numpy as np
import pytest
from affine import Affine

from trafficrnn import read_stack
from trafficrnn.errors import StackMismatchError, TimestampError
from trafficrnn.io._warp import MIN_COVERAGE, bounds_text, footprint_share

from ..conftest import UTM_CRS, frame_values, write_tif

# the first frame: 40 × 40 px of 10 m in UTM 33N, (601000, 5339600) to (601400, 5340000)
REF = Affine(10, 0, 601000, 0, -10, 5340000)


def write_pair(
    folder, second_transform, second_crs=UTM_CRS, shape=(40, 40), nodata=None, values=None
):
    """The reference frame at 08:00 and a second frame at 08:05 on another grid."""
    write_tif(
        folder / "a_20240501_0800.tif", frame_values(0, bands=1, height=40, width=40), transform=REF
    )
    data = np.ones((1, *shape), "float32") if values is None else values
    write_tif(
        folder / "b_20240501_0805.tif",
        data,
        transform=second_transform,
        crs=second_crs,
        nodata=nodata,
    )
    return folder


@pytest.mark.parametrize(
    "transform, shape, expected",
    [
        (REF, (40, 40), 1.0),  # the same grid
        (Affine(10, 0, 601000, 0, -10, 5340000), (40, 20), 0.5),  # the western half
        (
            Affine(5, 0, 601000, 0, -5, 5340000),
            (40, 40),
            0.25,
        ),  # the north-west quarter, finer pixels
        (Affine(20, 0, 600800, 0, -20, 5340200), (40, 40), 1.0),  # a coarser frame around all of it
        (Affine(10, 0, 700000, 0, -10, 5340000), (40, 40), 0.0),  # 100 km east
    ],
)
def test_footprint_share__hand_computed(transform, shape, expected):
    assert footprint_share(UTM_CRS, transform, shape, UTM_CRS, REF, (40, 40)) == pytest.approx(
        expected
    )


def test_footprint_share__across_crs():
    # the reference frame in UTM 33S: the same place 10 000 km further north in that CRS's coordinates
    south = Affine(10, 0, 601000, 0, -10, 15340000)
    assert footprint_share("EPSG:32733", south, (40, 40), UTM_CRS, REF, (40, 40)) == pytest.approx(
        1.0
    )
    # Korea (UTM 52N) seen from Vienna
    assert (
        footprint_share(
            "EPSG:32652", Affine(30, 0, 300000, 0, -30, 4000000), (10, 10), UTM_CRS, REF, (40, 40)
        )
        == 0.0
    )


def test_footprint_share__large_grids_are_sampled():
    # 100 000 px a side: sampled at 256, exact to about 1/256
    big = Affine(0.004, 0, 601000, 0, -0.004, 5340000)
    assert footprint_share(
        UTM_CRS, big, (100_000, 50_000), UTM_CRS, REF, (40, 40)
    ) == pytest.approx(0.5, abs=0.01)


def test_bounds_text__utm_and_degrees():
    assert bounds_text(UTM_CRS, REF, (40, 40)) == "(601000, 5339600, 601400, 5340000) in EPSG:32633"
    assert (
        bounds_text("EPSG:4326", Affine(0.001, 0, 16.36, 0, -0.001, 48.21), (10, 20))
        == "(16.36, 48.2, 16.38, 48.21) in EPSG:4326"
    )


def test_read_stack__reproject_refuses_a_frame_far_away(tmp_path):
    # a Bahamas frame (WGS 84) beside a Vienna frame: nothing of it lands on the first frame
    write_pair(
        tmp_path, Affine(0.001, 0, -77.9, 0, -0.001, 24.6), second_crs="EPSG:4326", shape=(20, 20)
    )
    expected = (
        r"b_20240501_0805.tif does not overlap the first frame a_20240501_0800.tif once warped onto its "
        r"grid \(b_20240501_0805.tif: \(-77.9, 24.58, -77.88, 24.6\) in EPSG:4326; a_20240501_0800.tif: "
        r"\(601000, 5339600, 601400, 5340000\) in EPSG:32633\): align='reproject' expects every frame to "
        r"cover at least 50% of the first one .*drop that file"
    )
    with pytest.raises(StackMismatchError, match=expected):
        read_stack(tmp_path, align="reproject")


def test_read_stack__reproject_refuses_a_mostly_empty_frame(tmp_path):
    # the second frame holds the north-west quarter of the first: 75 % of it would be NaN
    write_pair(tmp_path, Affine(10, 0, 601000, 0, -10, 5340000), shape=(20, 20))
    with pytest.raises(
        StackMismatchError, match="b_20240501_0805.tif covers only 25% of the first frame"
    ):
        read_stack(tmp_path, align="reproject")


def test_read_stack__reproject_keeps_a_frame_that_covers_more_than_half(tmp_path):
    # 30 of the 40 columns: 25 % NaN, above MIN_COVERAGE
    write_pair(tmp_path, Affine(10, 0, 601000, 0, -10, 5340000), shape=(40, 30))
    images = read_stack(tmp_path, align="reproject")
    warped = images.isel(time=1, band=0).values
    assert MIN_COVERAGE == 0.5
    assert np.isnan(warped).mean() == pytest.approx(0.25)
    np.testing.assert_allclose(
        warped[:, :30], 1.0
    )  # the pixels it covers, hand-computed: columns 0 to 29


def test_read_stack__reproject_nodata_of_the_file_does_not_count(tmp_path):
    # a frame one pixel larger on every side, 90 % nodata (clouds): it covers the first frame, so it is kept
    values = np.full((1, 42, 42), -9999, "float32")
    values[:, :, :4] = 7
    write_pair(
        tmp_path,
        Affine(10, 0, 600990, 0, -10, 5340010),
        shape=(42, 42),
        values=values,
        nodata=-9999,
    )
    images = read_stack(tmp_path, align="reproject")
    assert np.isnan(images.isel(time=1).values).mean() > 0.85


def test_read_stack__hints_name_the_cli_flags(tmp_path):
    write_tif(tmp_path / "a.tif", frame_values(0))
    write_tif(tmp_path / "b.tif", frame_values(1))
    with pytest.raises(
        TimestampError,
        match=r"CLI: --time-pattern 'name_%Y%m%d_%H%M'.*"
        r"gdal_edit.py -mo TIFFTAG_DATETIME='2024:05:01 08:00:00' a.tif",
    ):
        read_stack(tmp_path)


def test_read_stack__crs_hint_names_the_cli_flag(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1), crs="EPSG:32632")
    with pytest.raises(
        StackMismatchError,
        match=r"align='reproject'\) \(CLI: --align reproject\) warps every "
        r"frame onto the first frame's grid",
    ):
        read_stack(tmp_path)


def test_read_stack__band_count_hint_is_a_gdal_command(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1, bands=1))
    with pytest.raises(
        StackMismatchError, match=r"band count.*gdal_translate -b 1 -b 2 -b 3 IN.tif OUT.tif"
    ):
        read_stack(tmp_path)
