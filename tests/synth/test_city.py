import numpy as np
import pytest
import shapely

from trafficrnn.errors import ConfigError
from trafficrnn.synth.city import make_city


def test_make_city__deterministic_for_a_seed():
    a, b = make_city(256, 1.0, seed=5), make_city(256, 1.0, seed=5)
    assert a.roads.geometry.equals(b.roads.geometry)
    assert a.landuse.geometry.equals(b.landuse.geometry)
    assert a.transform == b.transform


def test_make_city__layout_varies_with_seed():
    a, b = make_city(256, 1.0, seed=1), make_city(256, 1.0, seed=2)
    assert len(a.roads) != len(b.roads) or not np.allclose(
        a.roads.total_bounds, b.roads.total_bounds
    )


def test_make_city__placed_in_utm_scene():
    city = make_city(256, 1.0, seed=0)
    assert city.roads.crs.to_epsg() == 32633 and city.landuse.crs.to_epsg() == 32633
    left, top = city.transform.c, city.transform.f
    scene = shapely.box(left, top - 256, left + 256, top)
    assert abs(left - 602065) < 2000 and abs(top - 5340354) < 2000  # near Vienna's centre
    assert city.roads.geometry.within(scene.buffer(1e-6)).all()
    assert city.landuse.geometry.within(scene.buffer(1e-6)).all()


def test_make_city__road_attributes_and_landuse_classes():
    city = make_city(512, 1.0, seed=0)
    assert set(city.roads.kind) == {"arterial", "collector", "local"}
    assert city.roads.oneway.any() and (~city.roads.oneway).any()
    assert (city.roads.lanes >= 1).all() and (city.roads.speed_limit > 0).all()
    assert {"building", "vegetation", "parking"} <= set(city.landuse["class"])
    assert (city.landuse.loc[city.landuse["class"] == "building", "height"] > 0).all()


def test_make_city__bad_size():
    with pytest.raises(ConfigError, match="size=16 is invalid"):
        make_city(16, 1.0)


def test_make_city__bad_gsd():
    with pytest.raises(ConfigError, match="gsd=0.0 is invalid"):
        make_city(256, 0.0)
