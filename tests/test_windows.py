"""Tests of trafficrnn.windows: the normaliser and the window dataset."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from trafficrnn.errors import ConfigError, GridError, ModelMismatchError, NotFittedError
from trafficrnn.timeaxis import time_features, window_starts
from trafficrnn.windows import Normalizer, WindowDataset


# -- normaliser ---------------------------------------------------------------------------------
def band_array():
    """(T=2, C=2, 1, 2): band 0 holds 1, 2, 3, NaN; band 1 holds 10, 10, 10, 10."""
    return np.array([[[[1.0, 2.0]], [[10.0, 10.0]]], [[[3.0, np.nan]], [[10.0, 10.0]]]])


def test_normalizer__hand_values_and_roundtrip():
    norm = Normalizer().fit(band_array())
    np.testing.assert_allclose(norm.mean_, [2.0, 10.0])
    np.testing.assert_allclose(norm.scale_, [np.sqrt(2 / 3), 1.0])  # constant band: scale 1
    z = norm.transform(band_array())
    np.testing.assert_allclose(z[0, 0, 0], [-1 / np.sqrt(2 / 3), 0.0])
    assert np.isnan(z[1, 0, 0, 1])
    np.testing.assert_allclose(norm.inverse_transform(z), band_array())


def test_normalizer__log1p_scale_dataarray_and_json():
    da = xr.DataArray(
        band_array(),
        dims=("time", "band", "y", "x"),
        coords={"band": ["a", "b"]},
        attrs={"units": "vehicles"},
    )
    norm = Normalizer(method="scale", log1p=True).fit(da)
    np.testing.assert_allclose(norm.scale_, np.log1p([3.0, 10.0]))
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    z = again.transform(da)
    assert z.attrs["units"] == "1"
    np.testing.assert_allclose(z.values[0, 1, 0], [1.0, 1.0])
    back = again.inverse_transform(z)
    np.testing.assert_allclose(back.values, da.values, rtol=1e-6)
    assert back.attrs["units"] == "vehicles"


def test_normalizer__torch_tensor_on_band_axis():
    norm = Normalizer().fit(band_array())
    t = torch.ones(3, 2, 2, 1, 2)  # (N, H, C, y, x)
    out = norm.inverse_transform(t)
    torch.testing.assert_close(
        out[0, 0, :, 0, 0], torch.tensor([2 + np.sqrt(2 / 3), 11.0], dtype=torch.float32)
    )


def test_normalizer__not_fitted_raises():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        Normalizer().transform(band_array())


def test_normalizer__band_mismatch_raises():
    norm = Normalizer().fit(
        xr.DataArray(band_array(), dims=("time", "band", "y", "x"), coords={"band": ["a", "b"]})
    )
    other = xr.DataArray(band_array(), dims=("time", "band", "y", "x"), coords={"band": ["a", "c"]})
    with pytest.raises(
        ModelMismatchError, match=r"bands \['a', 'c'\] differ from the bands fitted \['a', 'b'\]"
    ):
        norm.transform(other)


def test_normalizer__log1p_negative_raises():
    with pytest.raises(ConfigError, match="band 0 has minimum -3"):
        Normalizer(log1p=True).fit(-band_array())


def test_normalizer__all_nan_band_raises():
    data = band_array()
    data[:, 1] = np.nan
    with pytest.raises(ConfigError, match="band 1 has no finite value"):
        Normalizer().fit(data)


def test_normalizer__malformed_dict_raises():
    with pytest.raises(ConfigError, match="is malformed"):
        Normalizer.from_dict({"method": "standard"})


# -- dataset --------------------------------------------------------------------------------------
def series(t=8, tile=2):
    """Target (T, 1, 4, 5) = 100 t + 10 row + col; image (T, 2, 8, 10) repeats each cell tile x tile."""
    tt, r, c = np.meshgrid(np.arange(t), np.arange(4), np.arange(5), indexing="ij")
    target = (100 * tt + 10 * r + c)[:, None].astype(np.float32)
    image = np.repeat(
        np.repeat(np.concatenate([target, -target], axis=1), tile, axis=2), tile, axis=3
    )
    return image, target


def test_window_dataset__item_contents():
    image, target = series()
    target[4, 0, 1, 1] = np.nan
    tf = time_features(pd.date_range("2024-01-01", periods=8, freq="h"))
    ds = WindowDataset(image, target, window_starts(8, 3, 2), 3, 2, time_feats=tf, tile_size=2)
    assert len(ds) == 4
    item = ds[1]  # inputs 1..3, targets 4..5
    assert item["x"].shape == (3, 2, 8, 10) and item["y"].shape == (2, 1, 4, 5)
    torch.testing.assert_close(item["x"], torch.from_numpy(image[1:4]))
    assert not item["mask"][0, 0, 1, 1] and item["mask"].sum() == 2 * 20 - 1
    assert item["y"][0, 0, 1, 1] == 0 and item["y"][1, 0, 2, 3] == 523
    torch.testing.assert_close(item["last"], torch.from_numpy(target[3]))
    torch.testing.assert_close(item["tf_out"], torch.from_numpy(tf[4:6]))
    assert item["tf_in"].shape == (3, 4) and int(item["start"]) == 1
    torch.testing.assert_close(item["y_in"], torch.from_numpy(target[1:4]))
    assert item["mask_in"].all()


def test_window_dataset__missing_inputs_stay_nan():
    image, target = series()
    image[2, 0, 3, 3] = np.nan
    image[2, 1, 0, 0] = np.inf
    item = WindowDataset(image, target, [1], 3, 2, tile_size=2)[0]
    assert torch.isnan(item["x"][1, 0, 3, 3]) and torch.isnan(item["x"][1, 1, 0, 0])
    assert torch.isfinite(item["x"]).sum() == item["x"].numel() - 2


def test_window_dataset__crop_stays_on_grid_and_is_reproducible():
    image, target = series()
    ds = WindowDataset(image, target, [0, 1, 2], 2, 1, crop=(2, 3), tile_size=2, seed=5)
    item = ds[2]
    r0, c0 = (int(v) for v in item["origin"])
    assert item["x"].shape == (2, 2, 4, 6) and item["y"].shape == (1, 1, 2, 3)
    torch.testing.assert_close(
        item["y"][0, 0], torch.from_numpy(target[4, 0, r0 : r0 + 2, c0 : c0 + 3])
    )
    # the image crop covers exactly the cropped cells: pixel (2 i, 2 j) is cell (r0 + i, c0 + j)
    torch.testing.assert_close(
        item["x"][1, 0, ::2, ::2], torch.from_numpy(target[3, 0, r0 : r0 + 2, c0 : c0 + 3])
    )
    torch.testing.assert_close(ds[2]["origin"], item["origin"])


def test_window_dataset__image_not_multiple_of_grid_raises():
    image, target = series()
    with pytest.raises(
        GridError, match=r"inputs of \(8, 10\) px do not cover the 4 x 5 target grid at tile_size=3"
    ):
        WindowDataset(image, target, [0], 2, 1, tile_size=3)


def test_window_dataset__crop_too_large_raises():
    image, target = series()
    with pytest.raises(GridError, match=r"crop=\(5, 5\) cells exceeds the 4 x 5 grid"):
        WindowDataset(image, target, [0], 2, 1, crop=5, tile_size=2)


def test_window_dataset__start_out_of_range_raises():
    image, target = series()
    with pytest.raises(ConfigError, match="windows of 3 steps must fit in 8 time steps"):
        WindowDataset(image, target, [6], 2, 1, tile_size=2)


def test_window_dataset__future_maps_follow_targets_and_crops():
    image, target = series()
    maps = np.arange(8 * 2 * 4 * 5, dtype=np.float32).reshape(8, 2, 4, 5)
    ds = WindowDataset(image, target, [1], 3, 2, tile_size=2, future_maps=maps, crop=(2, 3), seed=1)
    item = ds[0]
    r0, c0 = (int(v) for v in item["origin"])
    torch.testing.assert_close(
        item["ctx_out"], torch.from_numpy(maps[4:6, :, r0 : r0 + 2, c0 : c0 + 3])
    )


def test_window_dataset__future_maps_wrong_shape():
    image, target = series()
    with pytest.raises(ConfigError, match="future_maps of shape"):
        WindowDataset(
            image, target, [1], 3, 2, tile_size=2, future_maps=np.zeros((7, 1, 4, 5), np.float32)
        )
