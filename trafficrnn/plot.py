"""Plots for notebooks and reports: grid maps with CRS axes and unit colour bars, lead panels, errors,
animations, and for quantile forecasts interval-width maps and fan charts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError
from trafficrnn.io.atomic import atomic_output, check_output


def _axis_labels(crs) -> tuple[str, str]:
    if crs is None:
        return "x", "y"
    epsg = crs.to_epsg()
    name = f"EPSG:{epsg}" if epsg else "CRS"
    if crs.is_geographic:
        return f"longitude (°, {name})", f"latitude (°, {name})"
    unit = (crs.linear_units or "m").replace("metre", "m")
    return f"easting ({unit}, {name})", f"northing ({unit}, {name})"


def _extent(da: xr.DataArray) -> tuple[float, float, float, float]:
    left, bottom, right, top = da.rio.bounds()
    return left, right, bottom, top


def _layer(da: xr.DataArray) -> xr.DataArray:
    """Squeeze to ``(y, x)`` or ``(band=3, y, x)``."""
    extra = [d for d in da.dims if d not in ("band", "y", "x") and da.sizes[d] == 1]
    da = da.squeeze(extra, drop=True) if extra else da
    if "band" in da.dims and da.sizes["band"] == 1:
        da = da.squeeze("band", drop=True)
    if da.dims not in (("y", "x"), ("band", "y", "x")) or (da.ndim == 3 and da.sizes["band"] != 3):
        raise ConfigError(
            f"cannot draw dims {dict(da.sizes)} as one map: select one time/lead and one band "
            "(or three RGB bands), e.g. da.isel(lead=0)"
        )
    return da


def _tidy_ticks(ax) -> None:
    """Few, whole-number ticks: seven-digit eastings (603150) fit three or four to a panel without touching."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)


def plot_map(
    da: xr.DataArray,
    *,
    ax=None,
    cmap: str = "magma",
    title: str | None = None,
    vmin=None,
    vmax=None,
    colorbar: bool = True,
    label: str | None = None,
):
    """Draw one grid layer (or an RGB image) in its CRS, with a colour bar in its units.

    Parameters
    ----------
    da : xarray.DataArray
        ``(y, x)``, ``(band=1, y, x)`` or ``(band=3, y, x)`` with CRS and transform (leading
        dims of size 1 are dropped).
    ax : matplotlib Axes, optional
    cmap, vmin, vmax : colour map and limits.
    title, label : optional title and colour-bar label (default: ``attrs["units"]``).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ConfigError
        For arrays that are not one map.
    """
    import matplotlib.pyplot as plt

    units = da.attrs.get("units")
    layer = _layer(da)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    extent = _extent(layer)
    if layer.ndim == 3:
        rgb = np.moveaxis(np.asarray(layer.values, dtype=float), 0, -1)
        scale = 255.0 if np.nanmax(rgb) > 1.5 else 1.0
        ax.imshow(np.clip(np.nan_to_num(rgb / scale), 0, 1), extent=extent, interpolation="nearest")
    else:
        image = ax.imshow(
            np.asarray(layer.values, dtype=float),
            extent=extent,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        if colorbar:
            ax.figure.colorbar(image, ax=ax, shrink=0.85, label=label or units or "")
    xlabel, ylabel = _axis_labels(layer.rio.crs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _tidy_ticks(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _lead_title(forecast: xr.DataArray, i: int) -> str:
    lead = pd.Timedelta(forecast["lead"].values[i])
    text = f"+{lead.total_seconds() / 60:g} min"
    if "valid_time" in forecast.coords and forecast["valid_time"].ndim == 1:
        text += f" ({pd.Timestamp(forecast['valid_time'].values[i]):%a %H:%M})"
    return text


def plot_leads(
    forecast: xr.DataArray,
    *,
    band: str | None = None,
    ncols: int | None = None,
    cmap: str = "magma",
):
    """A panel of maps, one per lead time, on one colour scale.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(lead, band, y, x)`` forecast.
    band : str, optional
        Band to draw (default: the first).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if "lead" not in forecast.dims:
        raise ConfigError(f"plot_leads needs a forecast with a lead dim, got dims {forecast.dims}")
    fc = forecast.sel(band=band) if band is not None else forecast.isel(band=0)
    n = fc.sizes["lead"]
    ncols = ncols or min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False, constrained_layout=True
    )
    vmax = float(np.nanmax(fc.values)) if np.isfinite(fc.values).any() else 1.0
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        layer = fc.isel(lead=i)
        layer.attrs = dict(forecast.attrs)
        plot_map(
            layer,
            ax=ax,
            cmap=cmap,
            vmin=0,
            vmax=vmax,
            title=_lead_title(forecast, i),
            colorbar=(i % ncols == ncols - 1),
        )
    fig.suptitle(_issued_text(forecast) or forecast.attrs.get("model", "forecast"), fontsize=11)
    return fig


def plot_compare(
    forecast: xr.DataArray,
    truth: xr.DataArray,
    *,
    lead: int = 1,
    band: str | None = None,
    cmap: str = "magma",
):
    """Observed vs forecast vs error (forecast − observed) at one lead.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(lead, band, y, x)``.
    truth : xarray.DataArray
        Target ``(time, band, y, x)`` holding the forecast's valid times.
    lead : int
        Lead step (1-based).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not 1 <= lead <= forecast.sizes.get("lead", 0):
        raise ConfigError(
            f"lead={lead} is out of range: expected 1..{forecast.sizes.get('lead', 0)}"
        )
    band = band or str(forecast["band"].values[0])
    valid = forecast["valid_time"].values[lead - 1]
    if valid not in truth["time"].values:
        raise ConfigError(
            f"truth has no frame at the valid time {pd.Timestamp(valid)}: pass a target covering it"
        )
    fc = forecast.sel(band=band).isel(lead=lead - 1)
    ob = truth.sel(band=band, time=valid)
    err = fc - ob.values
    for layer in (fc, ob, err):
        layer.attrs["units"] = forecast.attrs.get("units", "")
    vmax = float(np.nanmax([np.nanmax(fc.values), np.nanmax(ob.values)]))
    emax = float(np.nanmax(np.abs(err.values))) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    plot_map(
        ob,
        ax=axes[0],
        cmap=cmap,
        vmin=0,
        vmax=vmax,
        title=f"observed {pd.Timestamp(valid):%Y-%m-%d %H:%M}",
    )
    plot_map(
        fc,
        ax=axes[1],
        cmap=cmap,
        vmin=0,
        vmax=vmax,
        title=f"forecast {_lead_title(forecast, lead - 1)}",
    )
    plot_map(
        err, ax=axes[2], cmap="RdBu_r", vmin=-emax, vmax=emax, title="error (forecast − observed)"
    )
    return fig


def _issued_text(da: xr.DataArray) -> str:
    """``"convgru issued 2024-06-03 08:00"`` from a forecast's attrs (empty without ``issued``)."""
    issued = da.attrs.get("issued")
    if not issued:
        return ""
    zone = f" {da.attrs['timezone']}" if da.attrs.get("timezone") else ""
    return f"{da.attrs.get('model', 'forecast')} issued {pd.Timestamp(issued):%Y-%m-%d %H:%M}{zone}"


def _quantile_levels(forecast: xr.DataArray, what: str) -> np.ndarray:
    if "quantile" not in forecast.dims or "lead" not in forecast.dims:
        raise ConfigError(
            f"{what} needs a quantile forecast with quantile and lead dims, got dims "
            f"{forecast.dims}: forecast with a calibrated model, e.g. "
            "model.predict(images, quantiles=(0.1, 0.5, 0.9))"
        )
    return np.asarray(forecast["quantile"].values, dtype=float)


def _level(levels: np.ndarray, q: float, what: str, interval: float) -> int:
    hit = np.flatnonzero(np.isclose(levels, q, atol=1e-6))
    if not len(hit):
        raise ConfigError(
            f"{what}: the {interval:.0%} central interval needs the levels {(1 - interval) / 2:g} "
            f"and {(1 + interval) / 2:g}, but the forecast holds {[float(v) for v in levels]}; "
            f"pass them to predict(..., quantiles=...) or choose another interval"
        )
    return int(hit[0])


def plot_intervals(
    forecast: xr.DataArray,
    *,
    interval: float = 0.8,
    band: str | None = None,
    ncols: int | None = None,
    cmap: str = "viridis",
):
    """Maps of the width of a central interval of a quantile forecast, one panel per lead.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(quantile, lead, band, y, x)`` quantile forecast (``predict(..., quantiles=...)``).
    interval : float
        Coverage of the central interval, e.g. 0.8 (the levels 0.1 and 0.9 must be in the forecast).
    band : str, optional
        Band to draw (default: the first).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ConfigError
        For a forecast without quantile and lead dims, or without the interval's two levels.
    """
    levels = _quantile_levels(forecast, "plot_intervals")
    if not 0 < interval < 1:
        raise ConfigError(
            f"interval={interval!r} is invalid: expected a coverage in (0, 1), e.g. 0.8"
        )
    low = _level(levels, (1 - interval) / 2, "plot_intervals", interval)
    high = _level(levels, (1 + interval) / 2, "plot_intervals", interval)
    width = forecast.isel(quantile=high, drop=True) - forecast.isel(quantile=low, drop=True).values
    width.attrs = dict(forecast.attrs)
    fig = plot_leads(width, band=band, ncols=ncols, cmap=cmap)
    head = _issued_text(forecast) or forecast.attrs.get("model", "forecast")
    fig.suptitle(f"width of the {interval:.0%} interval — {head}", fontsize=11)
    return fig


def _cells_at(fc: xr.DataArray, at) -> tuple[np.ndarray, str]:
    """A (y, x) boolean mask of the cells chosen by ``at`` and a text that names them."""
    xs, ys = np.meshgrid(fc["x"].values, fc["y"].values)
    if at is None:
        return np.ones(xs.shape, bool), f"all {xs.size} cells, summed"
    if hasattr(at, "geom_type") or hasattr(at, "union_all") or hasattr(at, "unary_union"):
        import shapely

        geom = at.union_all() if hasattr(at, "union_all") else at
        mask = shapely.contains_xy(geom, xs, ys)
        what = "the area"
    else:
        try:
            values = [float(v) for v in at]
        except TypeError:
            values = []
        if len(values) == 2:
            left, bottom, right, top = fc.rio.bounds()
            x, y = values
            if not (left <= x < right and bottom < y <= top):
                raise ConfigError(
                    f"at={tuple(values)} lies outside the forecast's bounds ({left:g}, {bottom:g}, "
                    f"{right:g}, {top:g}): pass a point in its CRS ({fc.rio.crs})"
                )
            res_x, res_y = (abs(r) for r in fc.rio.resolution())
            mask = (np.abs(xs - x) <= res_x / 2) & (np.abs(ys - y) <= res_y / 2)
            mask &= np.cumsum(mask.ravel()).reshape(mask.shape) == 1  # a point on an edge: one cell
            row, col = (int(v[0]) for v in np.nonzero(mask))
            return mask, f"cell row {row}, col {col} (at {x:.10g}, {y:.10g})"
        if len(values) != 4:
            raise ConfigError(
                f"at={at!r:.60} is invalid: expected a point (x, y), bounds (left, bottom, right, "
                "top) in the forecast's CRS, or a shapely geometry / GeoDataFrame"
            )
        left, bottom, right, top = values
        mask = (xs >= left) & (xs <= right) & (ys >= bottom) & (ys <= top)
        what = "the bounds"
    if not mask.any():
        raise ConfigError(
            f"at={at!r:.60} holds no cell centre of the forecast (bounds {fc.rio.bounds()}): pass "
            f"an area in its CRS ({fc.rio.crs}) that covers at least one cell"
        )
    return mask, f"{int(mask.sum())} cells in {what}, summed"


def plot_fan(
    forecast: xr.DataArray,
    *,
    at=None,
    truth: xr.DataArray | None = None,
    history: int = 8,
    band: str | None = None,
    ax=None,
):
    """A fan chart of a quantile forecast against valid time: one shaded band per central interval
    of its levels (the widest palest), the median line, and the observed series if given.

    Parameters
    ----------
    forecast : xarray.DataArray
        ``(quantile, lead, band, y, x)`` quantile forecast (``predict(..., quantiles=...)``).
    at : optional
        A point ``(x, y)`` in the forecast's CRS (its cell), bounds ``(left, bottom, right, top)``
        or a shapely geometry / GeoDataFrame (the cells whose centres fall inside, summed), or
        ``None`` (every cell, summed). A sum adds the cells' quantiles, as if their errors moved
        together: its bands are at least as wide as those of the total.
    truth : xarray.DataArray, optional
        Target ``(time, band, y, x)`` on the same grid: the observed values of the ``history``
        frames before the first valid time and at the valid times are drawn in black.
    band : str, optional
        Band to draw (default: the first).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ConfigError
        For a forecast without quantile and lead dims, an ``at`` that covers no cell or lies
        outside the grid, or a ``truth`` on another grid.
    """
    import matplotlib.pyplot as plt

    levels = _quantile_levels(forecast, "plot_fan")
    band = band if band is not None else str(forecast["band"].values[0])
    fc = forecast.sel(band=band)
    mask, where = _cells_at(fc, at)
    chosen = xr.DataArray(mask, dims=("y", "x"))
    series = fc.where(chosen).sum(("y", "x"), min_count=1).transpose("quantile", "lead").values
    times = pd.to_datetime(forecast["valid_time"].values)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4))
    pairs = [
        (i, int(np.flatnonzero(np.isclose(levels, 1 - q, atol=1e-6))[0]))
        for i, q in enumerate(levels)
        if q < 0.5 and np.isclose(levels, 1 - q, atol=1e-6).any()
    ]
    for k, (lo, hi) in enumerate(pairs):  # widest first: lowest low level first
        ax.fill_between(
            times,
            series[lo],
            series[hi],
            color="tab:blue",
            alpha=0.18 + 0.5 * k / max(len(pairs), 1),
            linewidth=0,
            label=f"{levels[hi] - levels[lo]:.0%} interval",
        )
    median = np.flatnonzero(np.isclose(levels, 0.5, atol=1e-6))
    if len(median):
        ax.plot(times, series[median[0]], color="tab:blue", lw=2, label="median")
    if truth is not None:
        ob = truth.sel(band=band)
        if ob.sizes.get("y") != fc.sizes["y"] or ob.sizes.get("x") != fc.sizes["x"]:
            raise ConfigError(
                f"truth is on a {ob.sizes.get('y')} x {ob.sizes.get('x')} grid, the forecast on "
                f"{fc.sizes['y']} x {fc.sizes['x']}: pass the target of the forecast's grid"
            )
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(forecast["lead"].values[0])
        span = ob.sel(time=slice(times[0] - history * step, times[-1]))
        if span.sizes["time"]:
            seen = span.where(xr.DataArray(mask, dims=("y", "x")))
            observed = seen.sum(("y", "x"), min_count=int(mask.sum())).values
            ax.plot(pd.to_datetime(span["time"].values), observed, "k.-", lw=1, label="observed")
    ax.set_ylabel(forecast.attrs.get("units", "") or band)
    ax.set_xlabel(
        "valid time"
        + (f" ({forecast.attrs['timezone']})" if forecast.attrs.get("timezone") else "")
    )
    head = _issued_text(forecast) or forecast.attrs.get("model", "forecast")
    ax.set_title(f"{head}\n{band}: {where}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.figure.autofmt_xdate()
    return ax


def _animation_frames(da: xr.DataArray, *, band: str | None = None, cmap: str = "magma"):
    """The figure of :func:`animate` (a map, a fixed colour bar in the units, the issue time) and a
    ``draw(i)`` that puts step ``i`` on it; with the number of steps."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    step = next((d for d in ("time", "lead") if d in da.dims), None)
    if step is None:
        raise ConfigError(f"animate needs a time or lead dim, got dims {da.dims}")
    series = (
        da.sel(band=band)
        if band is not None
        else (da.isel(band=0) if da.sizes.get("band", 1) == 1 else da)
    )
    rgb = "band" in series.dims
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    vmax = None
    if not rgb:
        vmax = (float(np.nanmax(series.values)) if np.isfinite(series.values).any() else 0.0) or 1.0
        # one colour bar for every frame: the scale is fixed, the frames are comparable
        fig.colorbar(
            ScalarMappable(Normalize(0, vmax), cmap=cmap),
            ax=ax,
            shrink=0.85,
            label=da.attrs.get("units", ""),
        )
    issued = _issued_text(da)
    if issued:
        fig.suptitle(issued, fontsize=10)

    def draw(i: int):
        ax.clear()
        frame = series.isel({step: i})
        frame.attrs = dict(da.attrs)
        label = (
            f"{pd.Timestamp(da['time'].values[i]):%Y-%m-%d %H:%M}"
            if step == "time"
            else _lead_title(da, i)
        )
        plot_map(frame, ax=ax, cmap=cmap, vmin=0, vmax=vmax, title=label, colorbar=False)
        return []

    return fig, draw, series.sizes[step]


def animate(
    da: xr.DataArray,
    path,
    *,
    band: str | None = None,
    fps: int = 4,
    cmap: str = "magma",
    overwrite: bool = False,
) -> Path:
    """Write an animated GIF of a ``(time|lead, band, y, x)`` series, one frame per step.

    Every frame shows the same colour bar (in ``attrs["units"]``) and, for a forecast, the model
    and issue time above the map with the lead and valid time as its title.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    ConfigError
        For an array without a time or lead dim.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = check_output(path, overwrite=overwrite, suffixes=(".gif",))
    fig, draw, steps = _animation_frames(da, band=band, cmap=cmap)
    anim = FuncAnimation(fig, draw, frames=steps, blit=False)
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            anim.save(tmp, writer=PillowWriter(fps=fps))
    finally:
        plt.close(fig)
    return path


def explore(forecast, **options):
    """An interactive map of a forecast, for a notebook cell (shown inline) or a page (``.save``).

    One self-contained HTML page (Leaflet inlined, works offline): one layer per lead on the
    forecast's lat/lon footprint, a lead / valid-time slider, a colour bar in ``attrs["units"]``,
    the cell value under the mouse, an optional OpenStreetMap background. The CLI writes the same
    page: ``trafficrnn map forecast.tif --out map.html``.

    Parameters
    ----------
    forecast : xarray.DataArray or path-like
        ``(lead, band, y, x)`` forecast with CRS and transform, or a forecast ``.tif`` / ``.nc``.
    **options
        ``band``, ``cmap``, ``vmin``, ``vmax``, ``opacity``, ``basemap``: see
        :func:`trafficrnn.webmap.forecast_map`.

    Returns
    -------
    trafficrnn.webmap.WebMap
        Has ``_repr_html_`` (the page in an iframe) and ``save(path, overwrite=False)``.

    Raises
    ------
    MissingCRSError, InputFileError, ConfigError, GridError
        See :func:`trafficrnn.webmap.forecast_map`.
    """
    from trafficrnn.webmap import forecast_map

    return forecast_map(forecast, **options)
