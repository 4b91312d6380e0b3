"""``trafficrnn datasets export``: a GeoTIFF stack that read_stack reads back unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from trafficrnn.datasets import nyc_bike
from trafficrnn.datasets.cli import datasets_group
from trafficrnn.errors import OutputExistsError
from trafficrnn.io import read_stack


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nyc") / "stack"
    result = CliRunner().invoke(
        datasets_group,
        ["export", "nyc-bike", str(folder), "--start", "2016-10-10", "--end", "2016-10-11"],
    )
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_export__reads_back_with_read_stack(exported):
    folder, output = exported
    assert "wrote 96 GeoTIFFs" in output
    stack = read_stack(folder)
    expected = nyc_bike(start="2016-10-10", end="2016-10-11")
    np.testing.assert_array_equal(stack.values, expected.values)
    assert stack.indexes["time"].equals(expected.indexes["time"])
    assert stack.rio.crs == expected.rio.crs
    assert stack.rio.transform() == expected.rio.transform()
    assert list(stack.band.values) == ["inflow", "outflow"]
    assert stack.attrs["units"] == "trips per 30 min"
    assert (
        stack.attrs["timezone"] == "America/New_York"
    )  # the zone of the naive local times comes back too


def test_export__times_stay_local(exported):
    folder, _ = exported
    with rasterio.open(folder / "20161010T000000.tif") as src:
        tags = src.tags()
    assert tags["TIFFTAG_DATETIME"] == "2016:10:10 00:00:00"  # not shifted to UTC
    assert tags["timezone"] == "America/New_York"


def test_export__split_option(tmp_path):
    result = CliRunner().invoke(
        datasets_group,
        ["export", "NYC-BIKE", str(tmp_path), "--split", "val", "--end", "2016-09-28T02:00"],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.tif"))
    assert names == [f"20160928T0{h}{m}00.tif" for h in range(3) for m in ("00", "30")][:5]
    assert pd.Timestamp(read_stack(tmp_path).time.values[0]) == pd.Timestamp("2016-09-28")


def test_export__refuses_to_overwrite(exported):
    folder, _ = exported
    result = CliRunner().invoke(
        datasets_group,
        ["export", "nyc-bike", str(folder), "--start", "2016-10-10", "--end", "2016-10-10T01:00"],
    )
    assert isinstance(result.exception, OutputExistsError)
    assert "pass overwrite=True" in str(result.exception)


def test_export__overwrite(exported):
    folder, _ = exported
    result = CliRunner().invoke(
        datasets_group,
        [
            "export",
            "nyc-bike",
            str(folder),
            "--start",
            "2016-10-10",
            "--end",
            "2016-10-10T00:30",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 GeoTIFFs" in result.output


def test_export__unknown_dataset(tmp_path):
    result = CliRunner().invoke(datasets_group, ["export", "taxi", str(tmp_path)])
    assert result.exit_code == 2
    assert "'taxi' is not 'nyc-bike'" in result.output


def test_datasets_group__help_lists_export():
    result = CliRunner().invoke(datasets_group, ["--help"])
    assert result.exit_code == 0
    assert "export" in result.output and "nyc-bike" in result.output


def test_export__covariates_csv_reads_back(tmp_path):
    from trafficrnn.datasets import nyc_bike_covariates
    from trafficrnn.estimation.covariates import read_covariates

    csv = tmp_path / "weather.csv"
    result = CliRunner().invoke(
        datasets_group,
        [
            "export",
            "nyc-bike",
            str(tmp_path / "day"),
            "--start",
            "2016-10-21",
            "--end",
            "2016-10-21",
            "--covariates",
            str(csv),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 48 GeoTIFFs" in result.output and "92 days" in result.output
    assert csv.read_text().splitlines()[0].startswith("date,tmax_f,")
    pd.testing.assert_frame_equal(read_covariates(csv), nyc_bike_covariates(), check_names=False)
    again = CliRunner().invoke(
        datasets_group,
        [
            "export",
            "nyc-bike",
            str(tmp_path / "day2"),
            "--start",
            "2016-10-21",
            "--end",
            "2016-10-21",
            "--covariates",
            str(csv),
        ],
    )
    assert again.exit_code != 0 and not (tmp_path / "day2").exists()
