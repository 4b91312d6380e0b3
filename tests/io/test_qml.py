"""Tests of the QGIS styles: class breaks, the QML text (raster and vector), the COG's sidecar
under the overwrite rule and atomic writes, the GeoPackage's layer_styles table."""

import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import xarray as xr
from affine import Affine
from shapely.geometry import LineString

from trafficrnn import Grid, check_outputs, to_geopackage, to_geotiff
from trafficrnn.errors import ConfigError, OutputExistsError
from trafficrnn.io import export
from trafficrnn.io.qml import RAMP, class_breaks, colours, raster_qml, vector_qml

from .test_export import UTM, forecast


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text.split("\n", 1)[1])  # after the DOCTYPE line
    assert root.tag == "qgis" and root.get("version")
    return root


# --- class breaks and colours ---------------------------------------------------------------


def test_class_breaks__zero_to_rounded_98th_percentile():
    values = np.linspace(0, 10, 1001)  # 98th percentile 9.8
    np.testing.assert_array_equal(class_breaks(values), [0, 2, 4, 6, 8, 10])
    np.testing.assert_allclose(class_breaks(values * 0.0977), [0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_class_breaks__ignores_nan_and_outliers():
    values = np.r_[np.linspace(0, 1, 1000), 1000.0, np.nan]
    edges = class_breaks(values)
    assert edges[0] == 0 and 0.98 <= edges[-1] <= 1.0


def test_class_breaks__negative_values_start_at_2nd_percentile():
    values = np.linspace(-5, 5, 1001)
    edges = class_breaks(values)
    assert edges[0] == pytest.approx(np.percentile(values, 2)) and edges[-1] >= 4.8


@pytest.mark.parametrize(
    "values, top",
    [(np.zeros(10), 1.0), (np.full(10, np.nan), 1.0), (np.r_[np.zeros(99), 3.0], 3.0)],
)
def test_class_breaks__degenerate_fields_get_a_usable_scale(values, top):
    edges = class_breaks(values)
    assert edges[0] == 0 and edges[-1] == pytest.approx(top) and np.all(np.diff(edges) > 0)


def test_class_breaks__too_few_classes():
    with pytest.raises(
        ConfigError, match="classes=1 is invalid: expected an integer of at least 2"
    ):
        class_breaks([0, 1], classes=1)


def test_colours__sample_the_ramp_end_to_end():
    assert colours(5) == list(RAMP)
    seven = colours(7)
    assert len(seven) == 7 and seven[0] == RAMP[0] and seven[-1] == RAMP[-1]


# --- QML text ---------------------------------------------------------------------------------


def test_raster_qml__pseudocolor_band_1_in_the_classes():
    edges = np.array([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    root = parse(raster_qml(edges))
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0.0", "1.0")
    assert renderer.findtext("minMaxOrigin/limits") == "None"  # QGIS keeps our min/max
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "DISCRETE" and shader.get("clip") == "0"
    items = shader.findall("item")
    assert [float(i.get("value")) for i in items] == [0.2, 0.4, 0.6, 0.8, np.inf]
    assert [i.get("color") for i in items] == [
        "#440154",
        "#3b528b",
        "#21908d",
        "#5dc963",
        "#fde725",
    ]
    assert [i.get("label") for i in items][::4] == ["0 - 0.2", "> 0.8"]
    assert shader.find("colorramp").get("type") == "gradient"


def test_vector_qml__graduated_classes_cover_every_feature():
    edges = np.array([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    root = parse(vector_qml(edges, "lead_5min", low=-0.5, high=7.0))
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "lead_5min"
    ranges = renderer.findall("ranges/range")
    bounds = [(float(r.get("lower")), float(r.get("upper"))) for r in ranges]
    assert bounds[0] == (-0.5, 0.2) and bounds[-1] == (0.8, 7.0) and bounds[2] == (0.4, 0.6)
    assert ranges[0].get("label") == "<= 0.2"
    symbols = renderer.findall("symbols/symbol")
    assert [s.get("type") for s in symbols] == ["fill"] * 5
    fills = [s.find("layer/prop[@k='color']").get("v") for s in symbols]
    assert fills == [f"{r},{g},{b},255" for r, g, b in RAMP]
    assert root.find("temporal") is None


def test_vector_qml__lines_temporal_field_and_escaped_names():
    text = vector_qml(
        [0, 1, 2], 'a "b" & <c>', geometry="line", time_field="valid_time", step_minutes=5
    )
    root = parse(text)
    assert root.find("renderer-v2").get("attr") == 'a "b" & <c>'
    assert {s.get("type") for s in root.iter("symbol")} == {"line"}
    temporal = root.find("temporal")
    assert (temporal.get("enabled"), temporal.get("mode"), temporal.get("startField")) == (
        "1",
        "1",
        "valid_time",
    )
    assert temporal.get("fixedDuration") == "5"


def test_vector_qml__unknown_geometry():
    with pytest.raises(
        ConfigError, match="geometry='point' is invalid: expected 'polygon' or 'line'"
    ):
        vector_qml([0, 1, 2], "a", geometry="point")


# --- the COG's sidecar ------------------------------------------------------------------------


def test_to_geotiff__writes_the_style_beside_it(tmp_path):
    da = forecast()
    to_geotiff(da, tmp_path / "forecast.tif")
    root = parse((tmp_path / "forecast.qml").read_text(encoding="utf-8"))
    renderer = root.find("pipe/rasterrenderer")
    edges = class_breaks(da.values[:, 0])  # all leads on one scale
    assert float(renderer.get("classificationMax")) == edges[-1] >= np.percentile(da.values, 98)
    assert float(renderer.get("classificationMin")) == 0.0


def test_to_geotiff__style_false_writes_no_sidecar(tmp_path):
    to_geotiff(forecast(), tmp_path / "f.tif", style=False)
    assert [p.name for p in tmp_path.iterdir()] == ["f.tif"]


def test_to_geotiff__rgb_image_gets_no_style(tmp_path):
    grid = Grid("EPSG:32633", Affine(1, 0, 601000, 0, -1, 5340000), (4, 4))
    rgb = grid.attach(
        xr.DataArray(
            np.zeros((3, 4, 4), "uint8"), dims=("band", "y", "x"), coords={"band": ["r", "g", "b"]}
        )
    )
    to_geotiff(rgb, tmp_path / "rgb.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["rgb.tif"]


def test_to_geotiff__existing_style_refused_without_overwrite(tmp_path):
    (tmp_path / "f.qml").write_text("mine")
    with pytest.raises(
        OutputExistsError, match=r"f.qml \(the QGIS style of f.tif\) already exists"
    ):
        to_geotiff(forecast(), tmp_path / "f.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["f.qml"]  # no GeoTIFF either
    assert (tmp_path / "f.qml").read_text() == "mine"


def test_to_geotiff__style_false_keeps_an_existing_style(tmp_path):
    (tmp_path / "f.qml").write_text("mine")
    to_geotiff(forecast(), tmp_path / "f.tif", style=False)
    assert (tmp_path / "f.qml").read_text() == "mine"


def test_to_geotiff__overwrite_replaces_both(tmp_path):
    (tmp_path / "f.qml").write_text("old")
    (tmp_path / "f.tif").write_bytes(b"old")
    to_geotiff(forecast(), tmp_path / "f.tif", overwrite=True)
    assert parse((tmp_path / "f.qml").read_text()).find("pipe") is not None
    assert (tmp_path / "f.tif").read_bytes()[:2] in (b"II", b"MM")


def test_to_geotiff__failed_style_write_keeps_both_old_files(tmp_path, monkeypatch):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(text, target, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_qml", fail)
    with pytest.raises(OSError, match="disk full"):
        to_geotiff(forecast() * 2, path, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left


def test_to_geotiff__failed_raster_write_keeps_the_old_style(tmp_path, monkeypatch):
    path = to_geotiff(forecast(), tmp_path / "f.tif")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_tiff", fail)
    with pytest.raises(OSError, match="disk full"):
        to_geotiff(forecast() * 2, path, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_check_outputs__refuses_an_existing_style_before_the_run(tmp_path):
    (tmp_path / "forecast.qml").write_text("mine")
    with pytest.raises(OutputExistsError, match="forecast.qml .* already exists; pass overwrite"):
        check_outputs([tmp_path / "forecast.tif"])


# --- the GeoPackage's layer_styles table --------------------------------------------------


def test_to_geopackage__default_styles_in_layer_styles(tmp_path):
    da = forecast()
    path = to_geopackage(da, tmp_path / "f.gpkg")
    assert [p.name for p in tmp_path.iterdir()] == ["f.gpkg"]  # no sidecar: the style is inside
    styles = pyogrio.read_dataframe(path, layer="layer_styles", read_geometry=False)
    assert list(styles["f_table_name"]) == ["cells", "cells_by_time"]
    assert list(styles["f_geometry_column"]) == ["geom", "geom"]
    assert list(styles["f_table_schema"]) == ["", ""] and styles["useAsDefault"].all()
    edges = class_breaks(da.values[:, 0])
    for qml, attr in zip(styles["styleQML"], ["lead_5min", "density"]):
        renderer = parse(qml).find("renderer-v2")
        assert renderer.get("attr") == attr
        uppers = [float(r.get("upper")) for r in renderer.findall("ranges/range")]
        np.testing.assert_array_equal(uppers[:-1], edges[1:-1])
        assert uppers[-1] >= np.nanmax(da.values)
    temporal = parse(styles["styleQML"][1]).find("temporal")
    assert temporal.get("startField") == "valid_time" and temporal.get("fixedDuration") == "5"


def test_to_geopackage__style_false_has_no_layer_styles(tmp_path):
    path = to_geopackage(forecast(), tmp_path / "f.gpkg", style=False)
    assert "layer_styles" not in [name for name, _ in pyogrio.list_layers(path)]


def test_to_geopackage__segments_get_line_symbols(tmp_path):
    x0, y0 = UTM.transform.c, UTM.transform.f
    roads = gpd.GeoDataFrame(
        {"name": ["a"]},
        geometry=[LineString([(x0 + 1, y0 - 4), (x0 + 50, y0 - 4)])],
        crs=UTM.crs,
    )
    path = to_geopackage(forecast(), tmp_path / "f.gpkg", segments=roads)
    styles = pyogrio.read_dataframe(path, layer="layer_styles", read_geometry=False)
    assert list(styles["f_table_name"]) == ["segments", "segments_by_time"]
    assert {s.get("type") for s in parse(styles["styleQML"][0]).iter("symbol")} == {"line"}
