"""Tests of the writers on quantile forecasts ``(quantile, lead, band, y, x)``: a GeoTIFF band per lead and
quantile, a CF ``quantile`` dimension in NetCDF, GeoPackage columns per lead and quantile."""

import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine

from trafficrnn import Grid, read_netcdf, to_geopackage, to_geotiff, to_netcdf
from trafficrnn.errors import ExportError
from trafficrnn.estimation.calibration import LEVELS, Calibration, quantile_forecast
from trafficrnn.io.quantiles import flatten_quantiles, percentile_name
from trafficrnn.timeaxis import make_forecast

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (3, 4))


def quantile_fc(bands=("density",), levels=(0.1, 0.5, 0.9)):
    """A 2-lead forecast of 2 everywhere and a calibration of radius 1 (lead 1) and 2 (lead 2) at
    every level above 0: quantiles 1 / 2 / 3 at lead 1, 0 / 2 / 4 at lead 2."""
    values = np.full((2, len(bands), *GRID.shape), 2.0, "float32")
    fc = make_forecast(
        values,
        GRID,
        issued=pd.Timestamp("2024-05-01 08:00"),
        cadence="15min",
        bands=list(bands),
        model="convgru",
        units="vehicles per cell",
    )
    radii = (
        np.where(np.asarray(LEVELS) > 0, 1.0, 0.0)[None, None] * np.array([1.0, 2.0])[:, None, None]
    )
    cal = Calibration(
        bands=list(bands),
        radii=np.broadcast_to(radii, (2, len(bands), len(LEVELS))).copy(),
        counts=[10, 10],
        frames=["2024-04-30T00:00:00", "2024-04-30T12:00:00"],
        windows=5,
    )
    return quantile_forecast(fc, cal, levels)


def test_quantile_forecast__values_clipped_at_zero():
    fc = quantile_fc()
    np.testing.assert_allclose(fc.isel(y=0, x=0, band=0).values.T, [[1, 2, 3], [0, 2, 4]])


def test_to_geotiff__one_band_per_lead_and_quantile(tmp_path):
    fc = quantile_fc()
    path = to_geotiff(fc, tmp_path / "q.tif")
    with rasterio.open(path) as src:
        assert src.count == 6 and src.crs == GRID.crs and src.transform == GRID.transform
        assert src.descriptions[0].startswith("lead +15min, valid 2024-05-01T08:15:00Z")
        assert src.descriptions[0].endswith("density_q10")
        assert (
            src.descriptions[5].startswith("lead +30min") and "density_q90" in src.descriptions[5]
        )
        assert src.tags(6)["quantile"] == "0.9" and src.tags(6)["band"] == "density"
        np.testing.assert_allclose(src.read(6), 4.0)


def test_to_netcdf__quantile_dimension_with_cf_attributes(tmp_path):
    fc = quantile_fc()
    path = to_netcdf(fc, tmp_path / "q.nc")
    with xr.open_dataset(path, decode_coords="all") as ds:
        var = ds["density"]
        assert var.dims == ("quantile", "time", "y", "x")
        assert ds["quantile"].attrs["units"] == "1"
        assert "probability" in ds["quantile"].attrs["long_name"]
        assert list(ds["percentile_name"].values) == [
            "10th percentile",
            "50th percentile (median)",
            "90th percentile",
        ]
        assert var.attrs["cell_methods"] == "quantile: point"
        assert "10th percentile" in var.attrs["long_name"] and var.encoding["grid_mapping"]
    back = read_netcdf(path)
    assert back.dims == ("quantile", "lead", "band", "y", "x")
    np.testing.assert_allclose(back.values, fc.values)
    assert back.rio.crs == GRID.crs


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo not installed")
def test_to_netcdf__gdal_reads_the_quantile_file(tmp_path):
    path = to_netcdf(quantile_fc(), tmp_path / "q.nc")
    out = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True)
    # GDAL warns that the extra dims of a 4-D variable (quantile, time) are no Time dimension
    assert "UTM zone 33N" in out.stdout and "Band 6 " in out.stdout
    assert "density#cell_methods=quantile: point" in out.stdout


def test_to_geopackage__columns_per_lead_and_quantile(tmp_path):
    path = to_geopackage(quantile_fc(), tmp_path / "q.gpkg")
    wide = gpd.read_file(path, layer="cells")
    assert [c for c in wide.columns if c.startswith("lead")] == [
        "lead_15min_q10",
        "lead_15min_q50",
        "lead_15min_q90",
        "lead_30min_q10",
        "lead_30min_q50",
        "lead_30min_q90",
    ]
    assert wide.crs == GRID.crs and (wide["lead_30min_q90"] == 4.0).all()
    long = gpd.read_file(path, layer="cells_by_time")
    assert {"density_q10", "density_q90", "valid_time"} <= set(long.columns)


def test_to_geopackage__several_bands_name_the_band(tmp_path):
    path = to_geopackage(quantile_fc(("inflow", "outflow")), tmp_path / "q.gpkg")
    columns = gpd.read_file(path, layer="cells").columns
    assert "inflow_lead_15min_q10" in columns and "outflow_lead_30min_q90" in columns


def test_flatten_quantiles__quantile_not_first():
    fc = quantile_fc().transpose("lead", "quantile", "band", "y", "x")
    with pytest.raises(ExportError, match=r"expected \(quantile, lead, band, y, x\)"):
        flatten_quantiles(fc)


def test_percentile_name__ordinals():
    assert [percentile_name(q) for q in (0.01, 0.02, 0.03, 0.11, 0.975)] == [
        "1st percentile",
        "2nd percentile",
        "3rd percentile",
        "11th percentile",
        "97.5th percentile",
    ]
