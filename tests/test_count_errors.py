"""Tests of benchmarks/count_errors.py's overlap finder: which vehicles' bodies intersect another's
on their link (the rendered frames where no counter can separate them)."""

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from count_errors import overlapping  # noqa: E402  (benchmarks/ is not a package)


def test_overlapping__bodies_that_meet_on_a_link_in_one_frame():
    t0, t1 = pd.Timestamp("2024-06-03 08:00"), pd.Timestamp("2024-06-03 08:15")
    # (time, link, kind, x, y): heading north, so y runs along the link and x across it
    rows = [
        (t0, 1, "car", 0.0, 0.0),  # 4 m behind the next car: 4 < (4.5 + 4.5) / 2, overlap
        (t0, 1, "car", 0.0, 4.0),
        (t0, 1, "car", 0.0, 10.0),  # 6 m past it: clear
        (t0, 2, "car", 0.0, 1.0),  # another link at the same place: not compared
        (t0, 1, "car", 3.5, 0.0),  # the next lane (3.5 m > 1.8 m across): clear
        (t0, 1, "bus", 0.0, 30.0),  # 7 m from a car: 7 < (12 + 4.5) / 2 -> overlap
        (t0, 1, "car", 0.0, 37.0),
        (t1, 1, "car", 0.0, 4.5),  # a later frame: compared only with its own frame's vehicles
        (t1, 1, "car", 0.0, 20.0),
    ]
    frame = gpd.GeoDataFrame(
        {
            "time": [r[0] for r in rows],
            "link": [r[1] for r in rows],
            "kind": [r[2] for r in rows],
            "heading": 0.0,
        },
        geometry=[Point(r[3], r[4]) for r in rows],
        crs="EPSG:32633",
    )
    got = overlapping(frame)
    assert got.tolist() == [True, True, False, False, False, True, True, False, False]
    # the rows' order does not matter
    shuffled = np.random.default_rng(0).permutation(len(frame))
    assert overlapping(frame.iloc[shuffled]).tolist() == got[shuffled].tolist()
