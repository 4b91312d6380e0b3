"""Quantile forecasts ``(quantile, lead, band, y, x)`` for the writers: the quantiles folded into the band
axis for GeoTIFF and GeoPackage (one band or column per lead and quantile), and the CF attributes of
the ``quantile`` dimension for NetCDF."""

from __future__ import annotations

import numpy as np
import xarray as xr

from trafficrnn.errors import ExportError

__all__ = ["flatten_quantiles", "quantile_coords", "percentile_name"]


def _label(q: float) -> str:
    from trafficrnn.estimation.calibration import quantile_label

    return quantile_label(q)


def percentile_name(q: float) -> str:
    """``0.1`` -> ``"10th percentile"``, ``0.5`` -> ``"50th percentile (median)"``, ``0.975`` -> ``"97.5th percentile"``."""
    pct = round(float(q) * 100, 6)
    text = f"{pct:g}"
    last = int(pct) % 100 if pct == int(pct) else None
    suffix = (
        "th" if last is None or 10 < last < 14 else {1: "st", 2: "nd", 3: "rd"}.get(last % 10, "th")
    )
    return f"{text}{suffix} percentile" + (" (median)" if pct == 50 else "")


def quantile_coords(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray] | None:
    """The quantile level and the original band of each band of a flattened array; None for others."""
    if "quantile" in da.coords and da["quantile"].dims == ("band",):
        return np.asarray(da["quantile"].values), np.asarray(da["source_band"].values)
    return None


def flatten_quantiles(da: xr.DataArray) -> xr.DataArray:
    """``(quantile, lead|time, band, y, x)`` -> ``(lead|time, band, y, x)`` with one band per band and
    quantile, named ``density_q10`` ..., carrying the coordinates ``quantile`` and ``source_band`` along
    ``band``; other arrays are returned as they are.

    Raises
    ------
    ExportError
        A ``quantile`` dimension that is not the first of five.
    """
    if "quantile" not in da.dims:
        return da
    if da.ndim != 5 or da.dims[0] != "quantile" or da.dims[2:] != ("band", "y", "x"):
        raise ExportError(
            f"cannot write an array with dims {da.dims}; expected (quantile, lead, band, y, x) as "
            "predict(..., quantiles=...) returns"
        )
    qs = [float(q) for q in da["quantile"].values]
    bands = [str(b) for b in da["band"].values]
    stacked = da.transpose(da.dims[1], "band", "quantile", "y", "x")
    values = stacked.values.reshape(stacked.shape[0], len(bands) * len(qs), *stacked.shape[3:])
    names = [f"{b}_{_label(q)}" for b in bands for q in qs]
    coords = {k: v for k, v in da.coords.items() if not ({"quantile", "band"} & set(v.dims))}
    out = xr.DataArray(values, dims=stacked.dims[:1] + ("band", "y", "x"), coords=coords)
    out = out.assign_coords(
        band=names,
        quantile=("band", np.tile(qs, len(bands))),
        source_band=("band", np.repeat(bands, len(qs))),
    )
    out.attrs = dict(da.attrs)
    return out


def cf_quantile_dataset(da: xr.DataArray, build) -> tuple[xr.Dataset, dict]:
    """The CF dataset of a quantile forecast: ``build`` (:func:`~trafficrnn.io.netcdf.cf_dataset`) of each
    quantile, joined along a ``quantile`` dimension (first) with its CF attributes: ``quantile`` (the
    probability level, units 1), an auxiliary ``percentile_name`` per level (``"10th percentile"``),
    and on each variable a ``long_name`` naming the percentiles and ``cell_methods = "quantile: point"``
    (each value is the forecast at that level).

    CF has no standard name for a probability level, so none is set (``long_name`` says what it is).
    """
    import pandas as pd

    qs = [float(q) for q in da["quantile"].values]
    parts = [build(da.isel(quantile=i, drop=True)) for i in range(len(qs))]
    ds = xr.concat(
        [p[0] for p in parts],
        dim=pd.Index(qs, name="quantile"),
        data_vars="all",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )
    ds = ds.set_coords([v for v in ("spatial_ref",) if v in ds.data_vars])
    encoding = {**parts[0][1], "quantile": {"_FillValue": None}}  # CF: no fill value on coordinates
    names = [percentile_name(q) for q in qs]
    ds = ds.assign_coords(percentile_name=("quantile", np.array(names, dtype=object)))
    ds["quantile"].attrs.update(
        long_name="quantile level: probability that the value is not exceeded", units="1"
    )
    ds["percentile_name"].attrs.update(long_name="percentile of the forecast distribution")
    for name in ds.data_vars:
        attrs = ds[name].attrs
        attrs["long_name"] = f"{attrs.get('long_name', name)}, {', '.join(names)} of the forecast"
        attrs["cell_methods"] = "quantile: point"
        ds[name] = ds[name].transpose("quantile", ...)
    ds.attrs.update(quantiles=",".join(f"{q:g}" for q in qs))
    return ds, encoding
