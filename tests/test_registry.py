"""Tests of the one registry helper (trafficrnn.registry.Registry) and of every family built on it: models,
cells, baselines, metrics, datasets and the writers chosen by extension (trafficrnn.io.get_writer)."""

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine

from trafficrnn import Grid
from trafficrnn.errors import ConfigError, ExportError, UnknownFormatError, UnknownNameError
from trafficrnn.registry import Registry, lookup

GRID = Grid("EPSG:32633", Affine(8, 0, 601000, 0, -8, 5340000), (3, 4), 16)
ISSUED = pd.Timestamp("2024-05-01 08:55")


def tiny_forecast(leads=2):
    lead = pd.to_timedelta([15 * (i + 1) for i in range(leads)], unit="min")
    da = xr.DataArray(
        np.arange(leads * 12, dtype="float32").reshape(leads, 1, 3, 4),
        dims=("lead", "band", "y", "x"),
        coords={"lead": lead, "band": ["density"], "valid_time": ("lead", ISSUED + lead)},
    )
    da = GRID.attach(da)
    da.attrs.update(issued=ISSUED.isoformat(), model="convgru", units="vehicles per cell")
    return da


# -- the helper ------------------------------------------------------------------------------------


def test_registry__get_names_and_mapping_view():
    reg = Registry("shape", {"square": 4})
    reg.register("hexagon", 6, sides=6)

    @reg.register("triangle", sides=3)
    def triangle():
        return 3

    assert reg.get("SQUARE") == 4 and reg["hexagon"] == 6 and reg.get("Triangle") is triangle
    assert reg.names() == ["hexagon", "square", "triangle"]  # sorted
    assert list(reg) == ["square", "hexagon", "triangle"] and len(reg) == 3  # registration order
    assert "Square" in reg and "circle" not in reg and None not in reg
    assert reg.info("triangle").sides == 3 and reg.info("triangle").name == "triangle"


def test_registry__unknown_name_lists_the_valid_ones_and_the_closest():
    reg = Registry("shape", {"square": 4, "hexagon": 6})
    with pytest.raises(
        UnknownNameError,
        match=r"unknown shape 'sqare': expected one of \['hexagon', 'square'\]; "
        r"did you mean 'square'\?",
    ) as info:
        reg.get("sqare")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownNameError, match=r"expected one of \['hexagon', 'square'\]$"):
        reg.get("circle")  # nothing close: no hint
    with pytest.raises(UnknownNameError):
        reg.info("circle")


def test_registry__defaults_and_custom_normalize():
    reg = Registry(
        "dataset",
        normalize=lambda n: str(n).lower().replace("_", "-"),
        defaults={"covariates": None},
    )
    reg.register("nyc-bike", "loader")
    assert reg.get("NYC_BIKE") == "loader" and reg.info("nyc_bike").covariates is None


def test_registry__twice_the_same_name_refused():
    reg = Registry("shape", {"square": 4})
    with pytest.raises(ValueError, match="shape 'Square' is registered already"):
        reg.register("Square", 5)


def test_registry__lazy_entries_import_on_first_get():
    reg = Registry("thing")
    reg.register_lazy("dedent", "textwrap:dedent", pure=True)
    assert reg.info("dedent").pure is True  # imports nothing
    import textwrap

    assert reg.get("dedent") is textwrap.dedent
    with pytest.raises(ValueError, match="expected 'package.module:attribute'"):
        reg.register_lazy("bad", "textwrap.dedent")


def test_lookup__a_plain_mapping_still_works():
    assert lookup({"a": 1}, "A", "letter") == 1
    with pytest.raises(UnknownNameError, match=r"unknown letter 'b': expected one of \['a'\]"):
        lookup({"a": 1}, "b", "letter")


# -- the families ----------------------------------------------------------------------------------


def test_models__registry_and_get_model():
    from trafficrnn.models import MODELS, EncoderForecaster, get_model, list_models
    from trafficrnn.params import MODEL_NAMES

    assert list_models() == MODELS.names() == ["convgru", "convlstm"] and MODEL_NAMES == tuple(
        MODELS
    )
    assert {name: MODELS.info(name).cell for name in MODELS} == {
        "convlstm": "lstm",
        "convgru": "gru",
    }
    net = get_model("ConvLSTM", in_channels=1, out_channels=1, hidden_channels=[4])
    assert isinstance(net, EncoderForecaster) and net.config["cell"] == "lstm"
    with pytest.raises(
        UnknownNameError,
        match=r"unknown model 'convlstn': expected one of \['convgru', 'convlstm'\]; "
        r"did you mean 'convlstm'\?",
    ):
        get_model("convlstn", in_channels=1)


def test_models__names_without_torch():
    code = (
        "import sys\nfrom trafficrnn.models import MODELS, list_models\nfrom trafficrnn.io import WRITERS\n"
        "assert list_models() == ['convgru', 'convlstm'] and WRITERS.info('.tif').streams\n"
        "assert 'torch' not in sys.modules and 'rasterio' not in sys.modules, sorted(sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_cells__get_cell():
    from trafficrnn.models import get_cell
    from trafficrnn.models.cells import CELLS, ConvGRUCell, ConvLSTMCell

    assert (
        get_cell("GRU") is ConvGRUCell
        and CELLS.get("lstm") is ConvLSTMCell
        and CELLS.names() == ["gru", "lstm"]
    )
    with pytest.raises(
        UnknownNameError, match=r"unknown cell 'rnn': expected one of \['gru', 'lstm'\]"
    ):
        get_cell("rnn")


def test_baselines__get_baseline_one_signature():
    from trafficrnn.models.baselines import (
        BASELINES,
        HistoricalAverage,
        Persistence,
        RidgeBaseline,
        get_baseline,
    )

    assert list(BASELINES) == ["persistence", "historical_average", "ridge"]
    assert isinstance(get_baseline("Persistence"), Persistence)
    assert isinstance(
        get_baseline("historical_average", horizon=4), HistoricalAverage
    )  # any horizon: ignored
    ridge = get_baseline("ridge", horizon=4, lags=2)
    assert isinstance(ridge, RidgeBaseline) and ridge.horizon == 4 and ridge.lags == 2
    assert [BASELINES.get(n).fits_horizon for n in BASELINES] == [False, False, True]
    with pytest.raises(
        UnknownNameError,
        match=r"unknown baseline 'arima': expected one of \['historical_average', "
        r"'persistence', 'ridge'\]",
    ):
        get_baseline("arima")


def test_metrics__get_metric():
    from trafficrnn.metrics import METRICS, get_metric, mae, rmse

    assert (
        get_metric("MAE") is mae
        and METRICS["rmse"] is rmse
        and METRICS.names() == ["mae", "mape", "rmse"]
    )
    with pytest.raises(
        UnknownNameError,
        match=r"unknown metric 'rmes': expected one of \['mae', 'mape', 'rmse'\]; "
        r"did you mean 'rmse'\?",
    ):
        get_metric("rmes")


def test_datasets__get_dataset():
    from trafficrnn.datasets import COVARIATES, DATASETS, get_dataset, nyc_bike, nyc_bike_covariates

    assert get_dataset("NYC_bike") is nyc_bike and DATASETS.names() == ["nyc-bike"]
    assert "nyc_bike" in COVARIATES and COVARIATES["nyc-bike"] is nyc_bike_covariates
    with pytest.raises(
        UnknownNameError, match=r"unknown dataset 'taxi': expected one of \['nyc-bike'\]"
    ):
        get_dataset("taxi")


# -- the writers, by extension ---------------------------------------------------------------------


def test_get_writer__each_extension():
    from trafficrnn.io import WRITERS, get_writer, to_geopackage, to_geotiff, to_netcdf, to_zarr

    assert list(WRITERS) == [".tif", ".tiff", ".nc", ".zarr", ".gpkg"]
    assert get_writer("f.tif") is to_geotiff and get_writer("F.TIFF") is to_geotiff
    assert get_writer("f.nc") is to_netcdf and get_writer("dir.v2/f.gpkg") is to_geopackage
    assert get_writer("big.zarr") is to_zarr
    assert [n for n in WRITERS if WRITERS.info(n).segments] == [".gpkg"]
    assert [n for n in WRITERS if WRITERS.info(n).streams] == [".tif", ".tiff", ".zarr"]


@pytest.mark.parametrize("name", ["f.png", "f", "f.tif.bak"])
def test_get_writer__unknown_extension_refused(name):
    from trafficrnn.io import get_writer

    with pytest.raises(
        UnknownFormatError,
        match=r"unknown file extension '.*': expected one of "
        r"\['.gpkg', '.nc', '.tif', '.tiff', '.zarr'\]",
    ) as info:
        get_writer(name)
    assert (
        isinstance(info.value, ExportError)
        and isinstance(info.value, ConfigError)
        and name in str(info.value)
    )


def test_write__geotiff(tmp_path):
    from trafficrnn.io import write

    path = write(tiny_forecast(), tmp_path / "f.tif")
    with rasterio.open(path) as src:
        assert src.count == 2 and src.crs.to_epsg() == 32633 and (src.height, src.width) == (3, 4)
        np.testing.assert_array_equal(src.read(2), np.arange(12, 24, dtype="float32").reshape(3, 4))


def test_write__netcdf(tmp_path):
    from trafficrnn.io import read_netcdf, write

    path = write(tiny_forecast(), tmp_path / "f.nc")
    with xr.open_dataset(path) as ds:
        assert "density" in ds.data_vars
    back = read_netcdf(path)
    assert back.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(back.values.ravel(), np.arange(24, dtype="float32"))


def test_write__geopackage(tmp_path):
    from trafficrnn.io import write

    path = write(tiny_forecast(), tmp_path / "f.gpkg")
    cells = gpd.read_file(path, layer="cells")
    assert len(cells) == 12 and cells.crs.to_epsg() == 32633


def test_write__refuses_an_existing_file(tmp_path):
    from trafficrnn.errors import OutputExistsError
    from trafficrnn.io import write

    (tmp_path / "f.nc").write_text("")
    with pytest.raises(OutputExistsError):
        write(tiny_forecast(), tmp_path / "f.nc")
