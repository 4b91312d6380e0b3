"""Interactive web map of a forecast: one self-contained HTML page (Leaflet inlined, works offline) with
one image overlay per lead, a lead / valid-time slider, a colour bar in the units and the cell value
under the mouse.

Where things are on the page
----------------------------
Leaflet shows Web Mercator (EPSG:3857) and stretches an image overlay linearly between two lat/lon
corners, so the forecast grid is warped (nearest neighbour, :func:`rasterio.warp.reproject`) onto a
north-up EPSG:3857 grid first. That display grid spans exactly the EPSG:3857 bounding box of the
forecast's footprint (its outline densified with 21 points a side), so the overlay's lat/lon bounds
are ``rasterio.warp.transform_bounds(crs, "EPSG:4326", *grid_bounds, densify_pts=21)``: the
smallest lat/lon box holding the whole grid. Pixels outside the footprint are transparent.

The value under the mouse comes from a lookup grid: the index of the forecast cell that each
display pixel shows (run-length coded per row), plus each lead's cell values on the forecast's own
grid. The page projects the mouse lat/lon to EPSG:3857 (Leaflet's spherical Mercator, the same
as PROJ's), finds the display pixel, and reads that cell; no projection to the forecast's CRS is
needed in the browser.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform, transform_bounds

from trafficrnn._version import __version__
from trafficrnn.errors import ConfigError, GridError
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.io.export import check_georeference, iso_time
from trafficrnn.io.forecasts import read_forecast

__all__ = ["WebMap", "forecast_map", "write_map", "display_grid", "lookup_grid", "LEAFLET_VERSION"]

LEAFLET_VERSION = "1.9.4"
#: the longer side of the display raster, in pixels: a grid of fewer cells a side is drawn with
#: several pixels a cell (a whole number), so that its cell edges, turned and warped, stay sharp;
#: a cell edge is placed to one display pixel, on the picture and in the value lookup alike
MAX_SIDE = 1024
DENSIFY = 21
OSM = {
    "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    "attribution": '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
}


class WebMap:
    """A forecast map page: ``save`` writes it, notebooks show it (``_repr_html_``).

    Attributes
    ----------
    html : str
        The whole page, self-contained.
    title : str
        Its title (model, band and issue time).
    bounds : tuple of float
        ``(west, south, east, north)`` of the overlays, degrees (EPSG:4326).
    """

    def __init__(self, html_text: str, title: str, bounds: tuple[float, float, float, float]):
        self.html = html_text
        self.title = title
        self.bounds = bounds

    def __repr__(self) -> str:
        return f"<WebMap {self.title!r}, {len(self.html) / 1e3:.0f} kB>"

    def _repr_html_(self) -> str:
        """The page in an iframe (its scripts run apart from the notebook's)."""
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(self.title)}" '
            'style="width: 100%; height: 560px; border: 1px solid #ccc;"></iframe>'
        )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the page to ``path`` (``.html`` / ``.htm``) atomically.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        ExportError
            For another extension or a missing folder.
        """
        path = check_output(path, overwrite=overwrite, suffixes=(".html", ".htm"))
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(self.html, encoding="utf-8")
        return path


# --- the display grid (EPSG:3857) -------------------------------------------------------------


def display_grid(grid) -> tuple[Affine, tuple[int, int], tuple[float, float, float, float]]:
    """The EPSG:3857 grid that shows ``grid``, and its bounds in degrees.

    Returns
    -------
    transform : Affine
        North-up EPSG:3857 transform (metres).
    shape : tuple of int
        ``(rows, cols)``: ``MAX_SIDE / 2`` to ``MAX_SIDE`` a side, or about one pixel a cell for
        a grid of more cells a side.
    bounds : tuple of float
        ``(west, south, east, north)`` in EPSG:4326: the display grid's corners, which are also
        ``transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)``.

    Raises
    ------
    GridError
        A grid outside Web Mercator's latitudes (±85.05°).
    """
    try:
        west, south, east, north = transform_bounds(
            grid.crs, "EPSG:3857", *grid.bounds, densify_pts=DENSIFY
        )
    except (RasterioError, ValueError, RuntimeError) as exc:  # PROJ errors differ by version
        raise GridError(f"the forecast grid cannot be shown in Web Mercator ({exc})") from None
    if not np.all(np.isfinite([west, south, east, north])) or east <= west:
        raise GridError(
            f"the forecast grid {tuple(grid.bounds)} ({grid.crs}) cannot be shown in Web Mercator "
            "(EPSG:3857 covers latitudes ±85.05° and does not wrap): crop it first"
        )
    rows, cols = grid.shape
    res = np.sqrt((east - west) * (north - south) / (rows * cols))  # about one cell
    side = max(east - west, north - south) / res
    scale = max(1, int(MAX_SIDE // side))
    width = max(1, round((east - west) / res * scale))
    height = max(1, round((north - south) / res * scale))
    affine = Affine((east - west) / width, 0, west, 0, -(north - south) / height, north)
    (lon0, lon1), (lat0, lat1) = transform("EPSG:3857", "EPSG:4326", [west, east], [south, north])
    return affine, (height, width), (float(lon0), float(lat0), float(lon1), float(lat1))


def lookup_grid(grid, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """``(rows, cols)`` int32: the forecast cell (``row * width + col``) each display pixel shows; -1 outside."""
    index = np.arange(grid.shape[0] * grid.shape[1], dtype="int32").reshape(grid.shape)
    out = np.full(shape, -1, dtype="int32")
    reproject(
        index,
        out,
        src_transform=grid.transform,
        src_crs=grid.crs,
        src_nodata=-1,
        dst_transform=transform,
        dst_crs="EPSG:3857",
        dst_nodata=-1,
        resampling=Resampling.nearest,
    )
    return out


def _runs(row: np.ndarray) -> list[int]:
    """``[value, count, value, count, ...]`` of one row."""
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    counts = np.diff(np.r_[starts, row.size])
    return np.column_stack([row[starts], counts]).ravel().tolist()


#: colour levels of the pictures; palette index ``LEVELS`` is transparent (outside the grid, NaN)
LEVELS = 255


def _png(levels: np.ndarray, palette: np.ndarray) -> str:
    """A palette PNG data URL of ``levels`` (uint8, ``LEVELS``: transparent)."""
    from PIL import Image

    image = Image.fromarray(levels, "P")
    image.putpalette(palette[:, :3].ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=LEVELS)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colorbar(cmap, vmin: float, vmax: float) -> dict:
    from matplotlib.ticker import MaxNLocator

    stops = cmap(np.linspace(0, 1, 16), bytes=True)
    gradient = ", ".join(
        f"rgb({r},{g},{b}) {100 * i / 15:.1f}%" for i, (r, g, b, _) in enumerate(stops)
    )
    ticks = [t for t in MaxNLocator(5).tick_values(vmin, vmax) if vmin <= t <= vmax]
    return {
        "gradient": f"linear-gradient(to right, {gradient})",
        "ticks": [{"at": (t - vmin) / (vmax - vmin), "label": f"{t:g}"} for t in ticks],
    }


# --- the page --------------------------------------------------------------------------------


def _labels(fc: xr.DataArray) -> list[tuple[str, str]]:
    zone = fc.attrs.get("timezone")
    out = []
    for i in range(fc.sizes["lead"]):
        minutes = pd.Timedelta(fc["lead"].values[i]).total_seconds() / 60
        valid = fc["valid_time"].values[i] if "valid_time" in fc.coords else None
        out.append((f"+{minutes:g} min", iso_time(valid, zone) if valid is not None else ""))
    return out


def _title(fc: xr.DataArray, band: str) -> str:
    model = fc.attrs.get("model") or "forecast"
    issued = fc.attrs.get("issued")
    when = f", issued {iso_time(issued, fc.attrs.get('timezone'))}" if issued else ""
    return f"{model}: {band}{when}"


def _subtitle(grid) -> str:
    """``"8 × 8 cells of 64 m, EPSG:32633"``."""
    epsg = grid.crs.to_epsg()
    crs = f"EPSG:{epsg}" if epsg else grid.crs.to_string()
    unit = "°" if grid.crs.is_geographic else " " + (grid.crs.linear_units or "m")
    unit = unit.replace("metre", "m")
    dx, dy = abs(grid.transform.a), abs(grid.transform.e)
    cell = f"{dx:g}{unit}" if dx == dy else f"{dx:g} × {dy:g}{unit}"
    return f"{grid.shape[0]} × {grid.shape[1]} cells of {cell}, {crs}"


def _page(title: str, data: dict) -> str:
    """The HTML template with Leaflet, the page script and ``data`` (JSON) inlined."""
    web = files("trafficrnn") / "web"
    # JSON inside <script>: no "<", ">" or "&" may close the tag
    text = json.dumps(data, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    parts = {
        "TITLE": html.escape(title),
        "VERSION": __version__,
        "LEAFLET_VERSION": LEAFLET_VERSION,
        # the CSS's icons are for controls this page does not use: nothing asks for a missing file
        "LEAFLET_CSS": re.sub(
            r"url\(images/[^)]*\)", "none", (web / "leaflet.css").read_text("utf-8")
        ),
        "LEAFLET_JS": (web / "leaflet.js").read_text("utf-8"),
        "MAP_JS": (web / "map.js").read_text("utf-8"),
        "DATA": text,
    }
    # one pass over /*NAME*/ and {{NAME}}: inserted text is not scanned again
    pattern = r"/\*([A-Z_]+)\*/|\{\{([A-Z_]+)\}\}"
    template = (web / "map.html").read_text("utf-8")
    return re.sub(pattern, lambda m: parts[m.group(1) or m.group(2)], template)


def _limits(values: np.ndarray, vmin, vmax) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    lo = float(vmin if vmin is not None else min(0.0, finite.min()) if finite.size else 0.0)
    hi = float(vmax if vmax is not None else finite.max() if finite.size else 1.0)
    return lo, (hi if hi > lo else lo + 1.0)


def _lead_layers(fc, values: np.ndarray, lookup: np.ndarray, colours, lo, hi) -> list[dict]:
    """Per lead: its labels, the warped picture (PNG data URL) and the cell values (``None``: NaN)."""
    palette = np.vstack([colours(np.linspace(0, 1, LEVELS), bytes=True), [[0, 0, 0, 0]]])
    outside = lookup < 0
    layers = []
    for i, (label, valid) in enumerate(_labels(fc)):
        with np.errstate(invalid="ignore"):
            level = np.round(np.clip((values[i] - lo) / (hi - lo), 0, 1) * (LEVELS - 1))
        level = np.where(np.isfinite(values[i]), level, LEVELS).astype("uint8")
        image = np.where(outside, LEVELS, level[np.where(outside, 0, lookup)]).astype("uint8")
        cells = [float(f"{v:.7g}") if np.isfinite(v) else None for v in values[i]]
        layers.append(
            {"label": label, "valid": valid, "image": _png(image, palette), "values": cells}
        )
    return layers


def forecast_map(
    forecast,
    *,
    band: str | None = None,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    opacity: float = 0.8,
    basemap: bool = False,
) -> WebMap:
    """Build the interactive map of a forecast (see the module docstring for the geometry).

    Parameters
    ----------
    forecast : xarray.DataArray or path-like
        ``(lead, band, y, x)`` with ``valid_time``, CRS and transform, or a forecast ``.tif`` /
        ``.nc`` (see :func:`~trafficrnn.io.forecasts.read_forecast`).
    band : str, optional
        Band to show (default: the first).
    cmap, vmin, vmax : colour map and limits, shared by every lead (default: ``min(0, min)`` to
        the maximum over all leads).
    opacity : float
        Opacity of the forecast layer at start (0 to 1; the page has a slider).
    basemap : bool
        Show OpenStreetMap tiles at start (they need the internet; the page has a checkbox).

    Returns
    -------
    WebMap
        The page holds one PNG per lead on the display grid, the lookup grid and each lead's cell
        values (7 significant digits, float32's precision; NaN is ``null``, drawn transparent).

    Raises
    ------
    MissingCRSError, InputFileError, ConfigError, GridError
        As :func:`~trafficrnn.io.forecasts.read_forecast` and :func:`display_grid`;
        ``ConfigError`` for an unknown band or colour map, or an opacity outside 0 to 1.
    """
    import matplotlib

    fc = read_forecast(forecast)
    names = [str(b) for b in fc["band"].values]
    if band is not None and band not in names:
        raise ConfigError(f"band {band!r} is not in the forecast; its bands are {names}")
    band = band or names[0]
    if cmap not in matplotlib.colormaps:
        raise ConfigError(f"unknown colour map {cmap!r}; use a matplotlib name such as 'magma'")
    colours = matplotlib.colormaps[cmap]
    if not 0 <= opacity <= 1:
        raise ConfigError(f"opacity={opacity!r} is out of range: expected 0 to 1")
    grid = check_georeference(fc, "forecast")
    values = np.asarray(fc.sel(band=band).values, dtype="float64").reshape(fc.sizes["lead"], -1)
    lo, hi = _limits(values, vmin, vmax)
    affine, shape, lonlat = display_grid(grid)
    lookup = lookup_grid(grid, affine, shape)
    title = _title(fc, band)
    data = {
        "title": title,
        "subtitle": _subtitle(grid),
        "units": str(fc.attrs.get("units", "")),
        "opacity": float(opacity),
        "bounds": dict(zip(("west", "south", "east", "north"), lonlat)),
        "grid": {"height": grid.shape[0], "width": grid.shape[1]},
        "lookup": {
            "width": shape[1],
            "height": shape[0],
            "x0": affine.c,
            "y0": affine.f,
            "dx": affine.a,
            "dy": -affine.e,
            "rows": [_runs(row) for row in lookup],
        },
        "leads": _lead_layers(fc, values, lookup, colours, lo, hi),
        "colorbar": _colorbar(colours, lo, hi),
        "basemap": dict(OSM, on=bool(basemap)),
    }
    return WebMap(_page(title, data), title, lonlat)


def write_map(forecast, path: str | os.PathLike, *, overwrite: bool = False, **options) -> Path:
    """Write the map of ``forecast`` to ``path`` (``.html``) atomically; ``options`` as :func:`forecast_map`.

    The output is checked before the forecast is read.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    check_output(path, overwrite=overwrite, suffixes=(".html", ".htm"))
    return forecast_map(forecast, **options).save(path, overwrite=overwrite)
