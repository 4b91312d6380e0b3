"""The forecast grid: a north-up raster of cells, each summarising ``tile_size`` × ``tile_size`` image pixels.

A :class:`Grid` carries the CRS and the affine transform of the *cells*; the transform of
the image it came from is ``grid.transform * Affine.scale(1 / tile_size)``. It converts
between cell indices and world coordinates, builds cell polygons, and attaches its
georeference to xarray objects so that nothing downstream has to guess it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor that attach and from_dataarray use)
import xarray as xr
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS

from trafficrnn.errors import GridError, MissingCRSError


def _as_crs(crs: Any) -> CRS:
    if crs is None:
        raise MissingCRSError(
            "grid has no CRS: expected a CRS (e.g. 'EPSG:32633'); "
            "set one with da.rio.write_crs(...) or pass crs=..."
        )
    try:
        return CRS.from_user_input(crs)
    except Exception as exc:  # rasterio raises CRSError, pyproj objects need to_wkt
        if hasattr(crs, "to_wkt"):
            return CRS.from_wkt(crs.to_wkt())
        raise GridError(f"cannot interpret CRS {crs!r}: {exc}; pass an EPSG code or WKT") from exc


def check_north_up(transform: Affine, what: str = "transform") -> None:
    """Raise :class:`GridError` unless ``transform`` is north-up (no rotation, y decreasing).

    Raises
    ------
    GridError
        If the transform is rotated, sheared, or not north-up.
    """
    a, b, _, d, e, _ = transform[:6]
    if b != 0 or d != 0 or not a > 0 or not e < 0:
        raise GridError(
            f"{what} {tuple(transform[:6])} is not north-up (expected b == d == 0, "
            "a > 0, e < 0); rotated or flipped rasters are refused rather than silently "
            "misplaced: warp them north-up first, e.g. gdalwarp IN.tif OUT.tif (with no target grid "
            "given, gdalwarp writes a north-up raster)"
        )


@dataclass(frozen=True)
class Grid:
    """A georeferenced north-up grid of forecast cells.

    Parameters
    ----------
    crs : rasterio CRS or anything ``CRS.from_user_input`` accepts
        Coordinate reference system of the grid.
    transform : affine.Affine
        Affine transform of the cells (cell (0, 0) upper-left corner at ``(c, f)``).
    shape : tuple of int
        ``(rows, cols)`` of the grid.
    tile_size : int, default 1
        Image pixels per cell side; 1 when the stack already holds grids.

    Raises
    ------
    GridError
        For a non-north-up transform, a non-positive shape or tile size.
    """

    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    tile_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", _as_crs(self.crs))
        transform = (
            self.transform if isinstance(self.transform, Affine) else Affine(*self.transform[:6])
        )
        check_north_up(transform, "grid transform")
        object.__setattr__(self, "transform", transform)
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise GridError(
                f"grid shape {self.shape!r} is invalid: expected (rows, cols) with both >= 1"
            )
        object.__setattr__(self, "shape", shape)
        if int(self.tile_size) != self.tile_size or self.tile_size < 1:
            raise GridError(
                f"tile_size {self.tile_size!r} is invalid: expected a positive integer (e.g. 16)"
            )
        object.__setattr__(self, "tile_size", int(self.tile_size))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_image(cls, images: xr.DataArray, tile_size: int, *, whole: bool = False) -> Grid:
        """Grid whose cells are ``tile_size`` × ``tile_size`` pixels of ``images``.

        Pixels on the right / bottom that do not fill a whole tile are left out of the grid
        (crop the images with :meth:`crop`), with a warning naming how many; ``whole=True``
        refuses them instead (training needs a grid that covers every pixel: cropped pixels would
        carry vehicles no cell counts).

        Parameters
        ----------
        images : xarray.DataArray
            ``(..., y, x)`` with CRS and transform set (as returned by ``read_stack``).
        tile_size : int
            Pixels per cell side.

        Raises
        ------
        GridError
            If ``tile_size`` is not a positive integer or exceeds the image size; with ``whole``,
            if it does not divide both sides (naming the crop and the tile sizes that would).
        MissingCRSError
            If ``images`` has no CRS.
        """
        if (
            isinstance(tile_size, bool)
            or not isinstance(tile_size, (int, np.integer))
            or tile_size < 1
        ):
            raise GridError(
                f"tile_size={tile_size!r} is invalid: expected a positive integer such as 16"
            )
        height, width = images.sizes["y"], images.sizes["x"]
        rows, cols = height // tile_size, width // tile_size
        if rows == 0 or cols == 0:
            raise GridError(
                f"tile_size={tile_size} is larger than the image ({height} × {width} px): "
                f"choose a tile size of at most {min(height, width)}"
            )
        drop_y, drop_x = height - rows * tile_size, width - cols * tile_size
        if (drop_y or drop_x) and whole:
            fits = [
                t
                for t in range(4, min(height, width) // 2 + 1)
                if height % t == 0 and width % t == 0
            ]
            near = sorted(sorted(fits, key=lambda t: (abs(math.log2(t / tile_size)), t))[:3])
            hint = (
                f"a tile size that divides both sides ({', '.join(map(str, near))})"
                if near
                else "another tile size"
            )
            crop_h, crop_w = rows * tile_size, cols * tile_size
            raise GridError(
                f"the images: {height} × {width} px is not a multiple of tile_size={tile_size} ({drop_y} px left at "
                f"the bottom, {drop_x} px at the right): the forecast grid must cover the whole scene. Crop it to "
                f"{crop_h} × {crop_w} px (images.isel(y=slice(0, {crop_h}), x=slice(0, {crop_w})), or gdal_translate "
                f"-srcwin 0 0 {crop_w} {crop_h}), or choose {hint}"
            )
        if drop_y or drop_x:
            warnings.warn(
                f"image of {height} × {width} px is not a multiple of tile_size={tile_size}: "
                f"cropping {drop_y} px from the bottom and {drop_x} px from the right",
                stacklevel=2,
            )
        transform = images.rio.transform() @ Affine.scale(tile_size)
        return cls(images.rio.crs, transform, (rows, cols), tile_size)

    @classmethod
    def from_dataarray(cls, da: xr.DataArray, tile_size: int | None = None) -> Grid:
        """The grid a grid-level array (target, static, forecast) lies on.

        ``tile_size`` defaults to ``da.attrs["tile_size"]`` or 1.
        """
        if tile_size is None:
            tile_size = int(da.attrs.get("tile_size", 1))
        return cls(da.rio.crs, da.rio.transform(), (da.sizes["y"], da.sizes["x"]), tile_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (CRS as WKT, transform as 6 numbers)."""
        return {
            "crs": self.crs.to_wkt(),
            "transform": list(self.transform[:6]),
            "shape": list(self.shape),
            "tile_size": self.tile_size,
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        GridError
            If a key is missing or a value is malformed.
        """
        try:
            return cls(
                spec["crs"], Affine(*spec["transform"]), tuple(spec["shape"]), spec["tile_size"]
            )
        except (KeyError, TypeError) as exc:
            raise GridError(
                f"grid spec {spec!r} is malformed ({exc}): expected keys crs, transform (6 numbers), "
                "shape (rows, cols) and tile_size"
            ) from exc

    # -- geometry -----------------------------------------------------------------------
    @property
    def image_transform(self) -> Affine:
        """Transform of the image pixels the grid summarises."""
        return self.transform @ Affine.scale(1.0 / self.tile_size)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` in image pixels covered by the grid."""
        return self.shape[0] * self.tile_size, self.shape[1] * self.tile_size

    @property
    def resolution(self) -> tuple[float, float]:
        """Cell size ``(x, y)`` in CRS units, both positive."""
        return self.transform.a, -self.transform.e

    @property
    def bounds(self) -> BoundingBox:
        """``(left, bottom, right, top)`` of the grid in CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.shape[1]
        bottom = top + self.transform.e * self.shape[0]
        return BoundingBox(left, bottom, right, top)

    def xy(self, row: Any, col: Any, offset: str = "center") -> tuple[Any, Any]:
        """World coordinates of cells ``(row, col)`` (scalars or arrays).

        ``offset`` is ``"center"`` or ``"ul"`` (upper-left corner).
        """
        if offset not in ("center", "ul"):
            raise ValueError(f"offset={offset!r} is invalid: expected 'center' or 'ul'")
        shift = 0.5 if offset == "center" else 0.0
        t = self.transform  # north-up: no rotation terms
        x = t.c + t.a * (np.asarray(col, dtype=float) + shift)
        y = t.f + t.e * (np.asarray(row, dtype=float) + shift)
        if np.ndim(x) == 0:
            return float(x), float(y)
        return x, y

    def index(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Cell ``(row, col)`` containing world point(s) ``(x, y)``.

        Indices are not clipped: points outside the grid give indices outside
        ``[0, rows) × [0, cols)``; use :meth:`contains` to test.
        """
        t = self.transform
        col = np.floor((np.asarray(x, dtype=float) - t.c) / t.a).astype(np.int64)
        row = np.floor((np.asarray(y, dtype=float) - t.f) / t.e).astype(np.int64)
        if row.ndim == 0:
            return int(row), int(col)
        return row, col

    def contains(self, row: Any, col: Any) -> Any:
        """Whether cell indices lie inside the grid."""
        row, col = np.asarray(row), np.asarray(col)
        return (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])

    def coords(self) -> dict[str, np.ndarray]:
        """Cell-centre coordinates ``{"y": ..., "x": ...}`` for building DataArrays."""
        rows, cols = np.arange(self.shape[0]), np.arange(self.shape[1])
        x = self.transform.c + self.transform.a * (cols + 0.5)
        y = self.transform.f + self.transform.e * (rows + 0.5)
        return {"y": y, "x": x}

    def cells(self):
        """Cell polygons as a GeoDataFrame with columns ``row``, ``col``, ``geometry``."""
        import geopandas as gpd
        import shapely

        rows, cols = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        x0, y0 = self.xy(rows, cols, offset="ul")
        x1, y1 = self.xy(rows + 1, cols + 1, offset="ul")
        geoms = shapely.box(
            np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)
        )
        return gpd.GeoDataFrame({"row": rows, "col": cols}, geometry=geoms, crs=self.crs)

    def crop(self, images: xr.DataArray) -> xr.DataArray:
        """Crop an image array to the pixels the grid covers (drops the remainder)."""
        height, width = self.image_shape
        return images.isel(y=slice(0, height), x=slice(0, width))

    # -- xarray -------------------------------------------------------------------------
    def attach(self, da: xr.DataArray) -> xr.DataArray:
        """Return ``da`` (with dims ``y``, ``x`` of the grid's shape) with coordinates, CRS and transform set."""
        if (da.sizes.get("y"), da.sizes.get("x")) != self.shape:
            raise GridError(
                f"array of shape (y={da.sizes.get('y')}, x={da.sizes.get('x')}) does not match grid "
                f"shape {self.shape}: build it on the same grid"
            )
        da = da.assign_coords(self.coords())
        da = da.rio.write_crs(self.crs).rio.write_transform(self.transform)
        da.attrs["tile_size"] = self.tile_size
        return da

    def empty(
        self,
        *,
        leading: dict[str, Any] | None = None,
        fill: float = 0.0,
        dtype: Any = "float32",
        name: str | None = None,
    ) -> xr.DataArray:
        """A georeferenced array on the grid with extra leading dims, e.g. ``{"time": times, "band": ["density"]}``."""
        leading = leading or {}
        shape = [len(v) for v in leading.values()] + list(self.shape)
        da = xr.DataArray(
            np.full(shape, fill, dtype=dtype),
            dims=[*leading, "y", "x"],
            coords=dict(leading),
            name=name,
        )
        return self.attach(da)

    def matches(self, other: Grid, *, rtol: float = 1e-9) -> bool:
        """Same CRS, shape and transform (to ``rtol`` of the cell size); tile size is not compared."""
        if self.crs != other.crs or self.shape != other.shape:
            return False
        scale = max(abs(self.transform.a), abs(self.transform.e))
        return all(
            math.isclose(p, q, rel_tol=rtol, abs_tol=rtol * scale)
            for p, q in zip(self.transform[:6], other.transform[:6])
        )

    def __repr__(self) -> str:
        epsg = self.crs.to_epsg()
        crs = f"EPSG:{epsg}" if epsg else self.crs.to_string()[:40]
        t = self.transform
        return (
            f"Grid(crs={crs}, shape={self.shape}, tile_size={self.tile_size}, "
            f"cell=({t.a:g}, {-t.e:g}), origin=({t.c:g}, {t.f:g}))"
        )
