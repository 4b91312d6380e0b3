"""STAC in: the frames of a stack from STAC items (one item per time step), for :func:`read_stack`.

A source is a ``pystac.ItemCollection``, ``Catalog`` or ``Collection`` (its items, recursively),
a list of ``pystac.Item``, or the path of a STAC JSON file (an ItemCollection, a Catalog, a
Collection or one Item). Each item gives its ``datetime`` as the frame's time (UTC) and the asset
``asset`` as the frame's file; the files are then read and checked as a folder of GeoTIFFs is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from trafficrnn.errors import InputFileError, MissingDependencyError, StackMismatchError


def _pystac():
    try:
        import pystac
    except ImportError:
        raise MissingDependencyError(
            "reading STAC needs the pystac package: pip install 'trafficrnn[stac]' "
            "(or pip install pystac)"
        ) from None
    return pystac


def is_stac(source: Any) -> bool:
    """Whether ``source`` is a STAC object, a list of items or the path of a STAC JSON file."""
    module = type(source).__module__ or ""
    if module.startswith("pystac"):
        return True
    if isinstance(source, (list, tuple)) and source:
        return (type(source[0]).__module__ or "").startswith("pystac")
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() == ".json"
    return False


def _items(source: Any) -> tuple[list, str]:
    """The items of ``source`` and a name for it in messages."""
    pystac = _pystac()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputFileError(f"{path} does not exist; expected a STAC JSON file")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFileError(f"{path} is not readable JSON ({exc})") from None
        kind = doc.get("type") if isinstance(doc, dict) else None
        try:
            if kind == "FeatureCollection":
                source = pystac.ItemCollection.from_file(str(path))
            elif kind == "Feature":
                source = [pystac.Item.from_file(str(path))]
            elif kind in ("Catalog", "Collection"):
                source = pystac.read_file(str(path))
            else:
                raise InputFileError(
                    f"{path} is JSON of type {kind!r}, not STAC: expected an ItemCollection "
                    "(FeatureCollection), a Catalog, a Collection or an Item"
                )
        except (pystac.STACError, KeyError, ValueError, TypeError) as exc:
            raise InputFileError(f"{path} is not a readable STAC document ({exc})") from None
        name = str(path)
    else:
        name = f"the STAC {type(source).__name__}"
    if isinstance(source, (pystac.Catalog, pystac.Collection)):
        items = list(source.get_items(recursive=True))
    elif isinstance(source, pystac.ItemCollection):
        items = list(source.items)
    elif isinstance(source, pystac.Item):
        items = [source]
    else:
        items = list(source)
        bad = [type(i).__name__ for i in items if not isinstance(i, pystac.Item)]
        if bad:
            raise InputFileError(f"{name}: expected pystac.Item entries, found {bad[0]}")
    if not items:
        raise InputFileError(f"{name} holds no STAC item; expected one item per time step")
    return items, name


def _crs_of(item, asset) -> str | None:
    """The item's CRS from the projection extension (``proj:code`` or ``proj:epsg``), asset first."""
    for props in (asset.extra_fields, item.properties):
        if props.get("proj:code"):
            return str(props["proj:code"])
        if props.get("proj:epsg") is not None:
            return f"EPSG:{props['proj:epsg']}"
    return None


def stac_frames(
    source: Any, asset: str | None = None, *, mixed_crs: bool = False
) -> tuple[list[Path], list[pd.Timestamp]]:
    """The frame files and UTC times of ``source``'s items, in the items' order.

    Parameters
    ----------
    source : pystac.ItemCollection, Catalog, Collection, list of pystac.Item, or path
        See the module docstring.
    asset : str, optional
        Key of the asset that holds each frame; optional when every item has exactly one asset.
    mixed_crs : bool
        Accept items of different CRSs (the reader warps them, ``align="reproject"``).

    Raises
    ------
    InputFileError
        No items; an item without ``datetime``, or without the asset (the message lists the keys
        it has); a remote asset; several assets and no ``asset``.
    StackMismatchError
        Items whose projection extension records different CRSs.
    MissingDependencyError
        pystac is not installed.
    """
    items, name = _items(source)
    paths, times, crs = [], [], {}
    for item in items:
        if asset is None:
            if len(item.assets) != 1:
                raise InputFileError(
                    f"{name}: item {item.id!r} has the assets {sorted(item.assets)}; pass "
                    "asset=<key> to say which holds the frame"
                )
            key = next(iter(item.assets))
        else:
            key = asset
        if key not in item.assets:
            raise InputFileError(
                f"{name}: item {item.id!r} has no asset {key!r} (it has {sorted(item.assets)}); "
                "pass the key of the asset that holds the frame"
            )
        if item.datetime is None:
            raise InputFileError(
                f"{name}: item {item.id!r} has no datetime (only a start/end range); a frame "
                "needs one time: set the item's datetime"
            )
        entry = item.assets[key]
        href = entry.get_absolute_href() or entry.href
        scheme = urlparse(href).scheme
        if scheme and scheme != "file" and len(scheme) > 1:  # one letter: a Windows drive
            raise InputFileError(
                f"{name}: item {item.id!r} asset {key!r} is remote ({href}); download the assets "
                "and point the items at the local files"
            )
        paths.append(Path(urlparse(href).path if scheme == "file" else href))
        times.append(pd.Timestamp(item.datetime))
        found = _crs_of(item, entry)
        if found is not None:
            crs.setdefault(found, item.id)
    if len(crs) > 1 and not mixed_crs:
        (first, a), (second, b) = list(crs.items())[:2]
        raise StackMismatchError(
            f"{name}: items of mixed CRS, {a!r} in {first} and {b!r} in {second}; a stack needs "
            "one CRS: reproject the assets to one CRS first (or read_stack(..., "
            "align='reproject'))"
        )
    return paths, times
