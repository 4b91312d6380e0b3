"""Tests of STAC in: read_stack on a local STAC catalog, ItemCollection or list of items written in
a fixture over local GeoTIFFs (no network), with the same validation as a folder."""

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from trafficrnn import read_stack
from trafficrnn.errors import ConfigError, InputFileError, StackMismatchError

from ..conftest import UTM_TRANSFORM, WGS_CRS, WGS_TRANSFORM, frame_values, write_tif

pystac = pytest.importorskip(
    "pystac", reason="pystac is not installed: pip install 'trafficrnn[stac]'"
)

TIMES = [datetime(2024, 5, 1, 8, 5 * t, tzinfo=timezone.utc) for t in range(4)]


def _items(folder, *, crs_of=lambda t: 32633, asset="image", names=None):
    """One item per frame, assets ``image`` (the frame) and ``thumbnail``; frame files named
    without any time (the items carry the times); written in reverse time order."""
    items = []
    for t in reversed(range(len(TIMES))):
        path = write_tif(
            folder / (names[t] if names else f"scene-{t}.tif"),
            frame_values(t),
            **({"crs": WGS_CRS, "transform": WGS_TRANSFORM} if crs_of(t) == 4326 else {}),
        )
        item = pystac.Item(
            id=f"scene-{t}",
            geometry=None,
            bbox=None,
            datetime=TIMES[t],
            properties={"proj:epsg": crs_of(t)},
        )
        item.add_asset(asset, pystac.Asset(href=str(path), media_type=pystac.MediaType.COG))
        item.add_asset("thumbnail", pystac.Asset(href=str(folder / "thumb.png")))
        items.append(item)
    return items


@pytest.fixture
def catalog(tmp_path):
    """A self-contained catalog saved to disk: catalog.json, one item JSON per frame beside its
    GeoTIFF, asset hrefs relative to the item files."""
    root = tmp_path / "stac"
    root.mkdir()
    cat = pystac.Catalog(id="city", description="four frames")
    for item in _items(root):
        cat.add_item(item)
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root


def test_read_stack__stac_catalog_file_equals_the_folder(catalog, tmp_path):
    da = read_stack(catalog / "catalog.json", asset="image")
    assert da.sizes == {"time": 4, "band": 3, "y": 8, "x": 12}
    # sorted by the items' datetimes (UTC, naive), the frames in that order
    assert list(da.time.values) == list(pd.DatetimeIndex(TIMES).tz_localize(None).values)
    for t in range(4):
        np.testing.assert_array_equal(da.isel(time=t).values, frame_values(t))
    assert da.rio.crs == "EPSG:32633" and da.rio.transform() == UTM_TRANSFORM
    assert da.attrs["cadence"] == "P0DT0H5M0S"
    assert list(da.source.values) == [f"scene-{t}.tif" for t in range(4)]


def test_read_stack__stac_objects_item_collection_and_item_list(tmp_path):
    items = _items(tmp_path)
    by_list = read_stack(items, asset="image")
    collection = pystac.ItemCollection(items)
    np.testing.assert_array_equal(read_stack(collection, asset="image").values, by_list.values)
    path = tmp_path / "items.json"
    path.write_text(json.dumps(collection.to_dict()))
    from_file = read_stack(path, asset="image", chunks={"y": 4})  # lazily, as a folder
    assert from_file.chunks is not None
    np.testing.assert_array_equal(from_file.values, by_list.values)


def test_read_stack__stac_single_asset_needs_no_key(tmp_path):
    items = _items(tmp_path)
    for item in items:
        del item.assets["thumbnail"]
    assert read_stack(items).sizes["time"] == 4
    with pytest.raises(ConfigError, match="time= is given for a STAC source"):
        read_stack(items, time=TIMES)


def test_read_stack__stac_asset_key_missing_or_ambiguous(tmp_path):
    items = _items(tmp_path)
    with pytest.raises(
        InputFileError,
        match=r"item 'scene-3' has no asset 'visual' \(it has \['image', 'thumbnail'\]\)",
    ):
        read_stack(items, asset="visual")
    with pytest.raises(
        InputFileError, match="has the assets \\['image', 'thumbnail'\\]; pass asset="
    ):
        read_stack(items)


def test_read_stack__stac_items_of_mixed_crs(tmp_path):
    items = _items(tmp_path, crs_of=lambda t: 4326 if t == 2 else 32633)
    with pytest.raises(
        StackMismatchError,
        match=r"items of mixed CRS, 'scene-3' in EPSG:32633 and 'scene-2' in EPSG:4326",
    ):
        read_stack(items, asset="image")


def test_read_stack__stac_bad_sources(tmp_path):
    items = _items(tmp_path)
    items[1].datetime = None
    items[1].properties["start_datetime"] = "2024-05-01T08:00:00Z"
    items[1].properties["end_datetime"] = "2024-05-01T09:00:00Z"
    with pytest.raises(InputFileError, match="item 'scene-2' has no datetime"):
        read_stack(items, asset="image")
    (tmp_path / "x").mkdir()
    remote = _items(tmp_path / "x")
    remote[0].assets["image"].href = "https://example.com/scene.tif"
    with pytest.raises(InputFileError, match="is remote \\(https://example.com/scene.tif\\)"):
        read_stack(remote, asset="image")
    (tmp_path / "geo.json").write_text(json.dumps({"type": "Polygon", "coordinates": []}))
    with pytest.raises(InputFileError, match="JSON of type 'Polygon', not STAC"):
        read_stack(tmp_path / "geo.json")
    empty = pystac.Catalog(id="empty", description="nothing")
    with pytest.raises(InputFileError, match="holds no STAC item"):
        read_stack(empty)
    with pytest.raises(
        ConfigError, match="asset='image' names a STAC asset, but the source is not STAC"
    ):
        read_stack(tmp_path / "x", asset="image")
