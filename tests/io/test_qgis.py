"""QGIS as a real client of the forecast layers: ``qgis_process`` opens the COG, the CF-NetCDF and
the GeoPackage written by trafficrnn, reports their CRS and extent, runs zonal statistics of the
COG over the GeoPackage cells, and loads the layers' default styles.

Needs ``qgis_process`` (Debian/Ubuntu: ``apt-get install qgis``); skipped without it. About five
``qgis_process`` runs of ~2 s each; every run is cut off after 60 s.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from trafficrnn import to_geopackage, to_geotiff, to_netcdf
from trafficrnn.io.qml import class_breaks, colours

from .test_export import UTM, forecast


def _qgis_process() -> str | None:
    """The qgis_process executable. Debian's ``qgis_process`` is a shell wrapper that passes the
    desktop's ``--noversioncheck`` (from /etc/default/qgis), which qgis_process 3.22 rejects; the
    binary it wraps, ``qgis_process.bin``, is used where it exists."""
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process")


QGIS_PROCESS = _qgis_process()
pytestmark = [
    pytest.mark.qgis,
    pytest.mark.skipif(
        QGIS_PROCESS is None,
        reason="qgis_process is not installed (Debian/Ubuntu: apt-get install qgis)",
    ),
]
TIMEOUT_S = 60
CELL = 8.0
BOUNDS = (601000.0, 5340000.0 - 5 * CELL, 601000.0 + 7 * CELL, 5340000.0)  # UTM: 5 x 7 cells
PROBE = "trafficrnn_probe"

# a Processing script that opens the layers as QGIS desktop does (default style loaded) and
# reports what QGIS made of them; run as script:trafficrnn_probe
PROBE_SCRIPT = """
import json
from qgis.core import (QgsProcessingAlgorithm, QgsProcessingOutputString,
                       QgsProcessingParameterFile, QgsRasterLayer, QgsVectorLayer)


def raster(path):
    layer = QgsRasterLayer(path, "raster")
    renderer = layer.renderer()
    out = {"valid": layer.isValid(), "crs": layer.crs().authid(), "bands": layer.bandCount(),
           "renderer": renderer.type()}
    if renderer.type() == "singlebandpseudocolor":
        shader = renderer.shader().rasterShaderFunction()
        out.update(band=renderer.band(), min=renderer.classificationMin(),
                   max=renderer.classificationMax(),
                   items=[[i.value, i.color.name()] for i in shader.colorRampItemList()])
    return out


def vector(uri):
    layer = QgsVectorLayer(uri, "vector", "ogr")
    renderer = layer.renderer()
    out = {"valid": layer.isValid(), "crs": layer.crs().authid(), "renderer": renderer.type()}
    if renderer.type() == "graduatedSymbol":
        out.update(attr=renderer.classAttribute(),
                   ranges=[[r.lowerValue(), r.upperValue(), r.symbol().color().name()]
                           for r in renderer.ranges()])
    return out


class Probe(QgsProcessingAlgorithm):
    def name(self):
        return "trafficrnn_probe"

    def displayName(self):
        return "trafficrnn probe"

    def createInstance(self):
        return Probe()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(
            "FOLDER", "folder", behavior=QgsProcessingParameterFile.Folder))
        self.addOutput(QgsProcessingOutputString("REPORT", "report"))

    def processAlgorithm(self, parameters, context, feedback):
        folder = self.parameterAsFile(parameters, "FOLDER", context)
        report = {"tif": raster(folder + "/forecast.tif"), "nc": raster(folder + "/forecast.nc"),
                  "cells": vector(folder + "/forecast.gpkg|layername=cells"),
                  "by_time": vector(folder + "/forecast.gpkg|layername=cells_by_time")}
        return {"REPORT": json.dumps(report)}
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """forecast.tif (+ forecast.qml), forecast.nc and forecast.gpkg of a 3-lead UTM forecast, and
    a fresh QGIS profile holding the probe script."""
    folder = tmp_path_factory.mktemp("qgis")
    da = forecast(UTM)
    to_geotiff(da, folder / "forecast.tif")
    to_netcdf(da, folder / "forecast.nc")
    to_geopackage(da, folder / "forecast.gpkg")
    scripts = folder / "profile" / "profiles" / "default" / "processing" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / f"{PROBE}.py").write_text(PROBE_SCRIPT)
    return folder, da


def qgis_run(folder: Path, algorithm: str, *params: str) -> dict:
    """Run one Processing algorithm headless; its ``results``, from ``qgis_process --json``."""
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(folder / "profile"),  # not the user's profile
        XDG_RUNTIME_DIR=str(folder / "profile"),
    )
    command = [QGIS_PROCESS, "--json", "run", algorithm, "--", *params]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=folder
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"qgis_process run {algorithm} took over {TIMEOUT_S} s")
    if done.returncode != 0:
        message = (done.stdout + done.stderr).strip()
        if algorithm.startswith("script:") and "not found" in message:
            pytest.skip(f"qgis_process runs no Python scripts here (python3-qgis?): {message}")
        pytest.fail(f"qgis_process run {algorithm} failed ({done.returncode}): {message}")
    return json.loads(done.stdout[done.stdout.index("{") :])["results"]


def test_qgis__layers_have_the_crs_and_extent_of_the_grid(written):
    folder, _ = written
    layers = ["forecast.tif", "forecast.nc", "forecast.gpkg|layername=cells"]
    qgis_run(
        folder,
        "native:exportlayersinformation",
        *(f"LAYERS={folder / name}" for name in layers),
        f"OUTPUT={folder / 'layers.geojson'}",
    )
    info = gpd.read_file(folder / "layers.geojson")
    assert list(info["provider"]) == ["gdal", "gdal", "ogr"]
    assert list(info["crs"]) == ["EPSG:32633"] * 3
    for name, bounds in zip(layers, info.geometry.bounds.itertuples(index=False)):
        np.testing.assert_allclose(tuple(bounds), BOUNDS, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("lead", [1, 2, 3])
def test_qgis__zonal_mean_over_cells_is_the_cell_value(written, lead):
    folder, da = written
    out = folder / f"zonal_{lead}.geojson"
    qgis_run(
        folder,
        "native:zonalstatisticsfb",
        f"INPUT={folder / 'forecast.gpkg'}|layername=cells",
        f"INPUT_RASTER={folder / 'forecast.tif'}",
        f"RASTER_BAND={lead}",
        "COLUMN_PREFIX=z_",
        "STATISTICS=0,2",  # count, mean
        f"OUTPUT={out}",
    )
    zones = gpd.read_file(out)
    assert len(zones) == UTM.shape[0] * UTM.shape[1]
    assert (zones["z_count"] == 1).all()  # each cell covers exactly one pixel
    expected = da.values[lead - 1, 0][zones["row"], zones["col"]]
    np.testing.assert_allclose(zones["z_mean"], expected, rtol=np.finfo("float32").eps, atol=0)
    column = ["lead_5min", "lead_10min", "lead_15min"][lead - 1]
    np.testing.assert_array_equal(zones["z_mean"], zones[column])


def test_qgis__layers_open_in_their_default_style(written):
    folder, da = written
    report = json.loads(qgis_run(folder, f"script:{PROBE}", f"FOLDER={folder}")["REPORT"])
    edges = class_breaks(da.values[:, 0])
    palette = ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in colours(len(edges) - 1)]
    for name in ("tif", "nc"):  # QGIS loads forecast.qml for forecast.nc as well
        raster = report[name]
        assert raster["valid"] and raster["crs"] == "EPSG:32633" and raster["bands"] == 3
        assert raster["renderer"] == "singlebandpseudocolor" and raster["band"] == 1
        assert (raster["min"], raster["max"]) == (edges[0], edges[-1])
        assert [color for _, color in raster["items"]] == palette
        np.testing.assert_array_equal([v for v, _ in raster["items"]][:-1], edges[1:-1])
    for name, attr in (("cells", "lead_5min"), ("by_time", "density")):
        vector = report[name]  # from the GeoPackage's layer_styles table
        assert vector["valid"] and vector["crs"] == "EPSG:32633"
        assert vector["renderer"] == "graduatedSymbol" and vector["attr"] == attr
        assert [color for _, _, color in vector["ranges"]] == palette
        np.testing.assert_array_equal([lo for lo, _, _ in vector["ranges"]][1:], edges[1:-1])
