"""Tests of the Zarr writer: the CF layout of the NetCDF writer in a chunked store that xarray +
rioxarray and GDAL read back with the exact CRS and transform, written atomically."""

import numpy as np
import pytest
import xarray as xr

from trafficrnn import io
from trafficrnn.errors import ExportError, InputFileError, MissingCRSError, OutputExistsError

from .test_export import ISSUED, UTM, WGS, forecast, gdal_json, needs_gdal, observed

pytest.importorskip("zarr", reason="zarr is not installed: pip install 'trafficrnn[zarr]'")


@pytest.mark.parametrize("grid", [UTM, WGS], ids=["utm", "wgs84"])
def test_to_zarr__forecast_reads_back_with_exact_georeference(tmp_path, grid):
    da = forecast(grid, bands=("inflow", "outflow"))
    path = io.to_zarr(da, tmp_path / "f.zarr")
    assert path.is_dir() and (path / ".zmetadata").is_file()  # consolidated metadata
    ds = xr.open_zarr(path, decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert set(ds.data_vars) == {"inflow", "outflow"}
    assert ds["inflow"].dims == ("time", "y", "x")  # time is the valid time
    assert ds["forecast_period"].values[0] == np.timedelta64(5, "m")
    assert ds["time"].values[0] == np.datetime64("2024-05-01T09:00")
    assert ds["forecast_reference_time"].values == np.datetime64("2024-05-01T08:55")
    # xarray + rioxarray alone give back the CRS and the exact transform
    assert ds.rio.crs == grid.crs
    assert ds.rio.transform() == grid.transform
    assert ds["inflow"].encoding["chunks"] == (1, *grid.shape)
    ds.close()
    back = io.read_zarr(path)
    np.testing.assert_array_equal(back.values, da.values)
    assert back.dims == ("lead", "band", "y", "x")
    assert back.rio.crs == grid.crs and back.rio.transform() == grid.transform
    assert back.indexes["lead"].equals(da.indexes["lead"])
    np.testing.assert_array_equal(back["valid_time"].values, da["valid_time"].values)
    assert back.attrs["issued"] == ISSUED.isoformat() and back.attrs["units"] == "vehicles per cell"


def test_to_zarr__observed_stack_and_the_writer_registry(tmp_path):
    da = observed()
    path = io.write(da, tmp_path / "obs.zarr")
    assert io.get_writer("x.ZARR") is io.to_zarr
    back = io.read_zarr(path)
    assert back.dims == ("time", "band", "y", "x")
    np.testing.assert_array_equal(back.values, da.values)
    np.testing.assert_array_equal(back["time"].values, da["time"].values)


@needs_gdal
def test_to_zarr__gdal_reads_georeference(tmp_path):
    path = io.to_zarr(observed(), tmp_path / "obs.zarr")
    info = gdal_json(f'ZARR:"{path}":/density:0')  # the first time step
    assert info["geoTransform"] == [601000.0, 8.0, 0.0, 5340000.0, 0.0, -8.0]
    assert 'ID["EPSG",32633]' in info["coordinateSystem"]["wkt"]


def test_to_zarr__existing_store_is_kept_without_overwrite(tmp_path):
    path = io.to_zarr(observed(), tmp_path / "obs.zarr")
    before = io.read_zarr(path).values.copy()
    with pytest.raises(OutputExistsError, match="obs.zarr already exists; pass overwrite=True"):
        io.to_zarr(forecast(), path)
    np.testing.assert_array_equal(io.read_zarr(path).values, before)
    io.to_zarr(forecast(), path, overwrite=True)
    assert io.read_zarr(path).dims[0] == "lead"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.zarr"]  # no temporary left


def test_to_zarr__failed_write_leaves_nothing_under_the_name(tmp_path, monkeypatch):
    path = io.to_zarr(observed(), tmp_path / "obs.zarr")

    def broken(self, *args, **kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(ExportError, match="could not write Zarr"):
        io.to_zarr(forecast(), path, overwrite=True)
    with pytest.raises(ExportError, match="could not write Zarr"):
        io.to_zarr(forecast(), tmp_path / "new.zarr")
    monkeypatch.undo()
    assert io.read_zarr(path).dims[0] == "time"  # the old store, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.zarr"]


def test_to_zarr__bad_inputs(tmp_path):
    with pytest.raises(ExportError, match="extension '.zip' is not supported here"):
        io.to_zarr(observed(), tmp_path / "obs.zip")
    no_crs = xr.DataArray(
        np.ones((2, 3), "float32"), dims=("y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]}
    )
    with pytest.raises(MissingCRSError, match="has no CRS"):
        io.to_zarr(no_crs, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(InputFileError, match="does not exist"):
        io.read_zarr(tmp_path / "none.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputFileError, match="is not a readable Zarr store"):
        io.read_zarr(tmp_path / "empty.zarr")
