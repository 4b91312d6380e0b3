"""Atomic output: write to a temporary file beside the target, rename on success, never leave a partial file.

``check_output`` / ``check_outputs`` validate output paths before any work starts; ``atomic_output``
is the context manager every writer in trafficrnn uses. Imports only the standard library and
``trafficrnn.errors``, so it is cheap to load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from trafficrnn.errors import ExportError, OutputExistsError

__all__ = ["atomic_output", "check_output", "check_outputs", "check_sidecar", "sidecar_path"]

#: outputs whose writer also writes its QGIS style ``<name>.qml`` beside it (``to_geotiff``,
#: ``forecast_large``)
STYLED_SUFFIXES = (".tif", ".tiff")


def check_output(
    path: str | os.PathLike, *, overwrite: bool, suffixes: tuple[str, ...] = ()
) -> Path:
    """Validate an output path before any work is done.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    ExportError
        If the suffix is not one of ``suffixes`` or the parent folder does not exist.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ExportError(
            f"{path}: extension {path.suffix or '(none)'!r} is not supported here; "
            f"expected one of {', '.join(suffixes)}"
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if not path.parent.exists():
        raise ExportError(f"{path}: folder {path.parent} does not exist; create it first")
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """The QGIS style QGIS loads by default with ``path``: the same name with ``.qml``."""
    return Path(path).with_suffix(".qml")


def check_sidecar(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """The QGIS style sidecar of ``path`` (``forecast.tif`` -> ``forecast.qml``), after checking
    that it may be written.

    Raises
    ------
    OutputExistsError
        If the ``.qml`` exists and ``overwrite`` is false.
    """
    qml = sidecar_path(path)
    if qml.exists() and not overwrite:
        raise OutputExistsError(
            f"{qml} (the QGIS style of {Path(path).name}) already exists; pass overwrite=True "
            "(CLI: --overwrite) to replace it, or style=False to keep it"
        )
    return qml


def check_outputs(
    paths: str | os.PathLike | Iterable[str | os.PathLike | None],
    *,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = (),
) -> list[Path]:
    """Check, before a long run, that every output can be written: the same checks as the writers
    (``to_geotiff``, ``to_netcdf``, ``to_geopackage``, ``TrafficForecaster.save``) make when they
    start, and the CLI makes before it reads anything.

    Call it first, so that a second run refuses at once instead of after the training::

        tr.check_outputs(["forecast.tif", "my-model"])   # then fit, predict, write, save

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Output files or folders (a saved model is a folder); ``None`` entries are skipped.
    overwrite : bool, default False
        Accept existing outputs (pass the same ``overwrite=True`` to the writers then).
    suffixes : tuple of str, optional
        Extensions accepted, e.g. ``(".tif", ".nc", ".gpkg")``; empty: any.

    Returns
    -------
    list of pathlib.Path
        The paths checked.

    Raises
    ------
    OutputExistsError
        If a path exists and ``overwrite`` is false; so too the QGIS style ``<name>.qml`` that
        ``to_geotiff`` (and ``forecast_large``) writes beside a ``.tif``.
    ExportError
        If a suffix is not accepted, a parent folder does not exist or cannot be written to, or two
        outputs are the same path.
    """
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    checked = [
        check_output(p, overwrite=overwrite, suffixes=suffixes) for p in given if p is not None
    ]
    seen: dict[Path, Path] = {}
    for path in checked:
        key = Path(os.path.abspath(path))
        if path.suffix.lower() in STYLED_SUFFIXES:
            check_sidecar(path, overwrite=overwrite)
        if key in seen:
            raise ExportError(
                f"{path} is given twice as an output ({seen[key]} and {path}): give each output "
                "its own path"
            )
        seen[key] = path
        if not os.access(key.parent, os.W_OK):
            raise ExportError(
                f"{path}: folder {key.parent} is not writable; choose another folder or fix its "
                "permissions"
            )
    return checked


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, overwrite: bool = False, directory: bool = False
) -> Iterator[Path]:
    """Yield a temporary path in the target folder; rename it to ``path`` when the block succeeds.

    On any exception (or a kill before the rename) the target is untouched: an existing file
    stays as it was and no partial output appears under the final name.

    Parameters
    ----------
    path : path-like
        Final output path.
    overwrite : bool
        Replace an existing ``path``; otherwise refuse.
    directory : bool
        Yield a temporary directory instead of a file path.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = check_output(path, overwrite=overwrite)
    prefix = f".{path.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.unlink()  # writers (GDAL, netCDF) want to create the file themselves
    try:
        yield tmp
        if not tmp.exists():
            raise ExportError(f"{path}: the writer produced no output")
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(
                f"{path} appeared while writing; pass overwrite=True to replace it"
            )
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
