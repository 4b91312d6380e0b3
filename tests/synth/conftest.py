"""Shared small simulations for the synth tests (module-scoped to keep the suite fast)."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from trafficrnn.synth import simulate
from trafficrnn.synth.city import City


@pytest.fixture(scope="session")
def small_run():
    """A 128 px city at 1 m over a weekday morning, with clouds and missing frames."""
    return simulate(
        128,
        days=0.25,
        step="15min",
        gsd=1.0,
        tile_size=16,
        seed=3,
        clouds=True,
        cloud_cover=0.3,
        missing_frames=0.2,
        start="2024-06-04T04:00",
    )


@pytest.fixture(scope="session")
def corridor():
    """A one-way, two-lane arterial of 1 km in five 200 m links between two boundary nodes."""
    x = 600000.0 + 200.0 * np.arange(6)
    y = np.full(6, 5340000.0)
    nodes = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "boundary": [True, False, False, False, False, True],
            "prod_res": 0.0,
            "prod_cbd": 0.0,
            "prod_com": 0.0,
        }
    )
    geoms = shapely.linestrings(
        np.stack([np.stack([x[:-1], y[:-1]], 1), np.stack([x[1:], y[1:]], 1)], 1)
    )
    roads = gpd.GeoDataFrame(
        {
            "road_id": np.arange(5),
            "kind": "arterial",
            "lanes": 2,
            "speed_limit": 50.0,
            "oneway": True,
            "width": 7.0,
            "u": np.arange(5),
            "v": np.arange(1, 6),
            "axis": 0,
        },
        geometry=geoms,
        crs="EPSG:32633",
    )
    landuse = gpd.GeoDataFrame(
        {"class": [], "zone": [], "height": []}, geometry=[], crs="EPSG:32633"
    )
    return City(
        roads,
        landuse,
        nodes,
        "EPSG:32633",
        Affine(1, 0, 599990, 0, -1, 5340010),
        (20, 1020),
        (600500.0, 5340000.0),
        (600500.0, 5345000.0),
        48.2,
        16.4,
        2.0,
    )
