"""Bounded fuzzing of the readers: mutated GeoTIFF and GeoPackage bytes give a valid result or a TrafficRNNError.

Nothing else is allowed: no other exception type, no crash, no hang. The long run is
``python benchmarks/fuzz_readers.py --seconds 600``.
"""

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trafficrnn import Grid
from trafficrnn.errors import TrafficRNNError
from trafficrnn.io import rasterize_points, read_stack, read_vectors, to_geotiff

from .conftest import frame_values, write_tif

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))
FUZZ = settings(
    max_examples=200,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    da = GRID.attach(
        xr.DataArray(
            np.arange(40, dtype="float32").reshape(2, 1, 4, 5),
            dims=("time", "band", "y", "x"),
            coords={
                "time": pd.date_range("2024-05-01", periods=2, freq="15min"),
                "band": ["density"],
            },
        )
    )
    tifs = [
        to_geotiff(da, d / "cog.tif").read_bytes(),
        write_tif(
            d / "frame.tif",
            frame_values(0),
            nodata=-1,
            datetime="2024:05:01 08:00:00",
            descriptions=["r", "g", "b"],
        ).read_bytes(),
    ]
    pts = gpd.GeoDataFrame(
        {"time": pd.date_range("2024-05-01", periods=5, freq="min"), "v": range(5)},
        geometry=gpd.points_from_xy(np.arange(5) * 100 + 500050, [4999950] * 5),
        crs="EPSG:32633",
    )
    pts.to_file(d / "points.gpkg", engine="pyogrio")
    return {"tif": tifs, "gpkg": (d / "points.gpkg").read_bytes()}


def mutations(focus: int):
    """Byte flips (mostly in the first ``focus`` bytes: headers, tags, tables), magic 32-bit values, truncation."""
    op = st.one_of(
        st.tuples(st.just("set"), st.floats(0, 1), st.integers(0, 255), st.booleans()),
        st.tuples(
            st.just("word"),
            st.floats(0, 1),
            st.sampled_from([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x100, 0x100000]),
            st.booleans(),
        ),
        st.tuples(st.just("cut"), st.floats(0, 1), st.just(0), st.just(False)),
    )

    def apply(seed: bytes, ops) -> bytes:
        b = bytearray(seed)
        for kind, where, value, head in ops:
            if not b:
                break
            i = int(where * (min(len(b), focus) if head else len(b) - 1))
            i = min(i, len(b) - 1)
            if kind == "set":
                b[i] = value
            elif kind == "word":
                b[i : i + 4] = value.to_bytes(4, "little")
            else:
                del b[i:]
        return bytes(b)

    return st.lists(op, min_size=1, max_size=6), apply


TIF_OPS, apply_tif = mutations(1024)
GPKG_OPS, apply_gpkg = mutations(1 << 16)


@FUZZ
@given(which=st.integers(0, 1), ops=TIF_OPS, chunks=st.sampled_from([None, "auto"]))
def test_read_stack__fuzzed_geotiff_gives_result_or_error(seeds, tmp_path, which, ops, chunks):
    path = tmp_path / "m_20240501_0800.tif"
    path.write_bytes(apply_tif(seeds["tif"][which], ops))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            images = read_stack(path, chunks=chunks, allow_gaps=True)
            values = np.asarray(images.values)
        except TrafficRNNError:
            return
    assert images.dims == ("time", "band", "y", "x") and values.dtype == np.float32
    assert images.rio.crs is not None


@FUZZ
@given(ops=GPKG_OPS)
def test_read_vectors__fuzzed_geopackage_gives_result_or_error(seeds, tmp_path, ops):
    path = tmp_path / "m.gpkg"
    path.write_bytes(apply_gpkg(seeds["gpkg"], ops))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            points = read_vectors(path, geometry="point")
            counts = rasterize_points(points, GRID, freq="1min")
        except TrafficRNNError:
            return
    assert len(points) > 0 and points.crs is not None
    assert counts.dims == ("time", "band", "y", "x")
