"""A small synthetic city: a seeded road network (a rotated, irregular street grid) and land-use polygons
(buildings, parks, ponds, parking) placed in a real UTM zone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from shapely import affinity

from trafficrnn.errors import ConfigError

#: Default place: the centre of Vienna (Stephansplatz) in UTM zone 33N.
VIENNA = {
    "crs": "EPSG:32633",
    "x": 602065.0,
    "y": 5340354.0,
    "lat": 48.2082,
    "lon": 16.3738,
    "utc_offset_h": 2.0,
}

#: Road classes: lanes per direction, speed limit (km/h), capacity per lane (veh/h), lane width (m).
ROAD_CLASSES = {
    "arterial": {"lanes": 2, "speed_kmh": 50, "cap_lane": 1800, "lane_w": 3.5},
    "collector": {"lanes": 1, "speed_kmh": 50, "cap_lane": 1600, "lane_w": 3.5},
    "local": {"lanes": 1, "speed_kmh": 30, "cap_lane": 1200, "lane_w": 3.0},
}


@dataclass
class City:
    """A synthetic city.

    Attributes
    ----------
    roads : geopandas.GeoDataFrame
        One row per road segment between intersections: ``road_id``, ``kind``
        (arterial/collector/local), ``lanes`` (per direction), ``speed_limit`` (km/h),
        ``oneway`` (bool), ``width`` (m), ``u``/``v`` (end node ids), ``axis`` (0/1: which street
        family), LineString geometry.
    landuse : geopandas.GeoDataFrame
        Polygons with ``class`` (building/vegetation/parking/water), ``zone``
        (cbd/residential/commercial/park/parking), ``height`` (m, buildings and trees).
    nodes : pandas.DataFrame
        Intersections and boundary points: ``x``, ``y`` (CRS units), ``boundary`` (bool),
        ``prod_res``/``prod_cbd``/``prod_com`` (trip weights of the adjacent blocks).
    crs : str
        Projected CRS of every layer.
    transform : affine.Affine
        North-up image transform of the scene.
    shape : tuple of int
        ``(height, width)`` of the scene in pixels.
    centre : tuple of float
        ``(x, y)`` of the scene centre; ``cbd`` is the ``(x, y)`` of the business district.
    lat, lon : float
        Geographic position of the place (for the sun).
    utc_offset_h : float
        Local time minus UTC in hours (demand follows local time).
    """

    roads: gpd.GeoDataFrame
    landuse: gpd.GeoDataFrame
    nodes: pd.DataFrame
    crs: str
    transform: Affine
    shape: tuple[int, int]
    centre: tuple[float, float]
    cbd: tuple[float, float]
    lat: float
    lon: float
    utc_offset_h: float


def _positions(rng: np.random.Generator, half: float, lo: float, hi: float) -> np.ndarray:
    """Street offsets covering ``[-half, half]`` with irregular spacing in ``[lo, hi]``."""
    out, x = (
        [],
        -half - rng.uniform(0, hi),
    )  # one street beyond each side, so no block is left empty
    while x < half + hi:
        out.append(x)
        x += rng.uniform(lo, hi)
    if len(out) < 2:  # a small scene still gets a crossing
        out = [-half / 3, half / 3]
    return np.asarray(out)


def _classify(rng: np.random.Generator, pos: np.ndarray, extent: float) -> list[str]:
    """Arterial nearest the middle (plus one more per ~600 m), collectors every few streets."""
    kinds = ["local"] * len(pos)
    target = rng.uniform(-0.15, 0.15) * extent
    n_art = max(1, int(extent // 600))
    order = np.argsort(np.abs(pos - target))
    for i in order[:1]:
        kinds[i] = "arterial"
    if n_art > 1:
        far = np.argsort(-np.abs(pos - pos[order[0]]))
        for i in far[: n_art - 1]:
            if abs(pos[i]) < 0.4 * extent:
                kinds[i] = "arterial"
    for i in range(len(pos)):
        if kinds[i] == "local" and rng.random() < 0.35:
            kinds[i] = "collector"
    return kinds


def make_city(
    size: int = 512, gsd: float = 1.0, seed: int = 0, *, place: dict | None = None
) -> City:
    """Build a seeded synthetic city.

    Parameters
    ----------
    size : int
        Scene side in pixels (the scene is ``size`` × ``size``).
    gsd : float
        Ground sampling distance in metres per pixel.
    seed : int
        Seed of the layout; the same seed gives the same city.
    place : dict, optional
        ``{"crs", "x", "y", "lat", "lon", "utc_offset_h"}`` of the scene centre; defaults to
        :data:`VIENNA`.

    Returns
    -------
    City

    Raises
    ------
    ConfigError
        If ``size`` or ``gsd`` are out of range.
    """
    _check_scene(size, gsd)
    place = dict(VIENNA if place is None else place)
    # one generator for the layout: scene, streets, pruning, CBD and blocks, drawn in that order
    rng = np.random.default_rng([seed, 1])
    lay = _layout(rng, place, size, gsd)
    nodes, node_xy, node_bnd, segs = _street_graph(lay)
    segs_df = _prune_locals(segs, rng, np.asarray(node_bnd))
    xy_local = np.asarray(node_xy)
    wx, wy = lay.world(xy_local[:, 0], xy_local[:, 1])
    roads, width = _road_layer(segs_df, wx, wy, place["crs"])
    cbd_local = (
        lay.us[np.argmin(np.abs(lay.us - rng.uniform(-0.2, 0.2) * lay.extent))],
        lay.vs[np.argmin(np.abs(lay.vs - rng.uniform(-0.2, 0.2) * lay.extent))],
    )
    widths = {(fam, line): w for fam, line, w in zip(segs_df.family, segs_df.line, width)}
    landuse, node_w = _blocks(rng, lay, widths, cbd_local, nodes, len(node_xy), place["crs"])
    node_df = pd.DataFrame({"x": wx, "y": wy, "boundary": node_bnd})
    for col in ("prod_res", "prod_cbd", "prod_com"):
        node_df[col] = node_w[col]
    return City(
        roads,
        landuse,
        node_df,
        place["crs"],
        lay.transform,
        (size, size),
        (lay.cx, lay.cy),
        lay.world(*cbd_local),
        place["lat"],
        place["lon"],
        place["utc_offset_h"],
    )


# make_city's steps: check the scene, lay out the rotated street grid, join its crossings into a
# graph of segments, turn the segments into the road layer, then fill the blocks (_blocks)
def _check_scene(size, gsd) -> None:
    """Raise ConfigError unless ``size`` pixels at ``gsd`` metres make a valid scene."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 32 <= size <= 8192:
        raise ConfigError(
            f"size={size!r} is invalid: expected an integer number of pixels in [32, 8192], e.g. 512"
        )
    if not isinstance(gsd, (int, float)) or not 0.1 <= gsd <= 5.0:
        raise ConfigError(
            f"gsd={gsd!r} is invalid: expected metres per pixel in [0.1, 5], e.g. 1.0"
        )
    if size * gsd < 60:
        raise ConfigError(
            f"size={size} px at gsd={gsd} m is a scene of {size * gsd:g} m: expected at least 60 m; "
            "raise size or gsd"
        )


@dataclass
class _Layout:
    """The scene and its street grid, in the grid's local frame (u east-ish, v north-ish)."""

    extent: float  # scene side (m)
    cx: float  # scene centre in world coordinates
    cy: float
    transform: Affine
    half: float  # half-side of the square the streets cover
    us: np.ndarray  # offsets of the streets of family 0 (along v) and family 1 (along u)
    vs: np.ndarray
    kind_u: list[str]
    kind_v: list[str]
    oneway_u: list[bool]
    oneway_v: list[bool]
    ct: float  # cosine and sine of the grid's rotation
    st: float
    to_world: list[float]  # local -> world affine (shapely's order)
    box_local: shapely.Polygon  # the scene in the local frame

    def world(self, x, y):
        """World coordinates of local ``(x, y)``."""
        ct, st = self.ct, self.st
        return ct * x - st * y + self.cx, st * x + ct * y + self.cy


def _layout(rng: np.random.Generator, place: dict, size: int, gsd: float) -> _Layout:
    """Place the scene near ``place`` and draw the rotated grid's streets, classes and one-ways."""
    extent = size * gsd
    # Scene placed within ±1.5 km of the place centre, snapped to the pixel grid.
    cx = round((place["x"] + rng.uniform(-1500, 1500)) / gsd) * gsd
    cy = round((place["y"] + rng.uniform(-1500, 1500)) / gsd) * gsd
    transform = Affine(gsd, 0.0, cx - extent / 2, 0.0, -gsd, cy + extent / 2)
    theta = rng.uniform(-35, 35)
    half = extent * 0.75  # rotated grid must cover the corners of the scene
    us = _positions(rng, half, 55, 115)
    vs = _positions(rng, half, 50, 100)
    kind_u, kind_v = _classify(rng, us, extent), _classify(rng, vs, extent)
    oneway_u = [k == "local" and rng.random() < 0.4 for k in kind_u]
    oneway_v = [k == "local" and rng.random() < 0.4 for k in kind_v]
    # local frame (u east-ish, v north-ish) -> world
    ct, st = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    to_world = [ct, -st, st, ct, cx, cy]
    box_local = affinity.affine_transform(
        shapely.box(cx - extent / 2, cy - extent / 2, cx + extent / 2, cy + extent / 2),
        _inverse(to_world),
    )
    return _Layout(
        extent,
        cx,
        cy,
        transform,
        half,
        us,
        vs,
        kind_u,
        kind_v,
        oneway_u,
        oneway_v,
        ct,
        st,
        to_world,
        box_local,
    )


def _street_graph(lay: _Layout) -> tuple[dict, list, list, pd.DataFrame]:
    """Clip every street to the scene and cut it at its crossings: the node ids by key, the nodes'
    local positions and boundary flags, and the segments (``u, v, kind, oneway, family, line``)."""
    nodes: dict[tuple, int] = {}
    node_xy: list[tuple[float, float]] = []
    node_bnd: list[bool] = []
    segs = []  # (u_node, v_node, kind, oneway, family, index)
    for fam, (pos, other, kinds, oneways) in enumerate(
        ((lay.us, lay.vs, lay.kind_u, lay.oneway_u), (lay.vs, lay.us, lay.kind_v, lay.oneway_v))
    ):
        for i, p in enumerate(pos):
            span = _street_span(lay, fam, i, p, other)
            if span is None:
                continue
            pts, ts = span
            ids = []
            for key, t in zip(pts, ts):
                if key not in nodes:
                    nodes[key] = len(node_xy)
                    node_xy.append((p, t) if fam == 0 else (t, p))
                    node_bnd.append(key[0] == "b")
                ids.append(nodes[key])
            flip = (i % 2 == 1) and oneways[i]
            for k in range(len(ids) - 1):
                u, v = (ids[k + 1], ids[k]) if flip else (ids[k], ids[k + 1])
                segs.append([u, v, kinds[i], oneways[i], fam, i])
    segs_df = pd.DataFrame(segs, columns=["u", "v", "kind", "oneway", "family", "line"])
    return nodes, node_xy, node_bnd, segs_df


def _street_span(
    lay: _Layout, fam: int, i: int, p: float, other: np.ndarray
) -> tuple[list, list] | None:
    """Node keys and positions along the street at offset ``p`` of family ``fam`` within the scene
    (its two boundary ends and the crossings between), or None where it barely touches the scene."""
    half = lay.half
    a, b = ((p, -2 * half), (p, 2 * half)) if fam == 0 else ((-2 * half, p), (2 * half, p))
    clipped = shapely.LineString([a, b]).intersection(lay.box_local)
    if clipped.is_empty or clipped.length < 5:
        return None
    (x0, y0), (x1, y1) = clipped.coords[0], clipped.coords[-1]
    t0, t1 = sorted((y0, y1) if fam == 0 else (x0, x1))
    inner = [q for q in other if t0 + 1 < q < t1 - 1]
    pts = (
        [("b", fam, i, 0)]
        + [
            ("n", i, j) if fam == 0 else ("n", j, i)
            for j, _ in ((np.searchsorted(other, q), q) for q in inner)
        ]
        + [("b", fam, i, 1)]
    )
    return pts, [t0] + inner + [t1]


def _road_layer(
    segs_df: pd.DataFrame, wx: np.ndarray, wy: np.ndarray, crs: str
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The road layer of the segments between nodes at world ``(wx, wy)``, and each one's width."""
    geoms = shapely.linestrings(
        np.stack(
            [
                np.stack([wx[segs_df.u], wy[segs_df.u]], 1),
                np.stack([wx[segs_df.v], wy[segs_df.v]], 1),
            ],
            1,
        )
    )
    cls = segs_df.kind.map(ROAD_CLASSES)
    lanes = np.array([c["lanes"] for c in cls], dtype=int)
    lane_w = np.array([c["lane_w"] for c in cls])
    width = lanes * lane_w * np.where(segs_df.oneway, 1, 2) + np.where(
        segs_df.kind == "arterial", 2.0, 0.0
    )
    roads = gpd.GeoDataFrame(
        {
            "road_id": np.arange(len(segs_df)),
            "kind": segs_df.kind.to_numpy(),
            "lanes": lanes,
            "speed_limit": np.array([c["speed_kmh"] for c in cls], dtype=float),
            "oneway": segs_df.oneway.to_numpy(bool),
            "width": width,
            "u": segs_df.u.to_numpy(),
            "v": segs_df.v.to_numpy(),
            "axis": segs_df.family.to_numpy(),
        },
        geometry=geoms,
        crs=crs,
    )
    return roads, width


def _inverse(m: list[float]) -> list[float]:
    a, b, d, e, xo, yo = m
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return [ia, ib, id_, ie, -(ia * xo + ib * yo), -(id_ * xo + ie * yo)]


def _prune_locals(
    segs: pd.DataFrame, rng: np.random.Generator, boundary: np.ndarray
) -> pd.DataFrame:
    """Drop some local segments where both end nodes keep three or more other segments."""
    deg = np.bincount(np.r_[segs.u, segs.v], minlength=len(boundary))
    keep = np.ones(len(segs), bool)
    for k in rng.permutation(len(segs)):
        u, v = segs.u.iat[k], segs.v.iat[k]
        if segs.kind.iat[k] != "local" or boundary[u] or boundary[v] or rng.random() > 0.18:
            continue
        if deg[u] >= 4 and deg[v] >= 4:
            keep[k] = False
            deg[u] -= 1
            deg[v] -= 1
    return segs[keep].reset_index(drop=True)


def _blocks(rng, lay: _Layout, widths, cbd, nodes, n_nodes, crs):
    """Land use of every block between streets, and the trip weights it gives its corner nodes."""
    us, vs, box = lay.us, lay.vs, lay.box_local
    rows, weights = [], {k: np.zeros(n_nodes) for k in ("prod_res", "prod_cbd", "prod_com")}
    for i in range(len(us) - 1):
        for j in range(len(vs) - 1):
            x0, x1, y0, y1 = _block_bounds(us, vs, widths, i, j)
            if x1 - x0 < 15 or y1 - y0 < 15 or not box.intersects(shapely.box(x0, y0, x1, y1)):
                continue
            zone = _zone(rng, math.hypot((x0 + x1) / 2 - cbd[0], (y0 + y1) / 2 - cbd[1]))
            area = (x1 - x0) * (y1 - y0)
            _weigh_corners(weights, nodes, zone, area, i, j)
            if zone == "park":
                _park(rng, rows, x0, y0, x1, y1, area)
            elif zone == "parking":
                _add(rows, shapely.box(x0, y0, x1, y1), "parking", zone, 0.0)
            elif zone == "commercial":
                _commercial(rng, rows, x0, y0, x1, y1)
            else:
                _built_block(rng, rows, zone, x0, y0, x1, y1)
    return _landuse_layer(rows, box, lay.to_world, crs), weights


# _blocks' steps: each block's bounds, its zone and trip weights, then what stands on it (a park, a
# car park, a store and its car park, or a ring of buildings around a yard); last the layer
def _add(rows: list, geom, cls: str, zone: str, height) -> None:
    """Append a land-use polygon to ``rows``."""
    rows.append((cls, zone, float(height), geom))


def _block_bounds(us, vs, widths: dict, i: int, j: int) -> tuple[float, float, float, float]:
    """``x0, x1, y0, y1`` of block ``(i, j)``: between its streets, less half their width and a 3 m verge."""
    wl = widths.get((0, i), 8.0) / 2 + 3.0
    wr = widths.get((0, i + 1), 8.0) / 2 + 3.0
    wb = widths.get((1, j), 8.0) / 2 + 3.0
    wt = widths.get((1, j + 1), 8.0) / 2 + 3.0
    return us[i] + wl, us[i + 1] - wr, vs[j] + wb, vs[j + 1] - wt


def _zone(rng: np.random.Generator, dist: float) -> str:
    """Zone of a block ``dist`` metres from the CBD: cbd near it, otherwise drawn."""
    r = rng.random()
    return (
        "cbd"
        if dist < 140
        else "park"
        if r < 0.12
        else "parking"
        if r < 0.2
        else "commercial"
        if r < 0.35
        else "residential"
    )


def _weigh_corners(weights: dict, nodes: dict, zone: str, area: float, i: int, j: int) -> None:
    """Add the trip weight of block ``(i, j)`` (by area, doubled in the CBD) to its corner nodes."""
    key = {"cbd": "prod_cbd", "residential": "prod_res"}.get(zone, "prod_com")
    for corner in (("n", i, j), ("n", i + 1, j), ("n", i, j + 1), ("n", i + 1, j + 1)):
        if corner in nodes:
            weights[key][nodes[corner]] += area / 1e4 * (2.0 if zone == "cbd" else 1.0)


def _park(rng: np.random.Generator, rows: list, x0, y0, x1, y1, area: float) -> None:
    """A park: lawn, perhaps a pond, and trees (the first ones not in the pond)."""
    zone = "park"
    _add(rows, shapely.box(x0, y0, x1, y1), "vegetation", zone, 0.0)
    if rng.random() < 0.7:
        cxp, cyp = rng.uniform(x0 + 10, x1 - 10), rng.uniform(y0 + 10, y1 - 10)
        pond = affinity.scale(
            shapely.Point(cxp, cyp).buffer(1.0, 24),
            rng.uniform(6, (x1 - x0) / 3),
            rng.uniform(5, (y1 - y0) / 3),
        )
        _add(rows, pond, "water", zone, 0.0)
    n_trees = int(area / 120)
    tx, ty = rng.uniform(x0 + 3, x1 - 3, n_trees), rng.uniform(y0 + 3, y1 - 3, n_trees)
    for px, py in zip(tx, ty):
        if not any(r_[0] == "water" and r_[3].contains(shapely.Point(px, py)) for r_ in rows[-2:]):
            _add(
                rows,
                shapely.Point(px, py).buffer(rng.uniform(2, 4.5), 8),
                "vegetation",
                "tree",
                rng.uniform(6, 14),
            )


def _commercial(rng: np.random.Generator, rows: list, x0, y0, x1, y1) -> None:
    """A commercial block: a car park with a store on part of it."""
    zone = "commercial"
    split = x0 + (x1 - x0) * rng.uniform(0.4, 0.7)
    _add(rows, shapely.box(x0, y0, x1, y1), "parking", zone, 0.0)
    _add(rows, shapely.box(x0 + 2, y0 + 2, split, y1 - 2), "building", zone, rng.uniform(6, 11))


def _built_block(rng: np.random.Generator, rows: list, zone: str, x0, y0, x1, y1) -> None:
    """A residential or CBD block: a yard ringed by buildings on lots along its four sides, with trees."""
    depth = rng.uniform(10, 16) if zone == "residential" else rng.uniform(16, 24)
    hmin, hmax = (8, 22) if zone == "residential" else (22, 60)
    _add(rows, shapely.box(x0, y0, x1, y1), "vegetation", "yard", 0.0)
    for side in range(4):
        along = (x1 - x0) if side < 2 else (y1 - y0) - 2 * depth
        if along < 8:
            continue
        n_lots = max(1, int(along / rng.uniform(12, 30 if zone == "residential" else 45)))
        edges = np.linspace(0, along, n_lots + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            if rng.random() < 0.08:
                continue
            if side == 0:
                g = shapely.box(x0 + a, y0, x0 + b, y0 + depth)
            elif side == 1:
                g = shapely.box(x0 + a, y1 - depth, x0 + b, y1)
            elif side == 2:
                g = shapely.box(x0, y0 + depth + a, x0 + depth, y0 + depth + b)
            else:
                g = shapely.box(x1 - depth, y0 + depth + a, x1, y0 + depth + b)
            _add(rows, g, "building", zone, rng.uniform(hmin, hmax))
    inner = shapely.box(x0 + depth + 4, y0 + depth + 4, x1 - depth - 4, y1 - depth - 4)
    if inner.area > 30:
        for _ in range(int(inner.area / 150)):
            px, py = (
                rng.uniform(inner.bounds[0], inner.bounds[2]),
                rng.uniform(inner.bounds[1], inner.bounds[3]),
            )
            _add(
                rows,
                shapely.Point(px, py).buffer(rng.uniform(2, 4), 8),
                "vegetation",
                "tree",
                rng.uniform(5, 12),
            )


def _landuse_layer(rows: list, box, to_world: list[float], crs: str) -> gpd.GeoDataFrame:
    """The land-use rows clipped to the scene ``box`` and moved to world coordinates."""
    cls, zone, height, geoms = zip(*rows) if rows else ((), (), (), ())
    geoms = shapely.intersection(np.asarray(geoms, dtype=object), box)
    gdf = gpd.GeoDataFrame(
        {"class": list(cls), "zone": list(zone), "height": np.asarray(height, float)},
        geometry=list(geoms),
        crs=crs,
    )
    gdf = gdf[~gdf.geometry.is_empty].copy()
    gdf["geometry"] = gdf.geometry.affine_transform(to_world)
    return gdf.reset_index(drop=True)
