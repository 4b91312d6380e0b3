"""QGIS layer styles (QML) for the forecast layers: one colour scale shared by all leads.

:func:`class_breaks` cuts the values of every lead into equal classes from 0 (or the 2nd
percentile when values go below 0) to a rounded 98th percentile; :func:`raster_qml` styles a
COG's band 1 with them (a discrete pseudocolor renderer, written beside ``forecast.tif`` as
``forecast.qml``, which QGIS loads as the layer's default style), :func:`vector_qml` styles a
GeoPackage layer with the same classes and colours (a graduated renderer, stored in the file's
``layer_styles`` table by :func:`styles_table`, which QGIS applies when the layer is opened).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from trafficrnn.errors import ConfigError
from trafficrnn.io.atomic import atomic_output, check_sidecar, sidecar_path

__all__ = [
    "CLASSES",
    "RAMP",
    "class_breaks",
    "colours",
    "raster_qml",
    "vector_qml",
    "styles_table",
    "sidecar_path",
    "check_sidecar",
    "write_qml",
]

#: number of colour classes
CLASSES = 5
#: viridis (perceptually uniform, colour-blind safe, legible in grey), as QGIS's own "Viridis" ramp
RAMP = ((68, 1, 84), (59, 82, 139), (33, 144, 141), (93, 201, 99), (253, 231, 37))
#: the QGIS version whose QML layout is written (older and newer QGIS 3 read it)
QGIS_VERSION = "3.22.0"
_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _nice_ceil(value: float) -> float:
    """``value`` rounded up to two significant digits (0.9769 -> 0.98, 1234 -> 1300)."""
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.ceil(value / scale - 1e-9) * scale:.12g}")


def class_breaks(values, classes: int = CLASSES) -> np.ndarray:
    """Edges of ``classes`` equal classes covering the values of all leads on one scale.

    The scale runs from 0 (from the 2nd percentile if some values are negative) to the 98th
    percentile rounded up to two significant digits (the maximum when the 98th percentile is
    the bottom of the scale; bottom + 1 for a constant or empty field); NaN is ignored.

    Parameters
    ----------
    values : array-like
        Any shape, e.g. ``(lead, y, x)`` of one band.
    classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        ``(classes + 1,)`` increasing edges.

    Raises
    ------
    ConfigError
        If ``classes`` is not an integer of at least 2.
    """
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise ConfigError(f"classes={classes!r} is invalid: expected an integer of at least 2")
    data = np.asarray(values, dtype="float64").ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        low, high = 0.0, 1.0
    else:
        low = 0.0 if data.min() >= 0 else float(np.percentile(data, 2))
        high = float(np.percentile(data, 98))
        if high <= low:
            high = float(data.max())
        if high <= low:
            high = low + 1.0
    step = _nice_ceil((high - low) / classes)
    return np.array([float(f"{low + k * step:.12g}") for k in range(classes + 1)])


def colours(classes: int = CLASSES) -> list[tuple[int, int, int]]:
    """``classes`` colours sampled evenly along :data:`RAMP`, darkest first."""
    out = []
    for k in range(classes):
        t = k / max(classes - 1, 1) * (len(RAMP) - 1)
        i = min(int(t), len(RAMP) - 2)
        f = t - i
        out.append(tuple(round(a + (b - a) * f) for a, b in zip(RAMP[i], RAMP[i + 1])))
    return out


def _labels(edges: np.ndarray, open_below: bool = False) -> list[str]:
    """Legend labels: ``0 - 0.2`` ... ``> 0.8`` (the top class holds everything above; the first
    one everything below when ``open_below``)."""
    labels = [f"{a:g} - {b:g}" for a, b in zip(edges[:-2], edges[1:-1])]
    if open_below:
        labels[0] = f"<= {edges[1]:g}"
    return [*labels, f"> {edges[-2]:g}"]


def _hex(rgb) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


def _rgba(rgb, alpha: int = 255) -> str:
    return ",".join(str(v) for v in (*rgb, alpha))


def _props(props: dict[str, str], indent: str) -> str:
    """Properties as QGIS 3.22 writes them: an ``Option`` map (QGIS ≥ 3.20) and ``prop`` elements
    (read by every QGIS 3)."""
    options = "".join(
        f'{indent}  <Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>\n'
        for k, v in props.items()
    )
    legacy = "".join(
        f"{indent}<prop k={quoteattr(k)} v={quoteattr(v)}/>\n" for k, v in props.items()
    )
    return f'{indent}<Option type="Map">\n{options}{indent}</Option>\n{legacy}'


def _ramp_xml(indent: str) -> str:
    stops = ":".join(
        f"{k / (len(RAMP) - 1):g};{_rgba(rgb)}" for k, rgb in enumerate(RAMP[1:-1], start=1)
    )
    props = {
        "color1": _rgba(RAMP[0]),
        "color2": _rgba(RAMP[-1]),
        "discrete": "0",
        "rampType": "gradient",
        "stops": stops,
    }
    return (
        f'{indent}<colorramp type="gradient" name="[source]">\n'
        f"{_props(props, indent + '  ')}{indent}</colorramp>\n"
    )


def raster_qml(edges, *, band: int = 1) -> str:
    """A singleband pseudocolor style of ``band`` in discrete classes ``edges`` (see
    :func:`class_breaks`): values up to ``edges[1]`` take the first colour, values above
    ``edges[-2]`` the last; NaN / nodata stay transparent. The same scale serves every band (lead):
    switch the band in QGIS (*Symbology ▸ Band*) and the colours keep their meaning."""
    edges = np.asarray(edges, dtype="float64")
    items = "".join(
        f'          <item label={quoteattr(label)} color="{_hex(rgb)}" '
        f'alpha="255" value="{upper!r}"/>\n'
        for label, rgb, upper in zip(
            _labels(edges, edges[0] < 0),
            colours(len(edges) - 1),
            [*map(float, edges[1:-1]), math.inf],
        )
    )
    low, high = repr(float(edges[0])), repr(float(edges[-1]))
    return (
        f'{_HEADER}<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        f'    <rasterrenderer type="singlebandpseudocolor" band="{int(band)}" opacity="1" '
        f'alphaBand="-1" classificationMin="{low}" classificationMax="{high}" nodataColor="">\n'
        "      <minMaxOrigin>\n        <limits>None</limits>\n"
        "        <extent>WholeRaster</extent>\n        <statAccuracy>Exact</statAccuracy>\n"
        "      </minMaxOrigin>\n"
        "      <rastershader>\n"
        f'        <colorrampshader colorRampType="DISCRETE" classificationMode="2" clip="0" '
        f'minimumValue="{low}" maximumValue="{high}" labelPrecision="4">\n'
        f"{_ramp_xml('          ')}{items}"
        "        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" invertColors="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"
    )


def _symbol(name: str, rgb, geometry: str, indent: str) -> str:
    if geometry == "line":
        kind, layer = "line", "SimpleLine"
        props = {
            "line_color": _rgba(rgb),
            "line_style": "solid",
            "line_width": "0.8",
            "line_width_unit": "MM",
            "capstyle": "round",
            "joinstyle": "round",
        }
    else:
        kind, layer = "fill", "SimpleFill"
        props = {
            "color": _rgba(rgb),
            "style": "solid",
            "outline_color": "35,35,35,60",
            "outline_style": "solid",
            "outline_width": "0.1",
            "outline_width_unit": "MM",
            "joinstyle": "bevel",
        }
    return (
        f'{indent}<symbol type="{kind}" name={quoteattr(name)} alpha="1" clip_to_extent="1" '
        'force_rhr="0">\n'
        f'{indent}  <layer class="{layer}" enabled="1" locked="0" pass="0">\n'
        f"{_props(props, indent + '    ')}{indent}  </layer>\n{indent}</symbol>\n"
    )


def vector_qml(
    edges,
    attr: str,
    *,
    geometry: str = "polygon",
    low: float | None = None,
    high: float | None = None,
    time_field: str | None = None,
    step_minutes: float = 0,
) -> str:
    """A graduated style of field ``attr`` with the classes and colours of :func:`raster_qml`.

    Parameters
    ----------
    edges : array-like
        Class edges from :func:`class_breaks`.
    attr : str
        The field to classify, e.g. ``lead_5min`` (or ``density`` in a long layer).
    geometry : {"polygon", "line"}
        Fill symbols for cells, line symbols for road segments.
    low, high : float, optional
        The smallest and largest value of the layer: the first class starts at ``low`` and the
        last one ends at ``high`` when they lie beyond ``edges``, so that every feature is drawn.
    time_field : str, optional
        A date-time field (``valid_time``): QGIS's temporal controller then shows each feature at
        its time, for ``step_minutes``.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        If ``geometry`` is neither ``"polygon"`` nor ``"line"``.
    """
    if geometry not in ("polygon", "line"):
        raise ConfigError(f"geometry={geometry!r} is invalid: expected 'polygon' or 'line'")
    edges = np.asarray(edges, dtype="float64")
    bounds = [float(v) for v in edges]
    if low is not None and np.isfinite(low):
        bounds[0] = min(bounds[0], float(low))
    if high is not None and np.isfinite(high):
        bounds[-1] = max(bounds[-1], float(high))
    labels = _labels(edges, bounds[0] < edges[0])
    ranges = "".join(
        f'      <range symbol="{k}" lower="{bounds[k]!r}" upper="{bounds[k + 1]!r}" '
        f'label={quoteattr(label)} render="true"/>\n'
        for k, label in enumerate(labels)
    )
    palette = colours(len(edges) - 1)
    symbols = "".join(_symbol(str(k), rgb, geometry, "      ") for k, rgb in enumerate(palette))
    source = _symbol("0", palette[0], geometry, "      ")
    temporal = ""
    if time_field:
        temporal = (
            f'  <temporal enabled="1" mode="1" startField={quoteattr(time_field)} endField="" '
            f'durationField="" startExpression="" endExpression="" accumulate="0" '
            f'fixedDuration="{step_minutes:g}" durationUnit="min" limitMode="0">\n'
            "    <fixedRange><start></start><end></end></fixedRange>\n  </temporal>\n"
        )
    return (
        f'{_HEADER}<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories">\n'
        f"{temporal}"
        f'  <renderer-v2 type="graduatedSymbol" attr={quoteattr(attr)} '
        'graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"    <ranges>\n{ranges}    </ranges>\n"
        f"    <symbols>\n{symbols}    </symbols>\n"
        f"    <source-symbol>\n{source}    </source-symbol>\n"
        f"{_ramp_xml('    ')}"
        f'    <mode name="equal"/>\n  </renderer-v2>\n'
        f"  <layerGeometryType>{2 if geometry != 'line' else 1}</layerGeometryType>\n</qgis>\n"
    )


def styles_table(styles: list[tuple[str, str, str]]):
    """The rows of a GeoPackage ``layer_styles`` table, as QGIS writes it, for ``(layer,
    geometry column, qml)`` triples: each is its layer's default style, which QGIS applies when
    the layer is opened (before any ``.qml`` beside the file).

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    now = pd.Timestamp.now(tz="UTC").floor("s")
    return pd.DataFrame(
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": [layer for layer, _, _ in styles],
            "f_geometry_column": [column for _, column, _ in styles],
            "styleName": [layer for layer, _, _ in styles],
            "styleQML": [qml for _, _, qml in styles],
            "styleSLD": "",
            "useAsDefault": True,
            "description": "trafficrnn: one colour scale for all leads",
            "owner": "",
            "ui": "",
            "update_time": now,
        }
    )


def write_qml(text: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a QML style atomically (temporary file + rename).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
