import numpy as np
import pandas as pd

from trafficrnn.synth.city import make_city
from trafficrnn.synth.render import VALID_MIN, Renderer, sun_position
from trafficrnn.synth.traffic import build_network, run_traffic
from trafficrnn.synth.vehicles import place_vehicles


def test_sun_position__vienna_summer_noon_and_midnight():
    az, el = sun_position(pd.DatetimeIndex(["2024-06-21T11:00", "2024-06-21T23:00"]), 48.2, 16.37)
    assert 62 < el[0] < 66 and 170 < az[0] < 190  # 90 - 48.2 + 23.4
    assert el[1] < -10


def _scene(hour="2024-06-04T08:00", clouds=False):
    city = make_city(128, 1.0, seed=4)
    net = build_network(city)
    run = run_traffic(city, net, pd.date_range(hour, periods=2, freq="5min"), seed=4)
    veh = place_vehicles(net, run.cell_n[-1], run.cell_speed[-1], np.random.default_rng(0))
    return city, Renderer(city, seed=4, clouds=clouds, cloud_cover=0.5), veh


def test_render__vehicles_drawn_on_road_pixels():
    city, renderer, veh = _scene()
    with_cars, _ = renderer.render(pd.Timestamp("2024-06-04T08:05"), veh)
    empty = {k: v[:0] for k, v in veh.items()}
    without, _ = renderer.render(pd.Timestamp("2024-06-04T08:05"), empty)
    col, row = ~city.transform * (veh["x"], veh["y"])
    row, col = row.astype(int), col.astype(int)
    inside = (row >= 0) & (row < 128) & (col >= 0) & (col < 128)
    assert renderer.road_mask[row[inside], col[inside]].mean() > 0.95
    diff = np.abs(with_cars.astype(int) - without.astype(int)).sum(0)
    assert (diff[row[inside], col[inside]] > 30).mean() > 0.8


def test_render__illumination_follows_time_of_day():
    city, renderer, veh = _scene()
    noon, _ = renderer.render(pd.Timestamp("2024-06-04T11:00"), veh)
    night, _ = renderer.render(pd.Timestamp("2024-06-04T00:30"), veh)
    evening, _ = renderer.render(pd.Timestamp("2024-06-04T18:00"), veh)
    assert noon.mean() > evening.mean() > night.mean()
    assert noon.dtype == np.uint8 and noon.shape == (3, 128, 128) and night.min() >= VALID_MIN


def test_render__clouds_are_nodata():
    city, renderer, veh = _scene(clouds=True)
    masks = [
        renderer.render(pd.Timestamp("2024-06-04T10:00") + pd.Timedelta(minutes=5 * i), veh)
        for i in range(40)
    ]
    assert any(m.any() for _, m in masks)
    assert not all(m.any() for _, m in masks)  # some frames are clear
    for img, mask in masks:
        assert (img[:, mask] == 0).all() and (img[:, ~mask] >= VALID_MIN).all()


def test_render__long_shadows_on_a_tiny_scene_at_dawn():
    from trafficrnn.synth.simulate import simulate

    # 64 px at 1 m: low sun casts shadows longer than the scene is wide
    result = simulate(64, days=1, step="30min", seed=1, tile_size=16, gsd=1.0)
    assert result.images.sizes["y"] == 64 and result.images.sizes["time"] == 48
