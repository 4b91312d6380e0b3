"""Read a stack of GeoTIFFs (one per time step, or one file whose bands are time steps) into images ``(time, band, y, x)``."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.errors import RasterioError

from trafficrnn.errors import (
    ConfigError,
    GridError,
    InputFileError,
    MissingCRSError,
    StackMismatchError,
    TimestampError,
)
from trafficrnn.grid import check_north_up
from trafficrnn.io._chunks import check_chunk_count
from trafficrnn.io._warp import (
    MIN_COVERAGE,
    bounds_text,
    footprint_share,
    reproject_like,
    same_grid,
    same_pixels,
)
from trafficrnn.io.timestamps import (
    as_naive_times,
    check_cadence,
    duplicates_message,
    parse_iso,
    parse_tiff_datetime,
    time_from_name,
    time_from_pattern,
)

RASTER_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt")

log = logging.getLogger(__name__)


@dataclass
class _Frame:
    """Metadata of one raster file, read without loading pixels."""

    path: Path
    crs: Any
    transform: Affine
    shape: tuple[int, int]
    count: int
    dtype: str
    descriptions: list[str | None]
    colorinterp: list[str]
    tags: dict[str, str]
    band_tags: list[dict[str, str]] = field(default_factory=list)
    block_shape: tuple[int, int] = (256, 256)


def _resolve(source) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if any(ch in text for ch in "*?["):
            paths = sorted(Path(p) for p in glob.glob(text))
            if not paths:
                raise InputFileError(
                    f"no file matches the pattern {text!r}; check the path and the pattern"
                )
            return paths
        path = Path(text)
        if path.is_dir():
            paths = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith(".")
            )
            if not paths:
                raise InputFileError(
                    f"no GeoTIFF (*.tif, *.tiff) in folder {path}; point read_stack at the folder that holds the frames"
                )
            return paths
        if not path.exists():
            raise InputFileError(
                f"{path} does not exist; expected a GeoTIFF, a folder of GeoTIFFs, a glob or a list of paths"
            )
        return [path]
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        paths = [Path(p) for p in source]
        if not paths:
            raise InputFileError("read_stack got an empty list of paths; pass at least one GeoTIFF")
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise InputFileError(
                f"{len(missing)} file(s) of the stack do not exist: {', '.join(missing[:5])}; fix the paths"
            )
        return paths
    raise InputFileError(f"source {source!r} is not a path, glob or list of paths")


def _open_meta(path: Path) -> _Frame:
    try:
        with rasterio.open(path) as src:
            if src.count < 1:
                raise InputFileError(
                    f"{path} holds no raster band; expected a GeoTIFF with at least one band"
                )
            if src.crs is None:
                raise MissingCRSError(
                    f"{path} has no CRS: expected a georeferenced GeoTIFF; assign one, e.g. "
                    f"gdal_edit.py -a_srs EPSG:32633 {path.name}"
                )
            if src.transform == Affine.identity() and not src.gcps[0]:
                raise MissingCRSError(
                    f"{path} has no geotransform (identity transform); georeference it first (gdal_edit.py -a_ullr ...)"
                )
            try:
                check_north_up(src.transform, f"{path}: transform")
            except GridError:
                raise StackMismatchError(
                    f"{path}: transform {tuple(src.transform[:6])} is not north-up (expected b == d == 0, a > 0, "
                    "e < 0); rotated or flipped rasters are refused rather than silently misplaced (align='reproject' "
                    f"does not unrotate them): warp them north-up first, e.g. gdalwarp {path.name} {path.stem}_northup.tif"
                ) from None
            return _Frame(
                path=path,
                crs=src.crs,
                transform=src.transform,
                shape=(src.height, src.width),
                count=src.count,
                dtype=src.dtypes[0],
                descriptions=list(src.descriptions),
                colorinterp=[c.name for c in src.colorinterp],
                tags=src.tags(),
                band_tags=[src.tags(i) for i in range(1, src.count + 1)],
                block_shape=tuple(src.block_shapes[0]),
            )
    except RasterioError as exc:
        raise InputFileError(
            f"{path} is not a readable raster ({exc}); expected a GeoTIFF"
        ) from None
    except (OSError, ValueError, MemoryError) as exc:
        if isinstance(exc, InputFileError | StackMismatchError):
            raise
        raise InputFileError(
            f"{path} is not a readable raster ({type(exc).__name__}: {exc}); expected a GeoTIFF"
        ) from None


def _band_names(frame: _Frame) -> list[str]:
    names = []
    for i, (desc, ci, tags) in enumerate(
        zip(frame.descriptions, frame.colorinterp, frame.band_tags), start=1
    ):
        if tags.get("band"):
            names.append(tags["band"])
        elif desc and not _looks_like_time(desc):
            names.append(desc)
        elif ci in ("red", "green", "blue", "alpha", "nir"):
            names.append(ci)
        else:
            names.append(f"band{i}")
    if len(set(names)) != len(names):
        names = [f"band{i}" for i in range(1, frame.count + 1)]
    return names


def _looks_like_time(text: str) -> bool:
    try:
        parse_iso(text.split()[0])
        return True
    except (TimestampError, IndexError):
        return False


#: the hint of a stack whose frames lie on different grids, for Python and CLI users alike
REPROJECT_HINT = (
    "read_stack(..., align='reproject') (CLI: --align reproject) warps every frame onto the "
    "first frame's grid"
)


def _compare(frames: list[_Frame], align: str) -> None:
    ref = frames[0]
    checks = [
        (
            "band count",
            lambda f: f.count,
            "write every frame with the same bands, e.g. gdal_translate -b 1 -b 2 -b 3 IN.tif OUT.tif",
        )
    ]
    if align == "strict":
        checks += [
            ("CRS", lambda f: f.crs.to_string(), f"reproject: {REPROJECT_HINT}"),
            (
                "transform",
                lambda f: tuple(round(v, 9) for v in f.transform[:6]),
                f"warp onto one grid: {REPROJECT_HINT}",
            ),
            ("shape", lambda f: f.shape, f"warp onto one grid: {REPROJECT_HINT}"),
            (
                "dtype",
                lambda f: f.dtype,
                "convert the files to one data type (gdal_translate -ot Float32 IN.tif OUT.tif)",
            ),
        ]
    for what, key, fix in checks:
        bad = [f for f in frames[1:] if key(f) != key(ref)]
        if bad:
            shown = ", ".join(f"{f.path.name} is {key(f)}" for f in bad[:3])
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise StackMismatchError(
                f"stack files disagree on {what}: {ref.path.name} is {key(ref)}, {shown}{more}; {fix}"
            )
    if align == "reproject":
        for frame in frames[1:]:
            _check_overlap(frame, ref)


def _check_overlap(frame: _Frame, ref: _Frame) -> None:
    """Refuse a frame that would be mostly NaN once warped onto the first frame's grid."""
    if same_pixels(frame.crs, frame.transform, frame.shape, ref.crs, ref.transform, ref.shape):
        return
    share = footprint_share(
        frame.crs, frame.transform, frame.shape, ref.crs, ref.transform, ref.shape
    )
    if share >= MIN_COVERAGE:
        return
    found = "does not overlap" if share == 0 else f"covers only {share:.0%} of"
    raise StackMismatchError(
        f"{frame.path.name} {found} the first frame {ref.path.name} once warped onto its grid "
        f"({frame.path.name}: {bounds_text(frame.crs, frame.transform, frame.shape)}; {ref.path.name}: "
        f"{bounds_text(ref.crs, ref.transform, ref.shape)}): align='reproject' expects every frame to cover at "
        f"least {MIN_COVERAGE:.0%} of the first one (the rest becomes NaN); drop that file, or read the frames "
        "of each area as a stack of its own"
    )


def _frame_times(frames: list[_Frame], time) -> list[datetime]:
    if time is not None and not isinstance(time, str):
        times = list(as_naive_times(time, "time="))
        if len(times) != len(frames):
            raise TimestampError(
                f"time= has {len(times)} timestamps but the stack has {len(frames)} files; give one per file"
            )
        return times
    out, missing = [], []
    for f in frames:
        if isinstance(time, str):
            t = time_from_pattern(f.path, time)
        else:
            t = parse_tiff_datetime(f.tags.get("TIFFTAG_DATETIME")) or time_from_name(f.path)
        if t is None:
            missing.append(f.path.name)
        out.append(t)
    if missing:
        how = (
            f"file names do not match the pattern {time!r}"
            if isinstance(time, str)
            else "no TIFFTAG_DATETIME tag and no date-time in the file name"
        )
        raise TimestampError(
            f"cannot find the time of {len(missing)} frame(s) ({', '.join(missing[:5])}): {how}; pass "
            "time='name_%Y%m%d_%H%M' (a pattern of the file names; CLI: --time-pattern 'name_%Y%m%d_%H%M') or "
            "time=[...] (one per file), or tag each file: gdal_edit.py -mo "
            f"TIFFTAG_DATETIME='2024:05:01 08:00:00' {missing[0]}"
        )
    return out


def _single_file_layout(frame: _Frame, time) -> tuple[list[datetime], list[str], int]:
    """Times, band names and bands-per-time of a single file."""
    count = frame.count
    band_times = [bt.get("time") or bt.get("valid_time") for bt in frame.band_tags]
    if time is not None and not isinstance(time, str):
        times = list(as_naive_times(time, "time="))
        if count % len(times):
            raise TimestampError(
                f"time= has {len(times)} timestamps but {frame.path.name} has {count} bands; "
                "give one timestamp per band (bands are time steps) or one for the whole file"
            )
        per = count // len(times)
        names = (
            _band_names(frame)[:per]
            if per > 1
            else [_band_names(frame)[0] if len(times) == 1 else "band1"]
        )
        return times, names, per
    if all(band_times):
        parsed = [parse_iso(t) for t in band_times]
    elif all(d and _looks_like_time(d) for d in frame.descriptions):
        parsed = [parse_iso(d.split()[0]) for d in frame.descriptions]
    else:
        t = (
            time_from_pattern(frame.path, time)
            if isinstance(time, str)
            else (
                parse_tiff_datetime(frame.tags.get("TIFFTAG_DATETIME"))
                or time_from_name(frame.path)
            )
        )
        if t is None:
            raise TimestampError(
                f"cannot find the time of {frame.path.name}: no time per band (tag or description), no "
                "TIFFTAG_DATETIME and no date-time in the name; pass time=[...] (one per band, or one for the file), "
                "or a pattern of a date in the name, time='name_%Y%m%d_%H%M' (CLI: --time-pattern "
                "'name_%Y%m%d_%H%M'), or tag the file: gdal_edit.py -mo "
                f"TIFFTAG_DATETIME='2024:05:01 08:00:00' {frame.path.name}"
            )
        return [t], _band_names(frame), count
    unique = list(dict.fromkeys(parsed))
    per = count // len(unique)
    if per * len(unique) != count or any(
        parsed[i * per : (i + 1) * per] != [unique[i]] * per for i in range(len(unique))
    ):
        raise TimestampError(
            f"{frame.path.name}: band times are not grouped as time × band blocks; rewrite the file with to_geotiff"
        )
    names = (
        [bt.get("band") or f"band{i + 1}" for i, bt in enumerate(frame.band_tags[:per])]
        if per > 1
        else [frame.band_tags[0].get("band") or "band1"]
    )
    return unique, names, per


class _GuardedArray:
    """A lazily indexed raster whose read errors become :class:`InputFileError` (for dask: raised at compute)."""

    def __init__(self, array: xr.DataArray, path: Path) -> None:
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = (
            tuple(array.shape),
            np.dtype(array.dtype),
            len(array.shape),
        )

    def __getitem__(self, key):
        try:
            return np.asarray(self.array[key].values)
        except (RasterioError, OSError, ValueError) as exc:
            raise InputFileError(
                f"{self.path} could not be read ({exc}); the file may be truncated or corrupt"
            ) from None


def _load(path: Path, chunks) -> xr.DataArray:
    try:
        if not chunks:
            return rioxarray.open_rasterio(path, masked=True, cache=False).load()
        import dask.array as dsa

        # rioxarray's own dask graph would raise rasterio's errors at compute time: rebuild it on a
        # guarded reader so that a corrupt block surfaces as InputFileError naming the file
        chunked = rioxarray.open_rasterio(path, masked=True, chunks=chunks, cache=False)
        lazy = rioxarray.open_rasterio(path, masked=True, cache=False)
        data = dsa.from_array(
            _GuardedArray(lazy, path),
            chunks=chunked.data.chunks,
            lock=True,
            name=f"read-{path.name}-{_dask_token(path)}",
            meta=np.array((), dtype=chunked.dtype),
        )
        return chunked.copy(data=data)
    except RasterioError as exc:
        raise InputFileError(
            f"{path} could not be read ({exc}); the file may be truncated or corrupt"
        ) from None


def _dask_token(path: Path) -> str:
    """A dask key part that changes when the file does (path, size, modification time)."""
    from dask.base import tokenize

    stat = path.stat()
    return tokenize(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def read_stack(
    source,
    *,
    time=None,
    bands=None,
    chunks=None,
    align: str = "strict",
    allow_gaps: bool = False,
    asset: str | None = None,
) -> xr.DataArray:
    """Read a GeoTIFF stack into images ``DataArray(time, band, y, x)`` float32 with CRS and transform.

    Parameters
    ----------
    source : str, path, glob, list of paths, or STAC
        A folder of GeoTIFFs, a glob, a list of paths (one GeoTIFF per time step, single- or
        multi-band), or one multi-band GeoTIFF whose bands are time steps. Or STAC, one item per
        time step (see :mod:`trafficrnn.io.stac`): a ``pystac`` ItemCollection, Catalog or
        Collection, a list of ``pystac.Item``, or the path of a STAC JSON file; the items'
        datetimes are the times and their ``asset`` the frames (local files).
    time : list of timestamps or str, optional
        Timestamps of the frames (one per file, or per band of a single file), or a
        ``strptime`` pattern found in the file names (``"frame_%Y%m%d_%H%M"``). Otherwise
        times come from ``TIFFTAG_DATETIME``, then from an ISO-like stamp in the file name.
    bands : list of int (1-based) or str, optional
        Bands to keep, by position or by name.
    chunks : dict, int, "auto" or True, optional
        Read lazily with dask (nothing is loaded until needed); at most ``MAX_CHUNKS_PER_FILE``
        (one million) chunks per file.
    align : {"strict", "reproject"}
        ``"strict"`` refuses files that disagree on CRS, transform, shape or dtype;
        ``"reproject"`` warps every frame onto the first frame's grid (bilinear), and refuses a
        frame whose footprint covers less than ``MIN_COVERAGE`` (half) of the first frame: it
        would be mostly NaN once warped (NaN the file holds itself does not count).
    allow_gaps : bool
        Keep going when the cadence is irregular; gaps are listed in ``attrs["gaps"]``.
    asset : str, optional
        STAC sources: the key of the asset that holds each frame (optional when every item has
        exactly one asset).

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` float32, nodata → NaN, sorted by time (naive times: UTC, times
        with an offset converted to UTC, or wall-clock times of ``attrs["timezone"]`` where the
        files record that zone); coords ``source``
        (file per frame); attrs ``cadence`` (ISO 8601 duration), ``gaps``, and where the files carry
        them ``units``, ``timezone`` and ``split`` (a dataset's published split, written by
        ``trafficrnn datasets export``; kept only when every file carries the same one, and kept
        when the stack holds only some of its parts: ``fit`` and ``evaluate`` use the parts present,
        see :mod:`trafficrnn.splits`); ``rio.crs`` and ``rio.transform()`` set.

    Raises
    ------
    InputFileError
        Missing, unreadable or non-raster files. ``MissingCRSError`` for a file without CRS.
    StackMismatchError
        Files that disagree on CRS, transform, shape, band count or dtype; rotated transforms;
        with ``align="reproject"``, frames that do not overlap the first one or cover less than half of it.
    TimestampError
        Times that cannot be found or parsed, or duplicates. ``CadenceError`` when irregular.
    ConfigError
        ``chunks`` that would split one file into more than ``MAX_CHUNKS_PER_FILE`` dask chunks.
    """
    if align not in ("strict", "reproject"):
        raise ValueError(f"align={align!r} is invalid: expected 'strict' or 'reproject'")
    from trafficrnn.io.stac import is_stac, stac_frames

    if is_stac(source):
        if time is not None:
            raise ConfigError(
                "time= is given for a STAC source, whose items carry the times: drop time="
            )
        source, time = stac_frames(source, asset, mixed_crs=align == "reproject")
    elif asset is not None:
        raise ConfigError(
            f"asset={asset!r} names a STAC asset, but the source is not STAC: drop asset= or "
            "pass a STAC ItemCollection, catalog or list of items"
        )
    paths = _resolve(source)
    frames = [_open_meta(p) for p in paths]
    _compare(frames, align)
    if chunks:
        for frame in frames:
            check_chunk_count(frame, chunks)
    if len(frames) == 1:
        times, names, per = _single_file_layout(frames[0], time)
        raw = _load(paths[0], chunks)
        ref = raw.isel(band=0, drop=True)
        blocks = [raw.data[i * per : (i + 1) * per] for i in range(len(times))]
        sources = [paths[0].name] * len(times)
    else:
        times = _frame_times(frames, time)
        names = _band_names(frames[0])
        loaded = [_load(f.path, chunks) for f in frames]
        ref = loaded[0].isel(band=0, drop=True)
        if align == "reproject":
            loaded = [
                d if same_grid(d, loaded[0]) else reproject_like(d, loaded[0]) for d in loaded
            ]
        blocks = [d.data for d in loaded]
        sources = [f.path.name for f in frames]
    if chunks:
        import dask.array as dsa

        array = dsa.stack(blocks)
    else:
        array = np.stack(blocks)
    data = xr.DataArray(array, dims=("time", "band", "y", "x"))
    data = data.assign_coords(
        time=as_naive_times(times),
        band=names,
        y=ref.y.values,
        x=ref.x.values,
        source=("time", sources),
    )
    data = data.astype("float32", copy=False)
    data = data.rio.write_crs(ref.rio.crs).rio.write_transform(ref.rio.transform())
    data = _select_bands(data, bands, paths[0])
    msg = duplicates_message(pd.DatetimeIndex(data.time.values), sources)
    if msg:
        raise TimestampError(msg)
    data = data.sortby("time")
    cadence, gaps = check_cadence(
        pd.DatetimeIndex(data.time.values), allow_gaps=allow_gaps, names=list(data.source.values)
    )
    units = frames[0].tags.get("units")
    data.attrs = {"cadence": cadence.isoformat() if cadence is not None else "", "gaps": gaps}
    if units:
        data.attrs["units"] = units
    zone = frames[0].tags.get(
        "timezone"
    )  # written by write_stack from attrs (naive times' IANA zone)
    if zone:
        data.attrs["timezone"] = zone
    split = _common_split(frames)
    if split:
        data.attrs["split"] = split
    data.name = "images"
    return data


def _common_split(frames: list[_Frame]) -> str | None:
    """The dataset's published split (tag ``split``, see :mod:`trafficrnn.splits`) that every file carries
    alike, in its canonical form; ``None`` where no file has one, or where they disagree (logged)."""
    from trafficrnn.splits import parse_split

    values = {f.tags.get("split") for f in frames}
    if values == {None}:
        return None
    if len(values) > 1:
        log.warning(
            "the files of the stack disagree on the published split (tag 'split': %s): it is ignored, "
            "fit and evaluate split by val= / test= (default fractions)",
            ", ".join(sorted(repr(v) for v in values)),
        )
        return None
    value = values.pop()
    found = parse_split(value)
    if found is None:
        log.warning(
            "tag 'split' = %r of %s is not a published split ('val TIME; test TIME'): ignored",
            value,
            frames[0].path.name,
        )
        return None
    return found.text


def _select_bands(data: xr.DataArray, bands, path: Path) -> xr.DataArray:
    if bands is None:
        return data
    names = list(data.band.values)
    keys = [bands] if isinstance(bands, (str, int)) else list(bands)
    picked = []
    for key in keys:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 1 <= key <= len(names):
                raise StackMismatchError(
                    f"{path.name}: band {key} does not exist; expected 1..{len(names)} (1-based)"
                )
            picked.append(names[key - 1])
        elif key in names:
            picked.append(key)
        else:
            raise StackMismatchError(
                f"{path.name}: no band named {key!r}; available bands: {', '.join(map(str, names))}"
            )
    return data.sel(band=picked)
