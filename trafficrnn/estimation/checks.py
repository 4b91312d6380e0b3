"""Checks of a TrafficForecaster's parameters and of the stacks given to it: parameter types and ranges, grids,
bands, CRS, resolution, cadence, horizon, observed targets. Every refusal names the value found and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, TimestampError
from trafficrnn.grid import Grid
from trafficrnn.params import check_params
from trafficrnn.windows import declared_nodata, pixel_values

#: how predict / evaluate take images that are not on the model's pixels
ALIGNS = ("exact", "resample", "reproject")


def gsd_of(images: xr.DataArray) -> tuple[float, float]:
    """Pixel size (x, y) of ``images`` in CRS units, from its transform."""
    t = images.rio.transform()
    return abs(t.a), abs(t.e)


def resample_to_gsd(images: xr.DataArray, gsd: tuple[float, float]) -> xr.DataArray:
    """Images resampled onto pixels of ``gsd`` (x, y) by area averaging, keeping CRS and origin;
    ``images`` as they are where their pixel size is ``gsd`` already (to 1e-6 relative).

    Parameters
    ----------
    images : xarray.DataArray
        ``(time, band, y, x)`` with CRS and transform; NaN marks missing pixels.
    gsd : tuple of float
        Wanted pixel size in CRS units.

    Returns
    -------
    xarray.DataArray
        ``(time, band, y', x')`` float32 over the whole pixels of the new size that the extent holds.
    """
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    if np.allclose(gsd_of(images), gsd, rtol=1e-6):
        return images
    t = images.rio.transform()
    shape = (
        int(images.sizes["y"] * abs(t.e) / gsd[1] + 1e-6),
        int(images.sizes["x"] * abs(t.a) / gsd[0] + 1e-6),
    )
    if min(shape) < 1:
        raise GridError(
            f"images of {images.sizes['y']} x {images.sizes['x']} px are smaller than one pixel of "
            f"{gsd}: pass a larger scene"
        )
    dst = Affine(gsd[0], 0, t.c, 0, -gsd[1], t.f)
    data = masked_nodata(images).astype("float32").rio.write_nodata(np.nan)
    frames = [
        data.isel(time=i).rio.reproject(
            images.rio.crs, shape=shape, transform=dst, resampling=Resampling.average
        )
        for i in range(images.sizes["time"])
    ]
    out = xr.concat(frames, dim="time", coords="minimal", compat="override").transpose(
        "time", "band", "y", "x"
    )
    out.attrs = dict(images.attrs)
    return out.rio.write_crs(images.rio.crs).rio.write_transform(dst)


def gdalwarp_line(grid: Grid) -> str:
    """A ``gdalwarp`` command that warps one image onto the pixels of ``grid`` (for messages)."""
    epsg = grid.crs.to_epsg()
    left, bottom, right, top = grid.bounds
    height, width = grid.image_shape
    return (
        f"gdalwarp -t_srs {f'EPSG:{epsg}' if epsg else repr(grid.crs.to_wkt())} -te {left:.10g} {bottom:.10g} "
        f"{right:.10g} {top:.10g} -ts {width} {height} -r bilinear IN.tif OUT.tif"
    )


def reproject_to_grid(images: xr.DataArray, grid: Grid) -> xr.DataArray:
    """Images warped (bilinear) onto the pixels of ``grid``: its CRS, image transform and image shape;
    ``images`` as they are where they lie on those pixels already.

    Parameters
    ----------
    images : xarray.DataArray
        ``(time, band, y, x)`` with CRS and transform, in any CRS and at any pixel size; NaN marks
        missing pixels.
    grid : Grid
        The grid of a fitted model; the images land on ``grid.image_transform`` and ``grid.image_shape``.

    Returns
    -------
    xarray.DataArray
        ``(time, band, y', x')`` float32 on the grid's pixels, NaN where ``images`` do not reach.

    Raises
    ------
    ModelMismatchError
        If the images cover less than half of the grid (``MIN_COVERAGE``): the forecast would be
        made mostly from NaN.
    """
    from rasterio.enums import Resampling

    from trafficrnn.io._warp import MIN_COVERAGE, bounds_text, footprint_share, same_pixels

    shape, dst = grid.image_shape, grid.image_transform
    src, crs = images.rio.transform(), images.rio.crs
    if same_pixels(crs, src, images.shape[-2:], grid.crs, dst, shape):
        return images
    share = footprint_share(crs, src, images.shape[-2:], grid.crs, dst, shape)
    if share < MIN_COVERAGE:
        found = "do not overlap" if share == 0 else f"cover only {share:.0%} of"
        raise ModelMismatchError(
            f"the images {found} the model's grid (images: {bounds_text(crs, src, images.shape[-2:])}; model: "
            f"{bounds_text(grid.crs, grid.transform, grid.shape)}): align='reproject' warps them onto that grid and "
            f"expects them to cover at least {MIN_COVERAGE:.0%} of it; pass images of the area the model was "
            "trained on (trafficrnn info MODEL shows its bounds)"
        )
    data = masked_nodata(images).astype("float32").rio.write_nodata(np.nan)
    frames = [
        data.isel(time=i).rio.reproject(
            grid.crs, shape=shape, transform=dst, resampling=Resampling.bilinear
        )
        for i in range(images.sizes["time"])
    ]
    out = xr.concat(frames, dim="time", coords="minimal", compat="override").transpose(
        "time", "band", "y", "x"
    )
    out.attrs = dict(images.attrs)
    return out.rio.write_crs(grid.crs).rio.write_transform(dst)


def masked_nodata(da: xr.DataArray) -> xr.DataArray:
    """``da`` as float32 with NaN at its declared nodata (:func:`pixel_values`); other stacks as they are."""
    if declared_nodata(da) is None:
        return da
    return da.copy(data=pixel_values(da)).rio.write_nodata(np.nan, encoded=False, inplace=True)


@dataclass(frozen=True)
class CheckedStack:
    """A stack checked against a fitted model by :meth:`InputChecks.check_stack`."""

    images: xr.DataArray  #: the images (or grids), on the model's grid after ``align``
    grid: Grid  #: the model's forecast grid
    target: xr.DataArray | None  #: the target on that grid, reindexed to the images' times
    horizon: int  #: the lead steps asked for, checked against the trained horizon


class InputChecks:
    """Mixin of :class:`~trafficrnn.estimator.TrafficForecaster`: validation of its parameters and inputs."""

    def _validate_params(self) -> None:
        """Each parameter on its own, as the constructor checks it (an attribute may have been assigned
        since), then what depends on several together."""
        check_params(self.get_params())
        given = (self.val, self.test)
        if any(
            v is not None for v in given
        ):  # one set, the other None: that one is 0.15 (trafficrnn.splits)
            given = tuple(0.15 if v is None else v for v in given)
        fractions = [v for v in given if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(not 0 <= v < 1 for v in fractions) or sum(fractions) >= 1:
            raise ConfigError(
                f"val={self.val}, test={self.test} are invalid: expected fractions that leave data "
                "for training, or the first timestamp of each split"
            )
        lags = self.linear_lags
        if (
            isinstance(lags, bool)
            or not isinstance(lags, (int, np.integer))
            or not 0 <= lags <= self.input_steps
        ):
            raise ConfigError(
                f"linear_lags={lags!r} is invalid: expected an integer from 0 (no linear term) to "
                f"input_steps={self.input_steps}, e.g. 2"
            )
        steps = self.bptt_steps
        if steps is not None and (
            isinstance(steps, bool)
            or not isinstance(steps, (int, np.integer))
            or not 1 <= steps <= self.input_steps
        ):
            raise ConfigError(
                f"bptt_steps={steps!r} is invalid: expected an integer from 1 to "
                f"input_steps={self.input_steps} (the frames backpropagated through), or None for all"
            )

    @staticmethod
    def _check_array(da: Any, what: str) -> xr.DataArray:
        if not isinstance(da, xr.DataArray) or da.dims != ("time", "band", "y", "x"):
            dims = getattr(da, "dims", type(da).__name__)
            raise ConfigError(
                f"{what} must be a DataArray (time, band, y, x) as read_stack returns; got {dims}"
            )
        if da.rio.crs is None:
            raise GridError(
                f"{what} has no CRS; read it with read_stack or set da.rio.write_crs(...)"
            )
        return da

    def _align_target(self, images: xr.DataArray, target: xr.DataArray, grid: Grid) -> xr.DataArray:
        tgrid = Grid.from_dataarray(target, tile_size=grid.tile_size)
        if not tgrid.matches(grid):
            raise GridError(
                f"target grid {tgrid} does not match the image grid {grid} at tile_size="
                f"{grid.tile_size}: rasterise the target on Grid.from_image(images, {grid.tile_size})"
            )
        common = np.intersect1d(images.time.values, target.time.values)
        if len(common) == 0:
            raise TimestampError(
                "images and target share no timestamp: check that both stacks cover the same period"
            )
        return target.reindex(
            time=images.time.values
        )  # frames without a target become NaN (masked)

    def _prepare(self, images: xr.DataArray, align: str = "exact") -> tuple[xr.DataArray, Grid]:
        self._check_fitted()
        if align not in ALIGNS:
            raise ConfigError(
                f"align={align!r} is invalid: expected one of {', '.join(map(repr, ALIGNS))}"
            )
        images = self._check_array(images, "images")
        found = [str(b) for b in images.band.values]
        if found != self.input_bands_:
            raise ModelMismatchError(
                f"stack bands {found} differ from the model's {self.input_bands_}: "
                "read the stack with read_stack(..., bands=[...]) in the model's order, or "
                "write the files with those bands (gdal_translate -b 1 -b 2 ... IN.tif OUT.tif)"
            )
        if align == "reproject":
            images = reproject_to_grid(images, self.grid_)
        if images.rio.crs != self.grid_.crs:
            raise ModelMismatchError(
                f"stack CRS {images.rio.crs} differs from the model's {self.grid_.crs}: warp the "
                "images onto the model's grid with predict(..., align='reproject') (CLI: --align "
                f"reproject), or beforehand: {gdalwarp_line(self.grid_)}"
            )
        tile = self.grid_.tile_size
        gsd, model_gsd = gsd_of(images), self.gsd_
        if not np.allclose(gsd, model_gsd, rtol=1e-6):
            if align != "resample":
                unit = images.rio.crs.linear_units if images.rio.crs.is_projected else "CRS units"
                raise ModelMismatchError(
                    f"the images have pixels of {gsd[0]:g} x {gsd[1]:g} {unit} (GSD), the model was trained on "
                    f"{model_gsd[0]:g} x {model_gsd[1]:g} at tile_size={tile} (cells of "
                    f"{self.grid_.resolution[0]:g} x {self.grid_.resolution[1]:g}): resample the images to the "
                    "model's GSD with predict(..., align='resample') (CLI: --align resample), or warp them onto the "
                    "model's grid with align='reproject' (CLI: --align reproject)"
                )
            images = resample_to_gsd(images, model_gsd)
        grid = Grid.from_image(images, tile)  # tile 1: the stack's own grid
        times = pd.DatetimeIndex(images.time.values)
        if len(times) > 1:
            step = pd.Timedelta(times[-1] - times[-2])
            if step != self.cadence_:
                raise ModelMismatchError(
                    f"stack cadence {step} differs from the model's {self.cadence_}: "
                    "resample the stack to the model's cadence"
                )
        if np.issubdtype(images.dtype, np.floating) and (
            images.chunks is not None or np.isinf(images.values).any()
        ):
            images = images.where(~np.isinf(images))  # ±inf is missing, like NaN (as in training)
        return (grid.crop(images) if tile > 1 else images), grid

    def _observed(
        self, images: xr.DataArray, target: xr.DataArray | None, grid: Grid
    ) -> np.ndarray | None:
        """Normalised observed targets of the frames of ``images`` (``target_inputs`` models), else None."""
        if not getattr(self, "target_inputs", False):
            return None
        if target is None:
            raise ModelMismatchError(
                "the model reads the observed targets of its input frames (target_inputs=True): "
                "pass target=... (CLI: --target or --vehicles) covering the stack's frames"
            )
        target = self._align_target(images, self._check_array(target, "target"), grid)
        found = [str(b) for b in target.band.values]
        if found != self.bands_:
            raise ModelMismatchError(f"target bands {found} differ from the model's {self.bands_}")
        values = np.asarray(target.values, dtype="float32")
        return self.target_normalizer_.transform(
            np.where(np.isinf(values), np.nan, values), band_axis=1
        )

    def check_stack(
        self,
        images: xr.DataArray,
        target: xr.DataArray | None = None,
        *,
        align: str = "exact",
        horizon: int | None = None,
    ) -> CheckedStack:
        """Check ``images`` (and ``target``) against the fitted model, as ``predict`` and
        ``evaluate`` do: bands, CRS, grid, pixel size, cadence (``align`` as in ``predict``), the
        target's grid and times, and ``horizon`` (``None``: the trained one).

        Raises
        ------
        NotFittedError, ModelMismatchError, GridError, TimestampError, ConfigError
            With the value found, what was expected and the fix.
        """
        images, grid = self._prepare(images, align)
        aligned = None if target is None else self._align_target(images, target, grid)
        return CheckedStack(images, grid, aligned, self._check_horizon(horizon))

    def _check_horizon(self, horizon: int | None) -> int:
        horizon = self.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ConfigError(f"horizon={horizon!r} is invalid: expected a positive integer")
        if horizon > self.horizon:
            raise ModelMismatchError(
                f"horizon={horizon} is longer than the {self.horizon} steps the model was "
                f"trained for: ask for at most {self.horizon}, or retrain with horizon={horizon}"
            )
        return int(horizon)
