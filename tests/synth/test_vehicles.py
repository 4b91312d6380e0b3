import numpy as np
import pandas as pd
import shapely

from trafficrnn.synth.city import make_city
from trafficrnn.synth.traffic import build_network, run_traffic
from trafficrnn.synth.vehicles import KIND_NAMES, place_vehicles, vehicles_frame


def _frame(seed=0):
    city = make_city(192, 1.0, seed=seed)
    net = build_network(city)
    times = pd.date_range("2024-06-04T05:30", periods=2, freq="5min")
    run = run_traffic(city, net, times, seed=seed)
    return city, net, run


def test_place_vehicles__counts_follow_cell_densities():
    city, net, run = _frame()
    veh = place_vehicles(net, run.cell_n[-1], run.cell_speed[-1], np.random.default_rng(0))
    per_cell = np.bincount(veh["cell"], minlength=len(net.cell_len))
    assert np.all(per_cell >= np.floor(run.cell_n[-1])) and np.all(
        per_cell <= np.ceil(run.cell_n[-1])
    )
    assert len(veh["x"]) > 20


def test_place_vehicles__on_the_road_and_heading_along_it():
    city, net, run = _frame()
    veh = place_vehicles(net, run.cell_n[-1], run.cell_speed[-1], np.random.default_rng(1))
    roads = city.roads
    carriageway = shapely.union_all(
        shapely.buffer(
            roads.geometry.to_numpy(), roads.width.to_numpy() / 2 + 0.5, cap_style="square"
        )
    )
    points = shapely.points(veh["x"], veh["y"])
    assert shapely.contains(carriageway, points).all()
    lk = net.link.iloc[veh["link"]]
    expected = np.degrees(np.arctan2(lk.x1 - lk.x0, lk.y1 - lk.y0)) % 360
    np.testing.assert_allclose(veh["heading"], expected, atol=1e-6)
    assert (veh["speed"] > 0).all() and (veh["speed"] < 60).all()


def test_vehicles_frame__columns_and_crs():
    city, net, run = _frame()
    rng = np.random.default_rng(2)
    parts = [place_vehicles(net, n, v, rng) for n, v in zip(run.cell_n, run.cell_speed)]
    gdf = vehicles_frame(parts, run.times, city.crs)
    assert list(gdf.columns) == ["time", "heading", "speed", "kind", "link", "geometry"]
    assert gdf.crs.to_epsg() == 32633 and set(gdf["kind"].cat.categories) == set(KIND_NAMES)
    assert gdf["time"].nunique() == 2
