"""Tests of the writers: COG layout and tags, one-file-per-step stacks, CF-NetCDF, GeoPackage, atomic writes."""

import json
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import LineString

from trafficrnn import (
    Grid,
    read_netcdf,
    read_stack,
    to_geopackage,
    to_geotiff,
    to_netcdf,
    write_stack,
)
from trafficrnn.errors import ExportError, GridError, MissingCRSError, OutputExistsError

UTM = Grid("EPSG:32633", Affine(8, 0, 601000, 0, -8, 5340000), (5, 7), 16)
WGS = Grid("EPSG:4326", Affine(0.011862, 0, -74.022216, 0, -0.0085379286, 40.818562), (14, 8))
ISSUED = pd.Timestamp("2024-05-01 08:55")
needs_gdal = pytest.mark.skipif(
    shutil.which("gdalinfo") is None, reason="gdalinfo (apt gdal-bin) not installed"
)


def gdal_json(name: str) -> dict:
    """``gdalinfo -json`` of a file or GDAL dataset name, parsed."""
    result = subprocess.run(["gdalinfo", "-json", name], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def forecast(grid=UTM, bands=("density",), leads=3):
    rng = np.random.default_rng(1)
    lead = pd.to_timedelta([5 * (i + 1) for i in range(leads)], unit="min")
    da = xr.DataArray(
        rng.random((leads, len(bands), *grid.shape), dtype="float32"),
        dims=("lead", "band", "y", "x"),
        coords={"lead": lead, "band": list(bands), "valid_time": ("lead", ISSUED + lead)},
    )
    da = grid.attach(da)
    da.attrs.update(issued=ISSUED.isoformat(), model="convlstm", units="vehicles per cell")
    return da


def observed(grid=UTM, bands=("density",), steps=4):
    times = pd.date_range("2024-05-01 08:00", periods=steps, freq="5min")
    values = np.arange(steps * len(bands) * grid.shape[0] * grid.shape[1], dtype="float32")
    da = xr.DataArray(
        values.reshape(steps, len(bands), *grid.shape),
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": list(bands)},
    )
    da = grid.attach(da)
    da.attrs["units"] = "vehicles per cell"
    return da


# --- GeoTIFF / COG ------------------------------------------------------------------------


def test_to_geotiff__valid_cog_with_descriptions_and_tags(tmp_path):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == UTM.transform
        assert src.count == 3
        assert src.descriptions[0] == "lead +5min, valid 2024-05-01T09:00:00Z"
        assert src.tags(2) == {
            "band": "density",
            "lead": "P0DT0H10M0S",
            "valid_time": "2024-05-01T09:05:00Z",
        }
        tags = src.tags()
        assert tags["issued"] == "2024-05-01T08:55:00Z" and tags["model"] == "convlstm"
        assert tags["units"] == "vehicles per cell"
        assert src.units == ("vehicles per cell",) * 3  # GDAL's band unit type, not only a tag
        assert np.isnan(src.nodata)
        np.testing.assert_array_equal(src.read(), forecast().values[:, 0])


def test_to_geotiff__large_enough_for_overviews_is_still_cog(tmp_path):
    grid = Grid("EPSG:32633", Affine(1, 0, 601000, 0, -1, 5340000), (600, 700))
    da = grid.attach(
        xr.DataArray(
            np.ones((1, *grid.shape), "float32"), dims=("band", "y", "x"), coords={"band": ["road"]}
        )
    )
    path = to_geotiff(da, tmp_path / "big.tif")
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as src:
        assert src.overviews(1)  # overviews were built
        assert src.block_shapes[0] == (512, 512)


@needs_gdal
def test_to_geotiff__gdalinfo_agrees(tmp_path):
    path = to_geotiff(forecast(WGS, bands=("inflow", "outflow"), leads=2), tmp_path / "f.tif")
    info = gdal_json(str(path))
    assert info["geoTransform"] == [-74.022216, 0.011862, 0.0, 40.818562, 0.0, -0.0085379286]
    assert 'ID["EPSG",4326]' in info["coordinateSystem"]["wkt"]
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert [b["description"] for b in info["bands"]] == [
        "lead +5min, valid 2024-05-01T09:00:00Z, inflow",
        "lead +5min, valid 2024-05-01T09:00:00Z, outflow",
        "lead +10min, valid 2024-05-01T09:05:00Z, inflow",
        "lead +10min, valid 2024-05-01T09:05:00Z, outflow",
    ]
    assert {b["unit"] for b in info["bands"]} == {"vehicles per cell"}


@pytest.mark.parametrize("grid", [UTM, WGS], ids=["utm", "wgs84"])
def test_to_geotiff__read_stack_round_trip(tmp_path, grid):
    da = observed(grid, bands=("inflow", "outflow"))
    back = read_stack(to_geotiff(da, tmp_path / "obs.tif"))
    np.testing.assert_array_equal(back.values, da.values)
    assert back.rio.crs == grid.crs
    assert back.rio.transform() == grid.transform
    assert list(back.time.values) == list(da.time.values)
    assert list(back.band.values) == ["inflow", "outflow"]
    assert back.attrs["units"] == "vehicles per cell"


def test_to_geotiff__times_in_the_stack_zone(tmp_path):
    da = forecast()
    da.attrs["timezone"] = "Europe/Vienna"
    with rasterio.open(to_geotiff(da, tmp_path / "f.tif")) as src:
        assert src.tags()["issued"] == "2024-05-01T08:55:00+02:00"
        assert src.tags(1)["valid_time"] == "2024-05-01T09:00:00+02:00"
        assert src.descriptions[0] == "lead +5min, valid 2024-05-01T09:00:00+02:00"


def test_to_geotiff__observed_times_read_back_with_their_zone(tmp_path):
    utc = observed()
    with rasterio.open(to_geotiff(utc, tmp_path / "utc.tif")) as src:
        assert src.tags(1)["time"] == "2024-05-01T08:00:00Z"
    local = observed()
    local.attrs["timezone"] = (
        "America/New_York"  # wall-clock times beside the zone, as read_stack reads them
    )
    back = read_stack(to_geotiff(local, tmp_path / "local.tif"))
    assert (
        back.indexes["time"].equals(local.indexes["time"])
        and back.attrs["timezone"] == "America/New_York"
    )
    assert read_stack(tmp_path / "utc.tif").indexes["time"].equals(utc.indexes["time"])


def test_to_geotiff__refuses_existing_file(tmp_path):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    with pytest.raises(OutputExistsError, match="f.tif already exists; pass overwrite=True"):
        to_geotiff(forecast(), path)


def test_to_geotiff__overwrite(tmp_path):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    to_geotiff(forecast() * 0 + 7, path, overwrite=True)
    with rasterio.open(path) as src:
        assert (src.read() == 7).all()


def test_to_geotiff__failed_write_leaves_old_file_and_no_partial(tmp_path):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    before = path.read_bytes()
    with pytest.raises(ExportError, match="JPEG compression needs uint8"):
        to_geotiff(forecast(), path, overwrite=True, compress="jpeg")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.qml", "f.tif"]  # f.qml: its QGIS style


def test_to_geotiff__no_crs(tmp_path):
    da = xr.DataArray(
        np.ones((2, 3), "float32"), dims=("y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]}
    )
    with pytest.raises(MissingCRSError, match="has no CRS"):
        to_geotiff(da, tmp_path / "f.tif")


def test_to_geotiff__transform_disagrees_with_coords(tmp_path):
    da = forecast().rio.write_transform(Affine(8, 0, 601004, 0, -8, 5340000))
    with pytest.raises(GridError, match="stored transform .* disagrees with its x/y coordinates"):
        to_geotiff(da, tmp_path / "f.tif")


def test_to_geotiff__wrong_extension(tmp_path):
    with pytest.raises(ExportError, match="extension '.png' is not supported"):
        to_geotiff(forecast(), tmp_path / "f.png")


def test_to_geotiff__missing_folder(tmp_path):
    with pytest.raises(ExportError, match="does not exist; create it first"):
        to_geotiff(forecast(), tmp_path / "nope" / "f.tif")


# --- one file per time step ---------------------------------------------------------------


def test_write_stack__round_trip_through_read_stack(tmp_path):
    da = observed(bands=("red", "green", "blue"))
    paths = write_stack(da, tmp_path / "frames")
    assert [p.name for p in paths] == [
        "20240501T080000.tif",
        "20240501T080500.tif",
        "20240501T081000.tif",
        "20240501T081500.tif",
    ]
    with rasterio.open(paths[1]) as src:
        assert src.tags()["TIFFTAG_DATETIME"] == "2024:05:01 08:05:00"
    back = read_stack(tmp_path / "frames")
    np.testing.assert_array_equal(back.values, da.values)
    assert back.rio.transform() == UTM.transform
    assert list(back.band.values) == ["red", "green", "blue"]


def test_write_stack__uint8_jpeg(tmp_path):
    da = observed(bands=("red", "green", "blue")).clip(0, 255).astype("uint8")
    da = UTM.attach(da)
    paths = write_stack(da, tmp_path / "rgb", compress="jpeg", dtype="uint8")
    with rasterio.open(paths[0]) as src:
        assert src.compression.name == "jpeg" and src.dtypes[0] == "uint8"


def test_write_stack__refuses_existing(tmp_path):
    write_stack(observed(), tmp_path / "frames")
    with pytest.raises(OutputExistsError, match="4 file\\(s\\) exist already"):
        write_stack(observed(), tmp_path / "frames")


# --- NetCDF --------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [UTM, WGS], ids=["utm", "wgs84"])
def test_to_netcdf__cf_forecast_reads_back(tmp_path, grid):
    da = forecast(grid, bands=("inflow", "outflow"))
    path = to_netcdf(da, tmp_path / "f.nc")
    ds = xr.open_dataset(path, decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert set(ds.data_vars) == {"inflow", "outflow"}
    assert ds["inflow"].dims == (
        "time",
        "y",
        "x",
    )  # time is the valid time, forecast_period the lead
    assert (
        ds["inflow"].attrs["units"] == "1"
        and ds["inflow"].attrs["units_description"] == "vehicles per cell"
    )
    assert (
        ds["inflow"].encoding["grid_mapping"] == "spatial_ref"
        or "spatial_ref" in ds["inflow"].coords
    )
    assert "crs_wkt" in ds["spatial_ref"].attrs
    assert ds["forecast_period"].attrs["standard_name"] == "forecast_period"
    assert ds["forecast_period"].values[0] == np.timedelta64(5, "m")
    assert ds["time"].values[0] == np.datetime64("2024-05-01T09:00")
    assert ds["time"].encoding["units"] == "minutes since 2024-05-01T08:55:00+00:00"
    assert ds["forecast_reference_time"].values == np.datetime64("2024-05-01T08:55")
    assert ds.attrs["issued"] == "2024-05-01T08:55:00Z"
    # xarray + rioxarray alone give back the CRS and the exact transform
    assert ds.rio.crs == grid.crs
    assert ds.rio.transform() == grid.transform
    ds.close()
    back = read_netcdf(path)
    np.testing.assert_array_equal(back.values, da.values)
    assert back.dims == ("lead", "band", "y", "x")
    assert back.rio.transform() == grid.transform
    assert back.indexes["lead"].equals(da.indexes["lead"])
    np.testing.assert_array_equal(back["valid_time"].values, da["valid_time"].values)
    assert back.attrs["issued"] == ISSUED.isoformat() and back.attrs["units"] == "vehicles per cell"


@needs_gdal
def test_to_netcdf__gdal_reads_georeference(tmp_path):
    path = to_netcdf(observed(), tmp_path / "obs.nc")
    info = gdal_json(f"NETCDF:{path}:density")
    assert info["geoTransform"] == [601000.0, 8.0, 0.0, 5340000.0, 0.0, -8.0]
    assert 'ID["EPSG",32633]' in info["coordinateSystem"]["wkt"]


def test_to_netcdf__observed_time_axis(tmp_path):
    back = read_netcdf(to_netcdf(observed(), tmp_path / "obs.nc"))
    assert back.dims == ("time", "band", "y", "x")
    assert list(back.time.values) == list(observed().time.values)


def test_to_netcdf__refuses_existing(tmp_path):
    to_netcdf(observed(), tmp_path / "obs.nc")
    with pytest.raises(OutputExistsError, match="already exists"):
        to_netcdf(observed(), tmp_path / "obs.nc")


# --- GeoPackage ----------------------------------------------------------------------------


def test_to_geopackage__cells_with_one_column_per_lead(tmp_path):
    da = forecast()
    path = to_geopackage(da, tmp_path / "f.gpkg")
    assert pyogrio.list_layers(path)[0][0] == "cells"
    gdf = gpd.read_file(path, layer="cells")
    assert list(gdf.columns) == ["row", "col", "lead_5min", "lead_10min", "lead_15min", "geometry"]
    assert gdf.crs.to_epsg() == 32633
    cell = gdf[(gdf.row == 2) & (gdf.col == 3)].iloc[0]
    assert cell.geometry.bounds == (601024.0, 5339976.0, 601032.0, 5339984.0)
    assert cell["lead_10min"] == pytest.approx(float(da.values[1, 0, 2, 3]))
    meta = pyogrio.read_info(path, layer="cells")["layer_metadata"]
    assert meta["model"] == "convlstm" and meta["issued"] == "2024-05-01T08:55:00Z"


def test_to_geopackage__road_segments(tmp_path):
    da = forecast()
    segs = gpd.GeoDataFrame(
        {"id": [7]}, geometry=[LineString([(601001, 5339996), (601007, 5339996)])], crs="EPSG:32633"
    )
    gdf = gpd.read_file(to_geopackage(da, tmp_path / "roads.gpkg", segments=segs), layer="segments")
    assert gdf["lead_5min"].iloc[0] == pytest.approx(float(da.values[0, 0, 0, 0]))


def test_to_geopackage__several_bands_prefix_columns(tmp_path):
    gdf = gpd.read_file(
        to_geopackage(forecast(bands=("inflow", "outflow"), leads=1), tmp_path / "f.gpkg"),
        layer="cells",
    )
    assert {"inflow_lead_5min", "outflow_lead_5min"} <= set(gdf.columns)


def test_to_geopackage__version_1_2(tmp_path):
    import sqlite3

    path = to_geopackage(forecast(), tmp_path / "f.gpkg")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
    if shutil.which("ogrinfo"):  # GDAL 3.6 warns "may only be partially supported" for 1.4
        result = subprocess.run(
            ["ogrinfo", "-so", str(path), "cells"], capture_output=True, text=True, check=True
        )
        assert "Warning" not in result.stdout + result.stderr


def test_to_geopackage__long_layer_with_utc_valid_time(tmp_path):
    da = forecast()
    path = to_geopackage(da, tmp_path / "f.gpkg")
    assert [name for name, _ in pyogrio.list_layers(path)][:2] == ["cells", "cells_by_time"]
    long = gpd.read_file(path, layer="cells_by_time")
    assert list(long.columns) == ["row", "col", "lead_minutes", "valid_time", "density", "geometry"]
    assert len(long) == 3 * 5 * 7
    assert str(long["valid_time"].dt.tz) == "UTC"
    assert sorted(long["valid_time"].unique()) == list(
        pd.DatetimeIndex(da["valid_time"].values).tz_localize("UTC")
    )
    one = long[(long.row == 2) & (long.col == 3) & (long.lead_minutes == 10)].iloc[0]
    assert one["density"] == pytest.approx(float(da.values[1, 0, 2, 3]))
    assert one["valid_time"] == pd.Timestamp("2024-05-01T09:05", tz="UTC")
    assert one.geometry.bounds == (601024.0, 5339976.0, 601032.0, 5339984.0)
    info = pyogrio.read_info(path, layer="cells_by_time")
    assert str(info["dtypes"][list(info["fields"]).index("valid_time")]).startswith(
        "datetime64"
    )  # an OGR DateTime


def test_to_geopackage__long_layer_of_zoned_times_in_utc(tmp_path):
    local = observed(bands=("inflow", "outflow"), steps=2)
    local.attrs["timezone"] = "America/New_York"
    long = gpd.read_file(to_geopackage(local, tmp_path / "f.gpkg"), layer="cells_by_time")
    assert list(long.columns) == ["row", "col", "time", "inflow", "outflow", "geometry"]
    assert list(long["time"].unique()) == [
        pd.Timestamp("2024-05-01T12:00", tz="UTC"),
        pd.Timestamp("2024-05-01T12:05", tz="UTC"),
    ]


def test_to_geopackage__road_segments_long_layer(tmp_path):
    segs = gpd.GeoDataFrame(
        {"id": [7, 8]},
        geometry=[
            LineString([(601001, 5339996), (601007, 5339996)]),
            LineString([(601001, 5339990), (601050, 5339990)]),
        ],
        crs="EPSG:32633",
    )
    long = gpd.read_file(
        to_geopackage(forecast(), tmp_path / "roads.gpkg", segments=segs), layer="segments_by_time"
    )
    assert len(long) == 2 * 3 and list(long["id"]) == [7, 8] * 3
    assert {"lead_minutes", "valid_time", "density"} <= set(long.columns)


def test_to_geopackage__refuses_existing(tmp_path):
    to_geopackage(forecast(), tmp_path / "f.gpkg")
    with pytest.raises(OutputExistsError, match="already exists"):
        to_geopackage(forecast(), tmp_path / "f.gpkg")
