"""Individual vehicles placed on lanes so that they reproduce the cell densities of the traffic model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficrnn.synth.traffic import Network

#: Vehicle kinds: length and width (m), height (m, for shadows), share on arterials/collectors and on locals.
KINDS = {
    "car": {"length": 4.5, "width": 1.8, "height": 1.5, "share": 0.80, "share_local": 0.90},
    "van": {"length": 5.6, "width": 2.0, "height": 2.3, "share": 0.10, "share_local": 0.08},
    "truck": {"length": 9.5, "width": 2.5, "height": 3.4, "share": 0.06, "share_local": 0.02},
    "bus": {"length": 12.0, "width": 2.55, "height": 3.1, "share": 0.04, "share_local": 0.0},
}
KIND_NAMES = list(KINDS)

#: Body colours (RGB 0–1): cars from a realistic palette, vans mostly white, buses red.
CAR_COLOURS = np.array(
    [
        [0.92, 0.92, 0.90],
        [0.95, 0.95, 0.95],
        [0.08, 0.08, 0.09],
        [0.12, 0.12, 0.14],
        [0.55, 0.56, 0.58],
        [0.70, 0.71, 0.72],
        [0.35, 0.36, 0.38],
        [0.62, 0.08, 0.07],
        [0.10, 0.20, 0.45],
        [0.20, 0.35, 0.60],
        [0.25, 0.30, 0.22],
        [0.55, 0.45, 0.30],
        [0.85, 0.75, 0.20],
    ],
    dtype=np.float32,
)
CAR_WEIGHTS = np.array([12, 8, 12, 8, 12, 10, 8, 6, 6, 4, 3, 3, 2], dtype=float)


def place_vehicles(
    net: Network, cell_n: np.ndarray, cell_speed: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Vehicles of one frame, spread over the lanes of each cell.

    Parameters
    ----------
    net : Network
        The network the cell states belong to.
    cell_n : ndarray, shape (C,)
        Vehicles (fractional) in each cell; each cell gets ``floor(n)`` vehicles plus one
        with probability ``n - floor(n)``.
    cell_speed : ndarray, shape (C,)
        Speed in m/s at each cell.
    rng : numpy.random.Generator

    Returns
    -------
    dict of ndarray, each of shape (V,)
        ``x``, ``y`` (CRS units), ``heading`` (degrees clockwise from north), ``speed``
        (km/h), ``kind`` (index into :data:`KIND_NAMES`), ``colour`` (V, 3), ``link``, ``cell``.
    """
    n = np.floor(cell_n).astype(np.int64)
    n += rng.random(cell_n.shape) < (cell_n - n)
    cell = np.repeat(np.arange(len(n)), n)
    total = int(n.sum())
    lk = net.link
    link = net.cell_link[cell]
    lanes = lk.lanes.to_numpy()[link]
    # rank of each vehicle in its cell, round-robin over lanes, evenly spaced slots in a lane
    rank = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    lane = rank % lanes
    per_lane = np.ceil(n[cell] / lanes)
    slot = rank // lanes
    frac = (slot + 0.5 + rng.uniform(-0.3, 0.3, total)) / per_lane
    along = net.cell_start[cell] + frac * net.cell_len[cell]
    x0, y0, x1, y1 = (lk[c].to_numpy()[link] for c in ("x0", "y0", "x1", "y1"))
    length = lk.length.to_numpy()[link]
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    lane_w = lk.lane_w.to_numpy()[link]
    oneway = lk.oneway.to_numpy()[link]
    # right-hand traffic: lanes of a two-way road right of the centre line, one-way lanes centred
    offset = np.where(
        oneway,
        (lane - (lanes - 1) / 2) * lane_w,
        (lane + 0.5) * lane_w + (lk.kind.to_numpy()[link] == "arterial"),
    )
    offset = offset + rng.uniform(-0.25, 0.25, total)
    x = x0 + ux * along + uy * offset
    y = y0 + uy * along - ux * offset
    heading = np.degrees(np.arctan2(ux, uy)) % 360.0
    local = lk.kind.to_numpy()[link] == "local"
    shares = np.array([[KINDS[k]["share"], KINDS[k]["share_local"]] for k in KIND_NAMES])
    u = rng.random(total)
    kind = np.where(
        local,
        np.searchsorted(np.cumsum(shares[:, 1]), u * shares[:, 1].sum()),
        np.searchsorted(np.cumsum(shares[:, 0]), u * shares[:, 0].sum()),
    ).clip(0, 3)
    colour = CAR_COLOURS[rng.choice(len(CAR_COLOURS), total, p=CAR_WEIGHTS / CAR_WEIGHTS.sum())]
    colour = np.where(
        (kind == 1)[:, None] & (rng.random(total) < 0.7)[:, None], CAR_COLOURS[1], colour
    )
    colour = np.where((kind == 3)[:, None], np.array([0.75, 0.10, 0.08], np.float32), colour)
    colour = np.where(
        (kind == 2)[:, None] & (rng.random(total) < 0.5)[:, None],
        np.array([0.85, 0.85, 0.82], np.float32),
        colour,
    )
    speed = cell_speed[cell] * 3.6 * rng.uniform(0.92, 1.05, total)
    return {
        "x": x,
        "y": y,
        "heading": heading,
        "speed": speed,
        "kind": kind,
        "colour": colour.astype(np.float32),
        "link": link,
        "cell": cell,
    }


def vehicles_frame(parts: list[dict[str, np.ndarray]], times: pd.DatetimeIndex, crs):
    """GeoDataFrame of the vehicles of all frames.

    Parameters
    ----------
    parts : list of dict
        Output of :func:`place_vehicles`, one per frame.
    times : pandas.DatetimeIndex
        Frame times, same length as ``parts``.
    crs : CRS-like

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``time``, ``heading`` (deg), ``speed`` (km/h), ``kind`` (car/van/truck/bus),
        ``link``, Point ``geometry``.
    """
    import geopandas as gpd
    import shapely

    counts = [len(p["x"]) for p in parts]
    cat = {
        k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
        for k in ("x", "y", "heading", "speed", "kind", "link")
    }
    return gpd.GeoDataFrame(
        {
            "time": np.repeat(np.asarray(times, dtype="datetime64[ns]"), counts),
            "heading": cat["heading"].astype(np.float32),
            "speed": cat["speed"].astype(np.float32),
            "kind": pd.Categorical.from_codes(cat["kind"].astype(int), KIND_NAMES),
            "link": cat["link"].astype(np.int32),
        },
        geometry=shapely.points(cat["x"], cat["y"]),
        crs=crs,
    )
