"""Tests of the forecast web map (trafficrnn.webmap, trafficrnn.io.forecasts, ``trafficrnn map``,
``trafficrnn.plot.explore``): the page's contents and geometry, the errors, and the page in a real
headless Chromium (skipped where no browser or no playwright is installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from click.testing import CliRunner
from rasterio.warp import transform, transform_bounds

from trafficrnn import Grid
from trafficrnn.cli import main
from trafficrnn.errors import ConfigError, InputFileError, MissingCRSError, OutputExistsError
from trafficrnn.io import to_geotiff, to_netcdf
from trafficrnn.io.forecasts import read_forecast
from trafficrnn.plot import explore
from trafficrnn.webmap import forecast_map, write_map

from .conftest import write_tif

# 4 × 5 cells of 64 m in UTM 33N (Vienna, 1.4° east of the central meridian: the grid is turned
# against Web Mercator, so a wrong warp shows); values 100 × lead + 10 × row + col, exact
GRID = Grid("EPSG:32633", Affine(64, 0, 601000, 0, -64, 5340000), (4, 5), 16)
ISSUED = pd.Timestamp("2024-05-01 08:55")
UNITS = "vehicles per cell"
# what the overlay must cover: the grid's footprint as a lat/lon box (outline densified)
FOOTPRINT = transform_bounds(GRID.crs, "EPSG:4326", *GRID.bounds, densify_pts=21)


def value(lead: int, row: int, col: int) -> float:
    return 100.0 * (lead + 1) + 10 * row + col


def make_forecast(leads: int = 3) -> xr.DataArray:
    lead = pd.to_timedelta([5 * (i + 1) for i in range(leads)], unit="min")
    values = np.fromfunction(value, (leads, *GRID.shape)).astype("float32")[:, None]
    da = xr.DataArray(
        values,
        dims=("lead", "band", "y", "x"),
        coords={"lead": lead, "band": ["density"], "valid_time": ("lead", ISSUED + lead)},
    )
    da = GRID.attach(da)
    da.attrs.update(issued=ISSUED.isoformat(), model="convlstm", units=UNITS)
    return da


@pytest.fixture
def forecast() -> xr.DataArray:
    return make_forecast()


@pytest.fixture
def forecast_tif(tmp_path, forecast):
    return to_geotiff(forecast, tmp_path / "forecast.tif")


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="trafficrnn-data">(.*?)</script>', page)
    return json.loads(found.group(1))


def lookup(data: dict) -> np.ndarray:
    """The page's lookup grid, decoded as the page decodes it."""
    lk = data["lookup"]
    rows = [np.repeat(runs[0::2], runs[1::2]) for runs in lk["rows"]]
    return np.array(rows).reshape(lk["height"], lk["width"])


def cell_centres() -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
    rows, cols = np.indices(GRID.shape)
    x, y = GRID.transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lon, lat = transform(GRID.crs, "EPSG:4326", x, y)
    return rows.ravel(), cols.ravel(), lon, lat


# --- the page -----------------------------------------------------------------------------------


def test_forecast_map__one_layer_per_lead_with_labels_and_title(forecast):
    web = forecast_map(forecast)
    data = page_data(web.html)
    assert [lead["label"] for lead in data["leads"]] == ["+5 min", "+10 min", "+15 min"]
    assert [lead["valid"] for lead in data["leads"]] == [
        "2024-05-01T09:00:00Z",
        "2024-05-01T09:05:00Z",
        "2024-05-01T09:10:00Z",
    ]
    assert all(lead["image"].startswith("data:image/png;base64,") for lead in data["leads"])
    assert web.title == "convlstm: density, issued 2024-05-01T08:55:00Z"
    assert f"<title>{web.title}</title>" in web.html
    assert data["units"] == UNITS and data["colorbar"]["ticks"][0]["label"] == "0"
    np.testing.assert_array_equal(
        np.array([lead["values"] for lead in data["leads"]]),
        forecast.values[:, 0].reshape(3, -1),
    )


def test_forecast_map__bounds_are_the_grid_footprint_in_4326(forecast):
    web = forecast_map(forecast)
    data = page_data(web.html)
    bounds = [data["bounds"][k] for k in ("west", "south", "east", "north")]
    np.testing.assert_allclose(bounds, FOOTPRINT, rtol=0, atol=1e-9)
    np.testing.assert_allclose(web.bounds, FOOTPRINT, rtol=0, atol=1e-9)
    # the lookup grid spans the same box in EPSG:3857
    lk = data["lookup"]
    lon, lat = transform(
        "EPSG:3857",
        "EPSG:4326",
        [lk["x0"], lk["x0"] + lk["dx"] * lk["width"]],
        [lk["y0"] - lk["dy"] * lk["height"], lk["y0"]],
    )
    np.testing.assert_allclose([lon[0], lat[0], lon[1], lat[1]], FOOTPRINT, rtol=0, atol=1e-9)


def test_forecast_map__lookup_finds_the_cell_under_each_centre(forecast):
    data = page_data(forecast_map(forecast).html)
    grid, lk = lookup(data), data["lookup"]
    rows, cols, lon, lat = cell_centres()
    x, y = transform("EPSG:4326", "EPSG:3857", lon, lat)
    px = np.floor((np.array(x) - lk["x0"]) / lk["dx"]).astype(int)
    py = np.floor((lk["y0"] - np.array(y)) / lk["dy"]).astype(int)
    np.testing.assert_array_equal(grid[py, px], rows * GRID.shape[1] + cols)
    assert (grid == -1).any()  # the turned grid leaves corners of its box empty
    assert set(np.unique(grid)) == {-1, *range(GRID.shape[0] * GRID.shape[1])}


def test_forecast_map__nan_cells_are_transparent_and_null(forecast):
    from PIL import Image

    forecast[0, 0, 1, 2] = np.nan
    data = page_data(forecast_map(forecast).html)
    cell = 1 * GRID.shape[1] + 2
    assert data["leads"][0]["values"][cell] is None and data["leads"][1]["values"][cell] == 212
    png = base64.b64decode(data["leads"][0]["image"].split(",", 1)[1])
    alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3]
    grid = lookup(data)
    assert (alpha[grid == cell] == 0).all() and (alpha[grid == -1] == 0).all()
    assert (alpha[(grid >= 0) & (grid != cell)] == 255).all()


def test_forecast_map__page_is_self_contained(forecast):
    page = forecast_map(forecast).html
    assert "Leaflet 1.9.4" in page and ".leaflet-container" in page
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", page)
    assert "url(images/" not in page
    assert page_data(page)["basemap"]["on"] is False


def test_forecast_map__reads_geotiff_and_netcdf_like_the_array(tmp_path, forecast, forecast_tif):
    nc = to_netcdf(forecast, tmp_path / "forecast.nc")
    expected = page_data(forecast_map(forecast).html)
    for path in (forecast_tif, nc):
        data = page_data(forecast_map(path).html)
        assert data["leads"] == expected["leads"], path
        assert data["title"] == expected["title"] and data["units"] == UNITS, path
        assert data["bounds"] == expected["bounds"], path


def test_read_forecast__geotiff_round_trip(forecast, forecast_tif):
    back = read_forecast(forecast_tif)
    assert back.dims == ("lead", "band", "y", "x")
    np.testing.assert_array_equal(back.values, forecast.values)
    np.testing.assert_array_equal(back["lead"].values, forecast["lead"].values)
    np.testing.assert_array_equal(back["valid_time"].values, forecast["valid_time"].values)
    assert back.rio.crs == GRID.crs and back.rio.transform() == GRID.transform
    assert back.attrs["model"] == "convlstm" and back.attrs["units"] == UNITS
    assert back.attrs["issued"] == ISSUED.isoformat()


def test_forecast_map__times_in_the_forecasts_zone(tmp_path, forecast):
    forecast.attrs["timezone"] = "Europe/Vienna"  # naive times: wall-clock times in Vienna
    data = page_data(forecast_map(to_geotiff(forecast, tmp_path / "vienna.tif")).html)
    assert data["title"] == "convlstm: density, issued 2024-05-01T08:55:00+02:00"
    assert data["leads"][0]["valid"] == "2024-05-01T09:00:00+02:00"
    assert data == page_data(forecast_map(forecast).html)


def test_forecast_map__band_and_basemap_options(forecast):
    two = xr.concat([forecast, forecast.assign_coords(band=["flow"]) * 2], dim="band")
    data = page_data(forecast_map(two, band="flow", basemap=True).html)
    assert data["leads"][0]["values"][0] == 2 * value(0, 0, 0)
    assert data["basemap"]["on"] is True and "openstreetmap" in data["basemap"]["url"]


def test_explore__shows_in_a_notebook_and_saves(tmp_path, forecast):
    web = explore(forecast)
    shown = web._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "&lt;script&gt;" in shown
    path = web.save(tmp_path / "map.html")
    assert path.read_text(encoding="utf-8") == web.html


# --- errors -------------------------------------------------------------------------------------


def test_read_forecast__geotiff_without_crs(tmp_path):
    path = write_tif(
        tmp_path / "nocrs.tif",
        np.ones((2, 4, 5), "float32"),
        crs=None,
        transform=GRID.transform,
        descriptions=["lead +5min", "lead +10min"],
    )
    with pytest.raises(
        MissingCRSError, match=r"nocrs\.tif has no CRS \(no spatial reference; .*gdal_edit"
    ):
        read_forecast(path)


def test_read_forecast__geotiff_that_is_not_a_forecast(tmp_path):
    path = write_tif(
        tmp_path / "frame.tif", np.ones((3, 4, 5), "float32"), transform=GRID.transform
    )
    with pytest.raises(
        InputFileError, match=r"frame\.tif is not a forecast: band 1 of 3 names no lead"
    ):
        read_forecast(path)


def test_read_forecast__netcdf_that_is_not_a_forecast(tmp_path, forecast):
    observed = forecast.rename(lead="time").assign_coords(
        time=pd.date_range("2024-05-01 08:00", periods=3, freq="5min")
    )
    path = to_netcdf(observed.drop_vars("valid_time"), tmp_path / "observed.nc")
    with pytest.raises(InputFileError, match=r"observed\.nc is not a forecast: its dims are"):
        read_forecast(path)


def test_read_forecast__other_extension(tmp_path):
    with pytest.raises(InputFileError, match=r"'\.gpkg' is not a forecast format; expected one of"):
        read_forecast(tmp_path / "cells.gpkg")


def test_read_forecast__array_without_lead(forecast):
    with pytest.raises(ConfigError, match=r"a forecast needs a lead dim"):
        read_forecast(forecast.isel(lead=0))


def test_read_forecast__array_without_crs(forecast):
    with pytest.raises(MissingCRSError, match="forecast has no CRS"):
        read_forecast(forecast.drop_vars("spatial_ref"))


def test_forecast_map__unknown_band(forecast):
    with pytest.raises(
        ConfigError, match=r"band 'speed' is not in the forecast; its bands are \['density'\]"
    ):
        forecast_map(forecast, band="speed")


def test_write_map__refuses_an_existing_file(tmp_path, forecast):
    path = write_map(forecast, tmp_path / "map.html")
    path.write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"map\.html already exists; pass overwrite=True"):
        write_map(forecast, path)
    assert path.read_text() == "keep me"
    write_map(forecast, path, overwrite=True)
    assert "trafficrnn-data" in path.read_text(encoding="utf-8")


# --- the CLI ------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_map_command__writes_the_page(tmp_path, forecast_tif):
    out = tmp_path / "map.html"
    result = run("map", forecast_tif, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    assert len(page_data(out.read_text(encoding="utf-8"))["leads"]) == 3


def test_map_command__refuses_an_existing_file_without_overwrite(tmp_path, forecast_tif):
    out = tmp_path / "map.html"
    out.write_text("keep me")
    result = run("map", forecast_tif, "--out", out)
    assert result.exit_code == 2
    assert "map.html already exists; pass overwrite=True (CLI: --overwrite)" in result.output
    assert out.read_text() == "keep me"
    assert run("map", forecast_tif, "--out", out, "--overwrite").exit_code == 0


def test_map_command__one_line_error_for_a_file_without_crs(tmp_path):
    path = write_tif(
        tmp_path / "nocrs.tif", np.ones((1, 4, 5), "float32"), crs=None, descriptions=["lead +5min"]
    )
    result = run("map", path, "--out", tmp_path / "map.html")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "nocrs.tif has no CRS" in result.output
    assert not (tmp_path / "map.html").exists()


def test_map_command__help_has_an_example():
    result = run("map", "--help")
    assert result.exit_code == 0 and "trafficrnn map forecast.tif --out map.html" in result.output


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium: the system one (apt-get install chromium) or playwright's own."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    system = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    with sync_api.sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(executable_path=system, args=["--no-sandbox"])
        except sync_api.Error as exc:
            pytest.skip(
                "no Chromium to drive: apt-get install chromium, or playwright install chromium "
                f"({str(exc).splitlines()[0]})"
            )
        yield launched
        launched.close()


def test_map_page__in_chromium(tmp_path, forecast, browser):
    from PIL import Image

    path = write_map(forecast, tmp_path / "map.html")
    page = browser.new_page(viewport={"width": 900, "height": 640})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_function("window.trafficrnn !== undefined")

    # one image overlay per lead, one on the map at a time, each on the grid's footprint
    state = page.evaluate(
        """() => { const t = window.trafficrnn;
        return { n: t.layers.length, overlays: t.layers.every(l => l instanceof L.ImageOverlay),
                 shown: t.layers.map(l => t.map.hasLayer(l)), imgs: document.querySelectorAll(
                 'img.trafficrnn-overlay').length,
                 bounds: t.layers.map(l => { const b = l.getBounds();
                   return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; }) }; }"""
    )
    assert state["n"] == 3 and state["overlays"] and state["shown"] == [True, False, False]
    assert state["imgs"] == 1
    np.testing.assert_allclose(state["bounds"], [FOOTPRINT] * 3, rtol=0, atol=1e-6)

    # the slider, moved with the keyboard, changes the layer shown and its label
    page.focus("#lead")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    shown = page.evaluate("window.trafficrnn.layers.map(l => window.trafficrnn.map.hasLayer(l))")
    assert shown == [False, False, True]
    assert page.inner_text("#lead-label") == "+15 min (valid 2024-05-01T09:10:00Z)"

    # the value under the mouse: each cell centre reads that cell's value at the lead shown
    box = page.locator("#map").bounding_box()
    rows, cols, lon, lat = cell_centres()
    for row, col, x, y in list(zip(rows, cols, lon, lat))[::3]:
        point = page.evaluate(f"window.trafficrnn.map.latLngToContainerPoint([{y}, {x}])")
        page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
        expected = f"row {row}, col {col}: {value(2, row, col):g} {UNITS}"
        assert page.inner_text("#readout") == expected
    hit = page.evaluate(f"window.trafficrnn.valueAt({lat[0]}, {lon[0]}, 0)")
    assert hit == {"cell": 0, "row": 0, "col": 0, "value": value(0, 0, 0), "lead": 0}

    # the picture is not blank: the overlay's pixels vary
    page.mouse.move(1, 1)
    png = page.locator("#map").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    west, north = page.evaluate(
        f"window.trafficrnn.map.latLngToContainerPoint([{FOOTPRINT[3]}, {FOOTPRINT[0]}])"
    ).values()
    east, south = page.evaluate(
        f"window.trafficrnn.map.latLngToContainerPoint([{FOOTPRINT[1]}, {FOOTPRINT[2]}])"
    ).values()
    inside = pixels[int(north) + 5 : int(south) - 5, int(west) + 5 : int(east) - 5]
    assert inside.size and len(np.unique(inside.reshape(-1, 3), axis=0)) >= 10
    assert inside.std() > 10
    assert problems == []
    page.close()
