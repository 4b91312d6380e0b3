"""Tests of trafficrnn.plot: CRS axes, unit colour bars, lead panels, comparison, animation."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from affine import Affine  # noqa: E402

from trafficrnn import Grid  # noqa: E402
from trafficrnn.data import make_forecast  # noqa: E402
from trafficrnn.errors import ConfigError, OutputExistsError  # noqa: E402
from trafficrnn.plot import animate, plot_compare, plot_leads, plot_map  # noqa: E402

GRID = Grid("EPSG:32633", Affine(16, 0, 601000, 0, -16, 5340000), (3, 4), 16)
WGS = Grid("EPSG:4326", Affine(0.011862, 0, -74.022216, 0, -0.0085379286, 40.818562), (14, 8))


def forecast(grid=GRID):
    values = np.arange(4 * np.prod(grid.shape), dtype="float32").reshape(4, 1, *grid.shape)
    return make_forecast(values, grid, issued="2024-06-03T08:00", cadence="15min", bands=["density"],
                         model="convgru", units="vehicles per cell")


def truth(grid=GRID):
    times = pd.date_range("2024-06-03T07:00", periods=10, freq="15min")
    da = grid.attach(xr.DataArray(np.ones((10, 1, *grid.shape), "float32"), dims=("time", "band", "y", "x"),
                                  coords={"time": times, "band": ["density"]}))
    da.attrs["units"] = "vehicles per cell"
    return da


def test_plot_map__axes_in_crs_and_colorbar_in_units():
    ax = plot_map(forecast().isel(lead=0), title="t")
    assert ax.get_xlabel() == "easting (m, EPSG:32633)" and ax.get_ylabel() == "northing (m, EPSG:32633)"
    assert ax.images[0].get_extent() == [601000.0, 601064.0, 5339952.0, 5340000.0]
    assert ax.figure.axes[1].get_ylabel() == "vehicles per cell"
    plt.close(ax.figure)


def test_plot_map__geographic_labels():
    ax = plot_map(forecast(WGS).isel(lead=0))
    assert ax.get_xlabel() == "longitude (°, EPSG:4326)"
    plt.close(ax.figure)


def test_plot_map__rgb_image():
    rgb = GRID.attach(xr.DataArray(np.full((3, 3, 4), 128, "uint8"), dims=("band", "y", "x"),
                                   coords={"band": ["red", "green", "blue"]}))
    ax = plot_map(rgb)
    assert ax.images[0].get_array().shape == (3, 4, 3)
    plt.close(ax.figure)


def test_plot_map__not_one_map():
    with pytest.raises(ConfigError, match="cannot draw dims"):
        plot_map(forecast())


def test_plot_leads__one_panel_per_lead():
    fig = plot_leads(forecast())
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["+15 min (Mon 08:15)", "+30 min (Mon 08:30)"]
    assert len([ax for ax in fig.axes if ax.images]) == 4
    plt.close(fig)


def test_plot_compare__observed_forecast_error():
    fig = plot_compare(forecast(), truth(), lead=2)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 3
    error = maps[2].images[0].get_array()
    np.testing.assert_array_equal(error, forecast().isel(lead=1, band=0).values - 1)
    plt.close(fig)


def test_plot_compare__lead_out_of_range():
    with pytest.raises(ConfigError, match="lead=9 is out of range"):
        plot_compare(forecast(), truth(), lead=9)


def test_animate__writes_gif_atomically(tmp_path):
    path = animate(forecast(), tmp_path / "f.gif", fps=2)
    assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gif"]
    with pytest.raises(OutputExistsError, match="already exists"):
        animate(forecast(), path)
