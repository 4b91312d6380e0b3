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
from trafficrnn.errors import ConfigError, OutputExistsError  # noqa: E402
from trafficrnn.plot import (  # noqa: E402
    animate,
    plot_compare,
    plot_fan,
    plot_intervals,
    plot_leads,
    plot_map,
)
from trafficrnn.timeaxis import make_forecast  # noqa: E402

GRID = Grid("EPSG:32633", Affine(16, 0, 601000, 0, -16, 5340000), (3, 4), 16)
WGS = Grid("EPSG:4326", Affine(0.011862, 0, -74.022216, 0, -0.0085379286, 40.818562), (14, 8))


def forecast(grid=GRID):
    values = np.arange(4 * np.prod(grid.shape), dtype="float32").reshape(4, 1, *grid.shape)
    return make_forecast(
        values,
        grid,
        issued="2024-06-03T08:00",
        cadence="15min",
        bands=["density"],
        model="convgru",
        units="vehicles per cell",
    )


def truth(grid=GRID):
    times = pd.date_range("2024-06-03T07:00", periods=10, freq="15min")
    da = grid.attach(
        xr.DataArray(
            np.ones((10, 1, *grid.shape), "float32"),
            dims=("time", "band", "y", "x"),
            coords={"time": times, "band": ["density"]},
        )
    )
    da.attrs["units"] = "vehicles per cell"
    return da


def test_plot_map__axes_in_crs_and_colorbar_in_units():
    ax = plot_map(forecast().isel(lead=0), title="t")
    assert (
        ax.get_xlabel() == "easting (m, EPSG:32633)"
        and ax.get_ylabel() == "northing (m, EPSG:32633)"
    )
    assert ax.images[0].get_extent() == [601000.0, 601064.0, 5339952.0, 5340000.0]
    assert ax.figure.axes[1].get_ylabel() == "vehicles per cell"
    plt.close(ax.figure)


def test_plot_map__geographic_labels():
    ax = plot_map(forecast(WGS).isel(lead=0))
    assert ax.get_xlabel() == "longitude (°, EPSG:4326)"
    plt.close(ax.figure)


def test_plot_map__rgb_image():
    rgb = GRID.attach(
        xr.DataArray(
            np.full((3, 3, 4), 128, "uint8"),
            dims=("band", "y", "x"),
            coords={"band": ["red", "green", "blue"]},
        )
    )
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


# --- readable axes, the GIF's colour bar and issue time, units on the comparison ------------------

DEMO = Grid(
    "EPSG:32633", Affine(64, 0, 602978, 0, -64, 5340781), (8, 8), 64
)  # the demo's 8 × 8 cells of 64 m
FINE = Grid("EPSG:32633", Affine(16, 0, 603140, 0, -16, 5340630), (12, 12), 16)


def tick_label_boxes(fig) -> list[tuple[str, object]]:
    """(text, window extent) of every tick label drawn in ``fig`` (ticks inside the view only)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in (ax for ax in fig.axes if ax.axison):
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
                if lo <= loc <= hi and label.get_visible() and label.get_text():
                    boxes.append((label.get_text(), label.get_window_extent(renderer)))
    return boxes


def overlapping(boxes, pad: float = 1.0) -> list[tuple[str, str]]:
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.padded(pad).overlaps(box_b.padded(pad))
    ]


@pytest.mark.parametrize(
    "grid", [DEMO, FINE, GRID, WGS], ids=["demo-64m", "fine-16m", "tiny", "wgs84"]
)
@pytest.mark.parametrize("draw", ["leads", "compare", "map"])
def test_plots__tick_labels_do_not_overlap(grid, draw):
    fc = forecast(grid)
    fig = {
        "leads": lambda: plot_leads(fc),
        "compare": lambda: plot_compare(fc, truth(grid), lead=2),
        "map": lambda: plot_map(fc.isel(lead=0)).figure,
    }[draw]()
    boxes = tick_label_boxes(fig)
    eastings = [text for text, _ in boxes if text.replace("−", "").replace(".", "").isdigit()]
    assert len(eastings) >= 4  # still labelled: at least two ticks on each of the two map axes
    assert overlapping(boxes) == []
    plt.close(fig)


def test_plot_map__at_most_four_eastings_per_panel():
    ax = plot_map(forecast(DEMO).isel(lead=0))
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert 2 <= len(shown) <= 4
    assert all(float(t) % 100 == 0 for t in shown)  # whole hundreds of metres
    plt.close(ax.figure)


def test_plot_leads__issue_time_in_the_title():
    fig = plot_leads(forecast())
    assert fig._suptitle.get_text() == "convgru issued 2024-06-03 08:00"
    plt.close(fig)


def test_animate__frames_have_a_colour_bar_and_the_issue_time():
    from trafficrnn.plot import _animation_frames

    fig, draw, steps = _animation_frames(forecast())
    assert steps == 4
    draw(2)
    maps = [ax for ax in fig.axes if ax.images]
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(maps) == 1 and len(bars) == 1
    assert bars[0].get_ylabel() == "vehicles per cell"
    assert bars[0].get_ylim() == (0.0, float(forecast().values.max()))  # one scale for every frame
    assert fig._suptitle.get_text() == "convgru issued 2024-06-03 08:00"
    assert maps[0].get_title() == "+45 min (Mon 08:45)"
    plt.close(fig)


def test_animate__colour_bar_drawn_in_every_gif_frame(tmp_path):
    from PIL import Image, ImageSequence

    path = animate(forecast(), tmp_path / "f.gif", fps=2)
    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == 4
    for rgb in frames:
        right = rgb[:, int(rgb.shape[1] * 0.75) :]  # the colour bar's side of the frame
        colours = max(
            len(np.unique(right[:, j].reshape(-1, 3), axis=0)) for j in range(right.shape[1])
        )
        assert colours >= 40  # a magma gradient, not the map's twelve cells nor plain background


def comparison(freq: str, horizon: int):
    from trafficrnn.compare import ComparisonResult
    from trafficrnn.models.baselines import get_baseline

    history = truth()
    history = history.assign_coords(time=pd.date_range("2024-06-03", periods=10, freq=freq))
    fitted = get_baseline("persistence").fit(history)
    leads = range(1, horizon + 1)
    table = pd.DataFrame(
        {"mae": 1.0, "rmse": [0.5 + 0.1 * k for k in leads], "mape": 10.0, "skill_rmse": 0.0},
        index=pd.MultiIndex.from_product([["persistence"], list(leads)], names=["model", "lead"]),
    )
    table.attrs["split"] = "test"
    summary = pd.DataFrame(
        {"kind": ["model"], "train_seconds": [0.1]}, index=pd.Index(["persistence"], name="model")
    )
    return ComparisonResult(table=table, summary=summary, models={"persistence": fitted})


def test_plot_comparison__leads_in_minutes_and_rmse_in_units():
    from trafficrnn.compare import plot_comparison

    fig = plot_comparison(comparison("15min", 3))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "lead time (min; steps of 15 min)"
    assert list(ax.get_xticks()) == [15, 30, 45]
    assert ax.get_ylabel() == "RMSE (vehicles per cell), test split"
    plt.close(fig)
    fig = plot_comparison(comparison("15min", 3), metric="mape")
    assert fig.axes[0].get_ylabel() == "MAPE (%), test split"
    plt.close(fig)


def test_plot_comparison__long_leads_in_hours():
    from trafficrnn.compare import plot_comparison

    fig = plot_comparison(comparison("1h", 6))
    assert fig.axes[0].get_xlabel() == "lead time (h; steps of 1 h)"
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3, 4, 5, 6]
    plt.close(fig)


def quantile_forecast(grid=GRID):
    """Levels 0.1, 0.5, 0.9 around the point forecast: -2, 0, +3 (interval width 5 everywhere)."""
    point = forecast(grid)
    parts = [point + d for d in (-2.0, 0.0, 3.0)]
    out = xr.concat(parts, dim="quantile").assign_coords(quantile=("quantile", [0.1, 0.5, 0.9]))
    out.attrs = dict(point.attrs)
    return out


def test_plot_intervals__width_map_per_lead_in_units():
    fig = plot_intervals(quantile_forecast(), interval=0.8)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 4  # one panel per lead
    np.testing.assert_allclose(maps[0].images[0].get_array(), np.full(GRID.shape, 5.0))
    assert maps[0].get_xlabel() == "easting (m, EPSG:32633)"
    assert any(ax.get_ylabel() == "vehicles per cell" for ax in fig.axes if not ax.images)
    assert fig._suptitle.get_text().startswith("width of the 80% interval — convgru issued")
    plt.close(fig)


def test_plot_intervals__refuses_missing_levels_and_point_forecasts():
    with pytest.raises(ConfigError, match=r"levels 0.025 and 0.975.*\[0.1, 0.5, 0.9\]"):
        plot_intervals(quantile_forecast(), interval=0.95)
    with pytest.raises(ConfigError, match="needs a quantile forecast.*quantiles="):
        plot_intervals(forecast())


def test_plot_fan__one_cell_bands_median_and_observed():
    fc = quantile_forecast()
    # the centre of row 1, col 2: x = 601000 + 2.5 * 16, y = 5340000 - 1.5 * 16
    ax = plot_fan(fc, at=(601040.0, 5339976.0), truth=truth())
    cell = forecast().isel(band=0, y=1, x=2).values
    median = [line for line in ax.lines if line.get_label() == "median"][0]
    np.testing.assert_allclose(median.get_ydata(), cell)
    assert len(ax.collections) == 1  # one central pair: the 80 % band
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(cell.min() - 2) and band.max() == pytest.approx(
        cell.max() + 3
    )
    observed = [line for line in ax.lines if line.get_label() == "observed"][0]
    # truth from 07:00; forecast valid 08:15-09:00; 8 frames of history: 06:15 (clipped to 07:00)
    assert len(observed.get_ydata()) == 9 and set(observed.get_ydata()) == {1.0}
    assert "cell row 1, col 2" in ax.get_title()
    plt.close(ax.figure)


def test_plot_fan__area_sums_the_cells_inside():
    fc = quantile_forecast()
    # bounds over the centres of row 0, cols 0 and 1
    ax = plot_fan(fc, at=(601000, 5339984, 601032, 5340000))
    want = forecast().isel(band=0, y=0, x=[0, 1]).sum("x").values
    median = [line for line in ax.lines if line.get_label() == "median"][0]
    np.testing.assert_allclose(median.get_ydata(), want)
    assert "2 cells in the bounds, summed" in ax.get_title()
    plt.close(ax.figure)
    from shapely.geometry import box

    ax = plot_fan(fc, at=box(601000, 5339984, 601032, 5340000))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), want)
    plt.close(ax.figure)


def test_plot_fan__refuses_points_outside_and_empty_areas():
    with pytest.raises(ConfigError, match="outside the forecast's bounds"):
        plot_fan(quantile_forecast(), at=(0.0, 0.0))
    with pytest.raises(ConfigError, match="holds no cell centre"):
        plot_fan(quantile_forecast(), at=(0, 0, 1, 1))
    with pytest.raises(ConfigError, match="expected a point"):
        plot_fan(quantile_forecast(), at=(1, 2, 3))
