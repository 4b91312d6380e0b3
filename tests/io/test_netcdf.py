"""Tests of the CF-NetCDF writer's conformance: gdalinfo without warnings, a CF checker without
errors or warnings, UDUNITS units, UTC times, and the reader taking all of it back."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from trafficrnn import read_netcdf, to_netcdf

from .test_export import ISSUED, UTM, WGS, forecast, observed

DATA = Path(__file__).parent / "data"
needs_gdal = pytest.mark.skipif(
    shutil.which("gdalinfo") is None, reason="gdalinfo (apt gdal-bin) not installed"
)


def _cf_checker_missing() -> str | None:
    if importlib.util.find_spec("cfchecker") is None:
        return "the CF checker is not installed: pip install cfchecker (it needs libudunits2, apt libudunits2-0)"
    try:
        import cfunits  # noqa: F401  (loads libudunits2)
    except (ImportError, OSError, FileNotFoundError) as exc:
        return f"the CF checker cannot load UDUNITS-2 ({exc}): apt-get install libudunits2-0"
    return None


needs_cf_checker = pytest.mark.skipif(
    _cf_checker_missing() is not None, reason=str(_cf_checker_missing())
)


def cf_check(path) -> str:
    """cfchecks' report on ``path``, offline: the tables are the subsets in tests/io/data."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cfchecker.cfchecks",
            "-s",
            str(DATA / "cf-standard-names-subset.xml"),
            "-a",
            str(DATA / "cf-area-types-subset.xml"),
            "-r",
            str(DATA / "cf-region-names-subset.xml"),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def gdal_warnings(name: str) -> list[str]:
    result = subprocess.run(["gdalinfo", name], capture_output=True, text=True, check=True)
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("Warning", "ERROR"))
    ]


@needs_cf_checker
@pytest.mark.parametrize(
    "make",
    [lambda: forecast(bands=("inflow", "outflow")), lambda: observed(WGS)],
    ids=["forecast", "observed"],
)
def test_to_netcdf__cf_checker_finds_no_error_or_warning(tmp_path, make):
    report = cf_check(to_netcdf(make(), tmp_path / "f.nc"))
    assert "ERRORS detected: 0" in report and "WARNINGS given: 0" in report, report


@needs_gdal
@pytest.mark.parametrize("make", [forecast, observed], ids=["forecast", "observed"])
def test_to_netcdf__gdalinfo_without_warnings(tmp_path, make):
    path = to_netcdf(make(), tmp_path / "f.nc")
    assert gdal_warnings(str(path)) == []
    assert gdal_warnings(f"NETCDF:{path}:density") == []


@needs_gdal
def test_to_netcdf__gdal_bands_are_leads_in_minutes(tmp_path):
    path = to_netcdf(forecast(), tmp_path / "f.nc")
    info = subprocess.run(
        ["gdalinfo", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "NETCDF_DIM_time_VALUES={5,10,15}" in info  # minutes since the issue time
    assert "time#units=minutes since 2024-05-01T08:55:00+00:00" in info


def test_to_netcdf__units_in_udunits_form(tmp_path):
    ds = xr.open_dataset(to_netcdf(forecast(), tmp_path / "count.nc"))
    assert ds["density"].attrs["units"] == "1"
    assert ds["density"].attrs["long_name"] == "density (vehicles per cell)"
    speed = forecast()
    speed.attrs["units"] = "km h-1"
    ds = xr.open_dataset(to_netcdf(speed, tmp_path / "speed.nc"))
    assert (
        ds["density"].attrs["units"] == "km h-1" and "units_description" not in ds["density"].attrs
    )


def test_to_netcdf__zoned_times_written_in_utc_read_back_local(tmp_path):
    local = observed()
    local.attrs["timezone"] = "America/New_York"
    path = to_netcdf(local, tmp_path / "obs.nc")
    raw = xr.open_dataset(path)
    assert raw["time"].values[0] == np.datetime64("2024-05-01T12:00")  # 08:00 EDT
    assert raw["time"].encoding["units"].endswith("+00:00")
    back = read_netcdf(path)
    assert back.indexes["time"].equals(local.indexes["time"])
    assert back.attrs["timezone"] == "America/New_York"


def test_to_netcdf__zoned_forecast_issued_with_offset(tmp_path):
    da = forecast()
    da.attrs["timezone"] = "Europe/Vienna"
    path = to_netcdf(da, tmp_path / "f.nc")
    raw = xr.open_dataset(path)
    assert raw.attrs["issued"] == "2024-05-01T08:55:00+02:00"
    assert raw["forecast_reference_time"].values == np.datetime64("2024-05-01T06:55")
    back = read_netcdf(path)
    assert back.attrs["issued"] == ISSUED.isoformat()
    np.testing.assert_array_equal(back["valid_time"].values, da["valid_time"].values)


def test_to_netcdf__lead_without_valid_time_reads_back(tmp_path):
    da = forecast().drop_vars("valid_time")
    back = read_netcdf(to_netcdf(da, tmp_path / "f.nc"))
    assert back.dims == ("lead", "band", "y", "x")
    assert list(pd.to_timedelta(back["lead"].values)) == list(pd.to_timedelta(da["lead"].values))
    assert back.rio.transform() == UTM.transform
