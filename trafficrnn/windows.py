"""Normalisation fitted on training data only, and the torch Dataset of sliding (optionally cropped) windows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, NotFittedError
from trafficrnn.timeaxis import positive_int

# -- normalisation -----------------------------------------------------------------------


def declared_nodata(da: Any) -> float | None:
    """The nodata value an integer stack declares (``da.rio.nodata``, e.g. the uint8 clouds at 0 of
    :func:`~trafficrnn.synth.simulate`), else ``None``: floats carry their missing pixels as NaN."""
    if not isinstance(da, xr.DataArray) or not np.issubdtype(da.dtype, np.integer):
        return None
    import rioxarray  # noqa: F401  (the .rio accessor)

    return da.rio.nodata


def pixel_values(da: xr.DataArray) -> np.ndarray:
    """The values of a stack as float32, NaN where an integer stack holds its declared nodata: what
    the models read, as :func:`~trafficrnn.io.read_stack` reads such files."""
    raw = np.asarray(da.values)
    values = raw.astype("float32", copy=False)
    nodata = declared_nodata(da)
    if nodata is not None:
        values[raw == nodata] = np.nan
    return values


class Normalizer:
    """Per-band affine normalisation, optionally after ``log1p``; fit on training data only.

    ``transform(x) = (f(x) - mean_) / scale_`` with ``f = log1p`` or identity; NaN stays NaN.

    Parameters
    ----------
    method : {"standard", "rms", "scale"}
        ``standard``: mean and standard deviation; ``rms``: mean 0 and the root mean square
        (zero stays zero, typical values near 1: counts); ``scale``: mean 0 and the largest absolute
        value (zero stays zero).
    log1p : bool, default False
        Apply ``log1p`` first (non-negative data such as counts).
    """

    def __init__(self, method: str = "standard", log1p: bool = False) -> None:
        self.method = method
        self.log1p = log1p

    @staticmethod
    def _axis(data: Any, band_axis: int) -> int:
        if isinstance(data, xr.DataArray) and "band" not in data.dims:
            raise ConfigError(
                f"array with dims {data.dims} has no 'band' dim: expected (..., band, y, x)"
            )
        return (
            data.get_axis_num("band")
            if isinstance(data, xr.DataArray)
            else band_axis % np.ndim(data)
        )

    def fit(self, data: Any, *, band_axis: int = -3) -> Normalizer:
        """Learn ``mean_`` and ``scale_`` per band, ignoring NaN and the nodata value an integer
        DataArray declares (``rio.nodata``).

        Parameters
        ----------
        data : xarray.DataArray with a ``band`` dim, or numpy array
            Training data, e.g. ``(T, C, y, x)``.
        band_axis : int, default -3
            Band axis of a numpy array (ignored for a DataArray).

        Raises
        ------
        ConfigError
            For an unknown method, negative values with ``log1p``, or a band without finite values.
        """
        if self.method not in ("standard", "rms", "scale"):
            raise ConfigError(
                f"method={self.method!r} is invalid: expected 'standard', 'rms' or 'scale'"
            )
        axis = self._axis(data, band_axis)
        arr = np.moveaxis(np.asarray(data), axis, 0)
        names = [str(b) for b in data["band"].values] if isinstance(data, xr.DataArray) else None
        mean, scale = [], []
        nodata = declared_nodata(data)
        for c in range(arr.shape[0]):
            band = arr[c] if nodata is None else arr[c][arr[c] != nodata]
            band = band.astype(np.float64)
            band = band[np.isfinite(band)]
            label = names[c] if names else c
            if band.size == 0:
                raise ConfigError(
                    f"band {label!r} has no finite value in the training data: drop the band "
                    "or fit on a period where it was observed"
                )
            if self.log1p:
                if band.min() < 0:
                    raise ConfigError(
                        f"log1p=True needs non-negative data, band {label!r} has minimum "
                        f"{band.min():g}: use log1p=False"
                    )
                band = np.log1p(band)
            if self.method == "standard":
                m, s = band.mean(), band.std()
            elif self.method == "rms":
                m, s = 0.0, np.sqrt(np.mean(band**2))
            else:
                m, s = 0.0, np.abs(band).max()
            mean.append(float(m))
            scale.append(float(s) if s > 1e-12 else 1.0)
        self.mean_, self.scale_, self.bands_ = np.array(mean), np.array(scale), names
        self.units_ = data.attrs.get("units") if isinstance(data, xr.DataArray) else None
        return self

    def _params(self, data: Any, band_axis: int) -> tuple[Any, Any]:
        if not hasattr(self, "mean_"):
            raise NotFittedError("this Normalizer is not fitted yet: call fit(train_data) first")
        axis = self._axis(data, band_axis)
        if isinstance(data, xr.DataArray) and self.bands_ is not None:
            found = [str(b) for b in data["band"].values]
            if found != self.bands_:
                raise ModelMismatchError(
                    f"bands {found} differ from the bands fitted {self.bands_}: "
                    "select the same bands in the same order"
                )
        n_bands = data.shape[axis]
        if n_bands != len(self.mean_):
            raise ModelMismatchError(
                f"data have {n_bands} band(s) on axis {axis}, the normalizer was fitted "
                f"on {len(self.mean_)}: pass data with the fitted bands"
            )
        shape = (-1,) + (1,) * (np.ndim(data) - axis - 1)
        if isinstance(data, torch.Tensor):
            kw = {"dtype": data.dtype, "device": data.device}
            return torch.as_tensor(self.mean_, **kw).reshape(shape), torch.as_tensor(
                self.scale_, **kw
            ).reshape(shape)
        dtype = data.dtype if np.issubdtype(data.dtype, np.floating) else np.float32
        return self.mean_.astype(dtype).reshape(shape), self.scale_.astype(dtype).reshape(shape)

    def _apply(self, data: Any, band_axis: int, inverse: bool) -> Any:
        mean, scale = self._params(data, band_axis)
        if isinstance(data, xr.DataArray):
            out = data.copy(data=self._apply(data.values, data.get_axis_num("band"), inverse))
            out.attrs["units"] = (self.units_ or out.attrs.get("units")) if inverse else "1"
            return out
        if isinstance(data, torch.Tensor):
            if inverse:
                raw = data * scale + mean
                return torch.expm1(raw) if self.log1p else raw
            return ((torch.log1p(data) if self.log1p else data) - mean) / scale
        data = np.asarray(data, dtype=mean.dtype)
        # one new array, updated in place (a stack of large frames is not copied three times)
        if inverse:
            out = np.multiply(data, scale)
            out += mean
            return np.expm1(out, out=out) if self.log1p else out
        out = np.log1p(data) if self.log1p else np.array(data, copy=True)
        out -= mean
        out /= scale
        return out

    def transform(self, data: Any, *, band_axis: int = -3) -> Any:
        """Normalise a DataArray (its ``band`` dim), numpy array or torch tensor (``band_axis``).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ModelMismatchError
            If the bands differ from those fitted.
        """
        return self._apply(data, band_axis, inverse=False)

    def inverse_transform(self, data: Any, *, band_axis: int = -3) -> Any:
        """Back to raw units; inverse of :meth:`transform` (same arguments and errors)."""
        return self._apply(data, band_axis, inverse=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters and fitted state (for ``config.json``).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not hasattr(self, "mean_"):
            raise NotFittedError(
                "this Normalizer is not fitted yet: call fit(train_data) before to_dict()"
            )
        return {
            "method": self.method,
            "log1p": bool(self.log1p),
            "bands": self.bands_,
            "units": self.units_,
            "mean": [float(v) for v in self.mean_],
            "scale": [float(v) for v in self.scale_],
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Normalizer:
        """Rebuild a fitted normalizer from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If a key is missing or ``mean`` and ``scale`` differ in length.
        """
        try:
            norm = cls(spec["method"], bool(spec["log1p"]))
            norm.mean_ = np.asarray(spec["mean"], dtype=np.float64)
            norm.scale_ = np.asarray(spec["scale"], dtype=np.float64)
            norm.bands_ = None if spec.get("bands") is None else [str(b) for b in spec["bands"]]
            norm.units_ = spec.get("units")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"normalizer spec {spec!r:.200} is malformed ({exc!r}): expected keys method, "
                "log1p, mean, scale (and bands, units) as written by to_dict()"
            ) from exc
        if norm.mean_.shape != norm.scale_.shape or norm.mean_.ndim != 1:
            raise ConfigError(
                f"normalizer spec has {norm.mean_.size} mean(s) and {norm.scale_.size} scale(s): "
                "expected one of each per band"
            )
        return norm


# -- torch dataset -----------------------------------------------------------------------
class WindowDataset(torch.utils.data.Dataset):
    """Sliding windows over an input series and a target series, optionally randomly cropped.

    Parameters
    ----------
    inputs : numpy.ndarray, shape (T, C_in, H, W)
        Images (``H = h * tile_size``) or grids (``tile_size = 1``). Not copied.
    target : numpy.ndarray, shape (T, C_t, h, w)
        Target grids, NaN = unknown. Not copied.
    starts : array-like of int
        Window starts, e.g. from :func:`window_starts`.
    input_steps, horizon : int
    future_maps : numpy.ndarray, shape (T, C_f, h, w), optional
        Known-in-advance maps of every frame (see :class:`trafficrnn.estimation.context.Context`); items
        get ``ctx_out (H, C_f, h', w')``, the maps of their target frames, and ``ctx_in
        (T_in, C_f, h', w')``, those of their input frames, cropped like ``y``.
    time_feats : numpy.ndarray, shape (T, F), optional
        E.g. :func:`time_features` of the series.
    crop : int or (int, int), optional
        Crop of ``(rows, cols)`` grid cells, placed at random (image crops span the same cells).
    tile_size : int, default 1
    seed : int, default 0
        Crops depend on ``(seed, epoch, index)`` only; call :meth:`set_epoch` for new crops.

    Items are dicts of float32 tensors: ``x (T_in, C_in, H', W')`` (NaN kept where inputs are
    missing: the model turns them into a validity channel), ``y (H, C_t, h', w')``, ``mask``
    (bool, finite target), ``y_in (T_in, C_t, h', w')`` and ``mask_in`` (targets of the input
    frames, for the auxiliary nowcast loss), ``last (C_t, h', w')`` (last observed target
    frame), ``tf_in (T_in, F)`` and ``tf_out (H, F)`` when ``time_feats`` is given, and
    ``start`` and ``origin`` (crop's first row and col, in cells) as int64. Non-finite values
    of ``y``, ``y_in`` and ``last`` are replaced by 0 (use the masks in the loss).

    Raises
    ------
    ConfigError
        For invalid window lengths, crop or starts out of range.
    GridError
        If inputs are not ``tile_size`` times the target grid, or the crop exceeds the grid.
    """

    def __init__(
        self,
        inputs: np.ndarray,
        target: np.ndarray,
        starts: Any,
        input_steps: int,
        horizon: int,
        *,
        time_feats: np.ndarray | None = None,
        future_maps: np.ndarray | None = None,
        crop: int | tuple[int, int] | None = None,
        tile_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.input_steps, self.horizon = (
            positive_int(input_steps, "input_steps"),
            positive_int(horizon, "horizon"),
        )
        self.tile_size = positive_int(tile_size, "tile_size")
        if np.ndim(inputs) != 4 or np.ndim(target) != 4:
            raise ConfigError(
                f"inputs {np.shape(inputs)} and target {np.shape(target)} must both be 4-D "
                "(T, C, y, x)"
            )
        if inputs.shape[0] != target.shape[0]:
            raise ConfigError(
                f"inputs have {inputs.shape[0]} time steps, target {target.shape[0]}: "
                "pass the same time range for both"
            )
        rows, cols = target.shape[2:]
        if inputs.shape[2:] != (rows * self.tile_size, cols * self.tile_size):
            raise GridError(
                f"inputs of {inputs.shape[2:]} px do not cover the {rows} x {cols} target grid at "
                f"tile_size={self.tile_size}: expected {(rows * self.tile_size, cols * self.tile_size)}"
            )
        if time_feats is not None and len(time_feats) != len(target):
            raise ConfigError(
                f"time_feats have {len(time_feats)} rows for {len(target)} time steps: "
                "compute them from the same timestamps"
            )
        self.starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        span = self.input_steps + self.horizon
        if self.starts.size and (self.starts.min() < 0 or self.starts.max() + span > len(target)):
            raise ConfigError(
                f"window starts range {self.starts.min()}..{self.starts.max()} but windows of "
                f"{span} steps must fit in {len(target)} time steps: use window_starts()"
            )
        if crop is not None:
            crop = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop)
            crop = (positive_int(crop[0], "crop rows"), positive_int(crop[1], "crop cols"))
            if crop[0] > rows or crop[1] > cols:
                raise GridError(
                    f"crop={crop} cells exceeds the {rows} x {cols} grid: choose a smaller crop"
                )
        if future_maps is not None and (
            len(future_maps) != len(target) or future_maps.shape[2:] != target.shape[2:]
        ):
            raise ConfigError(
                f"future_maps of shape {future_maps.shape} do not match the target {target.shape}: "
                "expected (T, C_f, rows, cols) on the same frames and grid"
            )
        self.inputs, self.target, self.time_feats = inputs, target, time_feats
        self.future_maps = future_maps
        self.crop, self.seed, self.epoch = crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops: crops depend on ``(seed, epoch, index)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.starts.size)

    @staticmethod
    def _tensor(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[index])
        mid, end = s + self.input_steps, s + self.input_steps + self.horizon
        r0 = c0 = 0
        rows, cols = self.target.shape[2:]
        if self.crop is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            r0 = int(rng.integers(0, rows - self.crop[0] + 1))
            c0 = int(rng.integers(0, cols - self.crop[1] + 1))
            rows, cols = self.crop
        t = self.tile_size
        x = self.inputs[s:mid, :, r0 * t : (r0 + rows) * t, c0 * t : (c0 + cols) * t]
        y = self.target[s:end, :, r0 : r0 + rows, c0 : c0 + cols]
        x = np.asarray(x, dtype=np.float32)
        x = np.where(
            np.isinf(x), np.float32(np.nan), x
        )  # NaN marks missing input; the model masks it
        item = {
            "x": torch.from_numpy(np.ascontiguousarray(x)),
            "y": self._tensor(y[self.input_steps :]),
            "mask": torch.from_numpy(np.isfinite(y[self.input_steps :])),
            "y_in": self._tensor(y[: self.input_steps]),
            "mask_in": torch.from_numpy(np.isfinite(y[: self.input_steps])),
            "last": self._tensor(y[self.input_steps - 1]),
            "start": torch.tensor(s),
            "origin": torch.tensor([r0, c0]),
        }
        if self.time_feats is not None:
            item["tf_in"] = torch.as_tensor(np.asarray(self.time_feats[s:mid], dtype=np.float32))
            item["tf_out"] = torch.as_tensor(np.asarray(self.time_feats[mid:end], dtype=np.float32))
        if self.future_maps is not None:
            maps = self.future_maps[s:end, :, r0 : r0 + rows, c0 : c0 + cols]
            item["ctx_in"] = torch.from_numpy(
                np.ascontiguousarray(maps[: self.input_steps], dtype=np.float32)
            )
            item["ctx_out"] = torch.from_numpy(
                np.ascontiguousarray(maps[self.input_steps :], dtype=np.float32)
            )
        return item
