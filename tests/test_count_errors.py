"""Tests of benchmarks/count_errors.py: its overlap finder (which vehicles' bodies intersect
another's on their link: the rendered frames where no counter can separate them), and the eight
orientations its --dihedral probe counts each frame in, turned back onto the grid."""

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from count_errors import dihedral_counts, overlapping  # noqa: E402  (benchmarks/ is not a package)


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


def test_dihedral_counts__every_orientation_turned_back_onto_the_grid():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 8, 8)).astype("float32")  # 2 frames, 3 bands, 4 x 4 cells of 2 px
    x[:, :, 0:2, 4:6] += 10  # one bright cell, off every axis of symmetry

    def count(a):  # the pixels' sum per 2 px cell of the first band: (frames, 1, rows, columns)
        t, _, h, w = a.shape
        return a[:, :1].reshape(t, 1, h // 2, 2, w // 2, 2).sum(axis=(3, 5))

    turned = dihedral_counts(count, x)
    assert len(turned) == 8
    np.testing.assert_array_equal(turned[0], count(x))
    for c in turned[1:]:  # the sums of a cell do not depend on the orientation it was read in
        assert c.shape == (2, 1, 4, 4)
        np.testing.assert_allclose(c, turned[0], rtol=1e-6)
    assert np.unravel_index(np.argmax(turned[5][0, 0]), (4, 4)) == (0, 2)
