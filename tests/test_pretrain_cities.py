"""Tests of benchmarks/pretrain.py's cities laid side by side (the scene the packaged ConvLSTM was
pretrained on): each city keeps its pixels, counts and points, in its own quadrant of one
georeferenced scene."""

import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from trafficrnn import Grid
from trafficrnn.io import rasterize_points
from trafficrnn.synth import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from pretrain import side_by_side  # noqa: E402  (benchmarks/ is not a package)


@pytest.fixture(scope="module")
def cities():
    return [
        simulate(128, days=0.05, step="15min", seed=seed, start="2024-05-27", tile_size=64)
        for seed in (21, 22, 23, 24)
    ]


def test_side_by_side__each_city_in_its_quadrant_of_one_georeferenced_scene(cities):
    parts = [(c.images, c.density, c.vehicles) for c in cities]
    images, density, points = side_by_side(parts, 2)
    first = cities[0].images.rio.transform()
    # the first city's top-left corner, its pixel size; 2 x 2 cities of 128 px (2 x 2 cells of 64 px)
    assert images.rio.transform() == Affine(1.0, 0.0, first.c, 0.0, -1.0, first.f)
    assert density.rio.transform() == Affine(64.0, 0.0, first.c, 0.0, -64.0, first.f)
    assert images.shape[2:] == (256, 256) and density.shape[2:] == (4, 4)
    assert images.rio.crs == cities[0].images.rio.crs == density.rio.crs
    for k, city in enumerate(cities):
        row, col = divmod(k, 2)
        pixels = images.values[:, :, row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
        cells = density.values[:, :, row * 2 : (row + 1) * 2, col * 2 : (col + 1) * 2]
        np.testing.assert_array_equal(pixels, city.images.values)
        np.testing.assert_array_equal(cells, city.density.values)
    # the points moved with their city: counted on the scene's grid, they give its density
    assert len(points) == sum(len(c.vehicles) for c in cities)
    counted = rasterize_points(points, Grid.from_image(images, 64), times=density.time.values)
    np.testing.assert_array_equal(counted.values, density.values)


def test_side_by_side__one_city_unchanged(cities):
    parts = (cities[0].images, cities[0].density, cities[0].vehicles)
    assert side_by_side([parts], 1) is parts
