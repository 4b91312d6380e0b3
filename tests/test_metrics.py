"""Tests of trafficrnn.metrics against hand-computed numbers: masking, per-lead tables, skill, truth alignment."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, GridError, ModelMismatchError
from trafficrnn.metrics import align_truth, get_metric, mae, mape, per_lead, rmse, skill
from trafficrnn.timeaxis import make_forecast

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))
PRED = np.array([1.0, 2.0, 3.0, np.nan])
TRUTH = np.array([2.0, 2.0, 5.0, 1.0])  # errors 1, 0, 2 (last cell unknown)


@pytest.fixture
def target():
    """(time=6, band=1, 4, 5) hourly; frame t holds the value t everywhere; units vehicles."""
    times = pd.date_range("2024-05-01", periods=6, freq="h")
    values = np.broadcast_to(
        np.arange(6, dtype=np.float32)[:, None, None, None], (6, 1, 4, 5)
    ).copy()
    da = xr.DataArray(
        values,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["density"]},
        attrs={"units": "vehicles"},
    )
    return GRID.attach(da)


def batched(values, issued):
    return make_forecast(
        values,
        GRID,
        issued=pd.DatetimeIndex(issued),
        cadence="1h",
        bands=["density"],
        model="m",
        units="vehicles",
    )


def test_mae__hand_value():
    assert mae(PRED, TRUTH) == pytest.approx(1.0)


def test_rmse__hand_value():
    assert rmse(PRED, TRUTH) == pytest.approx(np.sqrt(5 / 3))


def test_mape__hand_value_in_percent():
    # |1|/2, 0/2, 2/5 -> mean 0.3
    assert mape(PRED, TRUTH) == pytest.approx(30.0)


def test_mape__zero_truth_and_threshold_are_left_out():
    truth = np.array([0.0, 2.0, 5.0, 1.0])
    assert mape(PRED, truth) == pytest.approx(20.0)  # 0 and 0.4
    assert mape(PRED, truth, threshold=2.0) == pytest.approx(40.0)  # only the 5


def test_mae__mask_and_empty():
    assert mae(PRED, TRUTH, mask=[False, True, True, True]) == pytest.approx(1.0)  # 0 and 2
    assert np.isnan(mae(PRED, TRUTH, mask=[False, False, False, True]))


def test_mae__dataarrays_in_different_dim_order():
    a = xr.DataArray([[1.0, 2.0], [3.0, 4.0]], dims=("y", "x"))
    assert mae(a, (a + 1).transpose("x", "y")) == pytest.approx(1.0)


def test_mae__shape_mismatch_raises():
    with pytest.raises(GridError, match=r"forecast of shape \(4,\), truth of shape \(3,\)"):
        mae(PRED, TRUTH[:3])


def test_mape__negative_threshold_raises():
    with pytest.raises(ConfigError, match="threshold=-1 is invalid"):
        mape(PRED, TRUTH, threshold=-1)


def test_skill__hand_values():
    assert skill(1.0, 2.0) == pytest.approx(0.5)
    model = pd.DataFrame({"mae": [1.0, 3.0]})
    reference = pd.DataFrame({"mae": [2.0, 2.0]})
    np.testing.assert_allclose(skill(model, reference)["mae"], [0.5, -0.5])


def test_get_metric__case_insensitive():
    assert get_metric("RMSE") is rmse


def test_get_metric__unknown_raises():
    with pytest.raises(
        ValueError, match=r"unknown metric 'r2': expected one of \['mae', 'mape', 'rmse'\]"
    ):
        get_metric("r2")


def test_align_truth__picks_valid_times_and_nan_outside(target):
    fc = batched(np.zeros((2, 3, 1, 4, 5)), ["2024-05-01T01:00", "2024-05-01T03:00"])
    truth = align_truth(fc, target)
    assert truth.dims == fc.dims and truth.attrs["units"] == "vehicles"
    np.testing.assert_array_equal(truth.values[0, :, 0, 0, 0], [2, 3, 4])
    np.testing.assert_array_equal(truth.values[1, :2, 0, 0, 0], [4, 5])
    assert np.isnan(truth.values[1, 2]).all()  # 06:00 is after the last frame
    assert truth.rio.transform() == GRID.transform


def test_align_truth__missing_band_raises(target):
    fc = make_forecast(
        np.zeros((1, 1, 1, 4, 5)),
        GRID,
        issued=["2024-05-01"],
        cadence="1h",
        bands=["inflow"],
        model="m",
        units="vehicles",
    )
    with pytest.raises(
        ModelMismatchError, match=r"forecast bands \['inflow'\] are not in the target bands"
    ):
        align_truth(fc, target)


def test_align_truth__other_grid_raises(target):
    other = Grid("EPSG:32633", Affine(50, 0, 500000, 0, -50, 5000000), (4, 5))
    fc = make_forecast(
        np.zeros((1, 1, 1, 4, 5)),
        other,
        issued=["2024-05-01"],
        cadence="1h",
        bands=["density"],
        model="m",
        units="vehicles",
    )
    with pytest.raises(GridError, match="differs from target grid"):
        align_truth(fc, target)


def test_per_lead__hand_values_pooled_over_issued_and_cells(target):
    # issued 01:00 and 02:00, forecasts 2 everywhere: truth at lead 1 is 2 and 3, at lead 2 is 3 and 4
    fc = batched(np.full((2, 2, 1, 4, 5), 2.0), ["2024-05-01T01:00", "2024-05-01T02:00"])
    table = per_lead(fc, target)
    assert list(table.columns) == ["mae", "rmse", "mape"]
    assert list(table.index) == [1, 2] and table.index.name == "lead"
    np.testing.assert_allclose(table["mae"], [0.5, 1.5])
    np.testing.assert_allclose(table["rmse"], [np.sqrt(0.5), np.sqrt(2.5)])
    np.testing.assert_allclose(table["mape"], [100 * (1 / 3) / 2, 100 * (1 / 3 + 2 / 4) / 2])


def test_per_lead__mask_and_nan_truth(target):
    target = target.copy()
    target.values[3, 0, 0, 0] = np.nan  # 03:00, cell (0, 0) unknown
    fc = batched(np.zeros((1, 2, 1, 4, 5)), ["2024-05-01T02:00"])
    road = xr.DataArray(np.zeros((4, 5), bool), dims=("y", "x"), coords=GRID.coords())
    road[0, :2] = True  # cells (0, 0) and (0, 1)
    table = per_lead(fc, target, metrics=("MAE",), mask=road)
    np.testing.assert_allclose(table["mae"], [3.0, 4.0])


def test_per_lead__custom_metric_and_numpy_truth():
    fc = batched(np.ones((1, 2, 1, 4, 5)), ["2024-05-01"])
    table = per_lead(
        fc, np.zeros(fc.shape), metrics={"bias": lambda p, t, mask=None: float(np.mean(p - t))}
    )
    np.testing.assert_allclose(table["bias"], [1.0, 1.0])


def test_per_lead__unit_mismatch_raises(target):
    fc = make_forecast(
        np.zeros((1, 1, 1, 4, 5)),
        GRID,
        issued=["2024-05-01"],
        cadence="1h",
        bands=["density"],
        model="m",
        units="1",
    )
    with pytest.raises(ConfigError, match="forecast units '1' differ from truth units 'vehicles'"):
        per_lead(fc, target)


def test_per_lead__no_lead_dim_raises(target):
    with pytest.raises(ConfigError, match=r"has no 'lead' dim"):
        per_lead(target, target)


def test_per_lead__truth_shape_mismatch_raises():
    fc = batched(np.ones((1, 2, 1, 4, 5)), ["2024-05-01"])
    with pytest.raises(
        GridError, match=r"truth of shape \(1, 2, 1, 4, 4\) does not match forecast"
    ):
        per_lead(fc, np.zeros((1, 2, 1, 4, 4)))
