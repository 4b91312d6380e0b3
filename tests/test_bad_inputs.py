"""The catalogue of bad inputs (docs/bad_inputs.md): the cases not already covered by the module tests."""

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString, Point

from trafficrnn import Grid
from trafficrnn.errors import (
    ConfigError,
    InputFileError,
    MissingCRSError,
    ModelFileError,
    StackMismatchError,
    TimestampError,
    VectorError,
)
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import rasterize_points, read_stack, read_vectors
from trafficrnn.io.timestamps import parse_iso, parse_tiff_datetime

from .conftest import frame_values, write_tif
from .test_estimator import FAST, density_series, image_series
from .test_persist import edited_model, saved  # noqa: F401  (fixture)

GRID = Grid("EPSG:32633", Affine(10, 0, 601000, 0, -10, 5340000), (3, 4))


# -- rasters ------------------------------------------------------------------------------------


def test_read_stack__south_up_transform(tmp_path):
    write_tif(
        tmp_path / "f_20240501_0800.tif",
        frame_values(0),
        transform=Affine(0.5, 0, 601000, 0, 0.5, 5340000),
    )
    with pytest.raises(StackMismatchError, match="is not north-up.*warp them north-up first"):
        read_stack(tmp_path)


def test_read_stack__no_geotransform(tmp_path):
    write_tif(tmp_path / "f_20240501_0800.tif", frame_values(0), transform=Affine.identity())
    with pytest.raises(MissingCRSError, match="f_20240501_0800.tif has no geotransform"):
        read_stack(tmp_path)


def test_read_stack__geopackage_is_not_a_raster(tmp_path):
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "v.gpkg")
    with pytest.raises(InputFileError, match="v.gpkg is not a readable raster.*expected a GeoTIFF"):
        read_stack(tmp_path / "v.gpkg")


def test_read_stack__empty_file(tmp_path):
    (tmp_path / "f_20240501_0800.tif").write_bytes(b"")
    with pytest.raises(InputFileError, match="f_20240501_0800.tif is not a readable raster"):
        read_stack(tmp_path)


def test_read_stack__png_without_georeference(tmp_path):
    path = tmp_path / "f_20240501_0800.png"
    with rasterio.open(path, "w", driver="PNG", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), "uint8"))
    with pytest.raises(MissingCRSError, match="f_20240501_0800.png has no CRS"):
        read_stack(path)


def test_read_stack__truncated_file_read_lazily(tmp_path):
    path = write_tif(
        tmp_path / "f_20240501_0800.tif",
        np.random.default_rng(0).random((3, 64, 64), dtype="float32"),
    )
    path.write_bytes(path.read_bytes()[:3000])
    images = read_stack(
        path, chunks=16
    )  # the header is intact: the damage shows when pixels are read
    with pytest.raises(
        InputFileError, match="f_20240501_0800.tif could not be read.*truncated or corrupt"
    ):
        images.values


def test_read_stack__resolution_mismatch(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(
        tmp_path / "b_20240501_0805.tif",
        frame_values(1),
        transform=Affine(1.0, 0, 601000, 0, -1.0, 5340000),
    )
    with pytest.raises(
        StackMismatchError, match="disagree on transform.*b_20240501_0805.tif is \\(1.0, 0.0"
    ):
        read_stack(tmp_path)


def test_read_stack__inf_pixels_are_kept_for_the_model_to_mask(tmp_path):
    values = frame_values(0)
    values[0, 0, 0] = np.inf
    write_tif(tmp_path / "f_20240501_0800.tif", values)
    assert np.isposinf(read_stack(tmp_path).values[0, 0, 0, 0])


# -- timestamps ---------------------------------------------------------------------------------


def test_read_stack__malformed_tiff_datetime_falls_back_to_name(tmp_path):
    write_tif(tmp_path / "f_20240501_0800.tif", frame_values(0), datetime="2024:55:01 08:00:00")
    assert str(read_stack(tmp_path).time.values[0])[:19] == "2024-05-01T08:00:00"


def test_parse_tiff_datetime__impossible_date_is_none():
    assert parse_tiff_datetime("2024:55:01 08:00:00") is None


@pytest.mark.parametrize("text", ["may", "1 2 3", "08:00", "2024:55:01 08:00:00"])
def test_parse_iso__not_iso(text):
    with pytest.raises(TimestampError, match="expected ISO 8601"):
        parse_iso(text)


def test_read_stack__band_named_like_a_month_is_a_name(tmp_path):
    write_tif(
        tmp_path / "f_20240501_0800.tif", frame_values(0, bands=2), descriptions=["may", "june"]
    )
    assert list(read_stack(tmp_path).band.values) == ["may", "june"]


def test_read_stack__year_out_of_range_in_name(tmp_path):
    write_tif(tmp_path / "f_0001-01-01T08-00.tif", frame_values(0))
    with pytest.raises(TimestampError, match="out of range.*between the years 1678 and 2261"):
        read_stack(tmp_path)


def test_read_stack__unparseable_time_list(utm_stack):
    with pytest.raises(TimestampError, match="time=: cannot parse \\['noon', 'later', 'never'\\]"):
        read_stack(utm_stack, time=["noon", "later", "never"])


def test_read_stack__out_of_order_files_are_sorted(tmp_path):
    for name, minute in (("a", 10), ("b", 0), ("c", 5)):
        write_tif(
            tmp_path / f"{name}.tif",
            frame_values(minute),
            datetime=f"2024:05:01 08:{minute:02d}:00",
        )
    images = read_stack(tmp_path)
    assert (
        list(images.source.values) == ["b.tif", "c.tif", "a.tif"]
        and images.attrs["cadence"] == "P0DT0H5M0S"
    )


# -- vectors ------------------------------------------------------------------------------------


def _points(n=2):
    return gpd.GeoDataFrame(
        {"time": pd.date_range("2024-05-01", periods=n, freq="5min")},
        geometry=[Point(601005, 5339995)] * n,
        crs="EPSG:32633",
    )


def test_read_vectors__round_trip(tmp_path):
    _points().to_file(tmp_path / "v.gpkg", engine="pyogrio")
    pts = read_vectors(tmp_path / "v.gpkg", geometry="point")
    assert len(pts) == 2 and pts.crs == "EPSG:32633"
    assert rasterize_points(pts, GRID).values.sum() == 2


def test_read_vectors__missing_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.gpkg does not exist"):
        read_vectors(tmp_path / "nope.gpkg")


def test_read_vectors__not_a_vector_file(tmp_path):
    (tmp_path / "v.gpkg").write_bytes(b"SQLite format 3\x00" + bytes(200))
    with pytest.raises(InputFileError, match="v.gpkg is not a readable vector file"):
        read_vectors(tmp_path / "v.gpkg")


def test_read_vectors__empty_layer(tmp_path):
    _points().iloc[:0].to_file(tmp_path / "v.gpkg", engine="pyogrio")
    with pytest.raises(VectorError, match="is empty \\(0 features\\); expected at least one point"):
        read_vectors(tmp_path / "v.gpkg", geometry="point")


def test_read_vectors__no_crs(tmp_path):
    _points().set_crs(None, allow_override=True).to_file(tmp_path / "v.gpkg", engine="pyogrio")
    with pytest.raises(VectorError, match="has no CRS.*set_crs"):
        read_vectors(tmp_path / "v.gpkg")


def test_read_vectors__several_layers_need_a_name(tmp_path):
    _points().to_file(tmp_path / "v.gpkg", layer="cars", engine="pyogrio")
    _points().to_file(tmp_path / "v.gpkg", layer="trucks", engine="pyogrio")
    with pytest.raises(
        VectorError, match="holds 2 layers \\(cars, trucks\\); pick one with layer="
    ):
        read_vectors(tmp_path / "v.gpkg")


def test_read_vectors__unknown_layer(tmp_path):
    _points().to_file(tmp_path / "v.gpkg", layer="cars", engine="pyogrio")
    with pytest.raises(VectorError, match="has no layer 'bikes'; its layers: cars"):
        read_vectors(tmp_path / "v.gpkg", layer="bikes")


def test_read_vectors__wrong_geometry(tmp_path):
    roads = gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])], crs="EPSG:32633")
    roads.to_file(tmp_path / "roads.gpkg", engine="pyogrio")
    with pytest.raises(VectorError, match="holds LineString geometries; expected Point"):
        read_vectors(tmp_path / "roads.gpkg", geometry="point")


def test_rasterize_points__empty_without_times():
    with pytest.raises(VectorError, match="points layer is empty.*pass times="):
        rasterize_points(_points().iloc[:0], GRID)


def test_rasterize_points__empty_with_times_is_zero_counts():
    da = rasterize_points(
        _points().iloc[:0], GRID, times=pd.date_range("2024-05-01", periods=3, freq="5min")
    )
    assert da.shape == (3, 1, 3, 4) and da.values.sum() == 0


def test_rasterize_points__unparseable_freq():
    with pytest.raises(ConfigError, match="freq='often' is invalid"):
        rasterize_points(_points(), GRID, freq="often")


# -- the estimator: inf, clouds ------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_model():
    target = density_series(periods=40)
    images = image_series(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrafficForecaster("convlstm", tile_size=4, **FAST).fit(images, target), images


@pytest.fixture(scope="module")
def density_model():
    da = density_series(periods=40)
    return TrafficForecaster("convgru", **FAST).fit(da), da


def test_predict__inf_is_missing_like_nan_on_grids(density_model):
    est, da = density_model
    with_inf, with_nan = da.copy(), da.copy()
    with_inf[-1, 0, 0, 0], with_nan[-1, 0, 0, 0] = np.inf, np.nan
    np.testing.assert_array_equal(est.predict(with_inf).values, est.predict(with_nan).values)
    assert np.isfinite(est.predict(with_inf).values).all()


def test_predict__inf_is_missing_like_nan_on_images(image_model):
    est, images = image_model
    with_inf, with_nan = images.copy(), images.copy()
    with_inf[-1, :, 0:4, 0:4], with_nan[-1, :, 0:4, 0:4] = -np.inf, np.nan
    np.testing.assert_array_equal(est.predict(with_inf).values, est.predict(with_nan).values)


def test_predict__all_cloud_frames_give_a_finite_forecast(image_model):
    est, images = image_model
    clouded = images.copy()
    clouded[-3:] = np.nan  # the last three frames are all cloud / all nodata
    fc = est.predict(clouded)
    assert np.isfinite(fc.values).all() and (fc.values >= 0).all()


def test_fit__all_nodata_target_band():
    da = density_series(periods=40)
    da[:] = np.nan
    with pytest.raises(
        ConfigError, match="band 'density' has no finite value in the training data"
    ):
        TrafficForecaster(**FAST).fit(da)


# -- crafted model files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda c: c["model_config"].update(hidden_channels=[10**9]),
            r"hidden_channels\[0\] = 1000000000, expected an integer in \[1, 4096\]",
        ),
        (
            lambda c: c["model_config"].update(hidden_channels="64"),
            "hidden_channels = '64', expected a list",
        ),
        (
            lambda c: c["model_config"].update(hidden_channels=[8] * 100),
            "expected a list of 1 to 16 channel counts",
        ),
        (
            lambda c: c["model_config"].update(in_channels=2.5),
            "in_channels = 2.5, expected an integer",
        ),
        (lambda c: c["model_config"].update(kernel_size=10**6), "kernel_size = 1000000"),
        (
            lambda c: c["model_config"].update(residual="yes"),
            "residual = 'yes', expected true or false",
        ),
        (
            lambda c: c["model_config"].update(encoder={"tile_size": 10**7}),
            "encoder.tile_size = 10000000",
        ),
        (lambda c: c["model_config"].update(encoder=[1, 2]), "encoder is list, expected a dict"),
        (
            lambda c: c["model_config"].update(__class__="os.system"),
            r"unknown key\(s\) \['__class__'\]",
        ),
        (
            lambda c: c["model_config"].update(cell_kwargs={"dtype": "float64"}),
            "cell_kwargs has unknown key",
        ),
        (
            lambda c: c["model_config"].update(past_covariate_channels=7),
            "weights do not fit the model",
        ),
    ],
)
def test_load__crafted_model_config_refused_before_allocation(saved, tmp_path, edit, match):  # noqa: F811
    path = edited_model(saved, tmp_path, edit)
    with pytest.raises(ModelFileError, match=match):
        TrafficForecaster.load(path)
