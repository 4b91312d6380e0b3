"""Footprints of warped grids: how much of one grid another covers once reprojected, for the refusals of
frames and stacks that would be mostly NaN after warping (``read_stack(..., align="reproject")``, predict's
``align="reproject"``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import reproject

#: the least share of the reference grid that a frame must cover once warped (``align="reproject"``);
#: below it most of the warped frame would be NaN that the file itself does not hold
MIN_COVERAGE = 0.5


def footprint_share(
    src_crs,
    src_transform: Affine,
    src_shape: tuple[int, int],
    dst_crs,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    *,
    side: int = 256,
) -> float:
    """Share (0 to 1) of the pixels of the grid ``dst`` that the footprint of the grid ``src`` covers once warped.

    Only the grids are warped (no pixel is read), each sampled at most ``side`` pixels a side over
    its own bounds, so the share is exact to about ``1 / side``. NaN that a file holds itself
    (nodata, clouds) does not count against it.
    """

    def coarse(transform: Affine, shape: tuple[int, int]) -> tuple[Affine, tuple[int, int]]:
        rows, cols = min(shape[0], side), min(shape[1], side)
        return transform * Affine.scale(shape[1] / cols, shape[0] / rows), (rows, cols)

    src_t, src_s = coarse(src_transform, src_shape)
    dst_t, dst_s = coarse(dst_transform, dst_shape)
    covered = np.zeros(dst_s, "uint8")
    try:
        reproject(
            np.ones(src_s, "uint8"),
            covered,
            src_transform=src_t,
            src_crs=src_crs,
            src_nodata=0,
            dst_transform=dst_t,
            dst_crs=dst_crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    except (RasterioError, ValueError):  # no transformation maps one area onto the other
        return 0.0
    return float(covered.mean())


def bounds_text(crs, transform: Affine, shape: tuple[int, int]) -> str:
    """``"(west, south, east, north) in EPSG:…"`` of a grid, for messages."""
    west, south, east, north = array_bounds(*shape, transform)
    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    return f"({west:.10g}, {south:.10g}, {east:.10g}, {north:.10g}) in {f'EPSG:{epsg}' if epsg else crs.to_string()}"


def same_pixels(
    crs,
    transform: Affine,
    shape: tuple[int, int],
    ref_crs,
    ref_transform: Affine,
    ref_shape: tuple[int, int],
) -> bool:
    """Whether two grids of pixels are one: same CRS, shape and transform (to float tolerance)."""
    return (
        crs == ref_crs
        and tuple(shape) == tuple(ref_shape)
        and transform.almost_equals(ref_transform)
    )


def same_grid(da: xr.DataArray, ref: xr.DataArray) -> bool:
    """Whether two rasters share CRS, shape and transform."""
    return same_pixels(
        da.rio.crs,
        da.rio.transform(),
        da.shape[-2:],
        ref.rio.crs,
        ref.rio.transform(),
        ref.shape[-2:],
    )


def reproject_like(da: xr.DataArray, ref: xr.DataArray) -> xr.DataArray:
    """``da`` warped (bilinear, float32, NaN outside its footprint) onto the grid of ``ref``."""
    out = (
        da.astype("float32")
        .rio.write_nodata(np.nan)
        .rio.reproject_match(ref, resampling=Resampling.bilinear)
    )
    return out.assign_coords(x=ref.x, y=ref.y)
