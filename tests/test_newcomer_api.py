"""The Python API a newcomer meets first: names and settings refused at construction (scikit-learn
conventions kept), outputs checked before a long run (``check_outputs``, the README's ten lines run
twice), a mistyped model folder, and a light ``trafficrnn info`` (no torch)."""

import re
import subprocess
import sys

import numpy as np
import pytest
from affine import Affine
from sklearn.base import clone

import trafficrnn as tr
from trafficrnn import TrafficForecaster
from trafficrnn.errors import ConfigError, ExportError, GridError, ModelFileError, OutputExistsError
from trafficrnn.grid import check_north_up
from trafficrnn.io import check_outputs
from trafficrnn.params import CHECKS, GROUP_OF, MODEL_NAMES, PRECISIONS, grouped

from .test_estimator import density_series
from .test_readme import ten_lines

# -- names and settings refused at construction ----------------------------------------------------


def test_trafficforecaster__unknown_model_refused_at_construction():
    with pytest.raises(
        ConfigError,
        match=r"model='convlstn' is not a model name: expected one of convlstm, "
        r"convgru \(case-insensitive\)",
    ):
        TrafficForecaster("convlstn")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"model": None}, "model=None is not a model name"),
        (
            {"precision": "bf17-mixed"},
            r"precision='bf17-mixed' is invalid: expected 'auto', '32-true', 'bf16-mixed'",
        ),
        ({"precision": True}, "precision=True is invalid"),
        (
            {"timezone": "Europe/Vienne"},
            r"timezone='Europe/Vienne' is not a known IANA zone: expected a name such as",
        ),
        (
            {"context": ("ha", "1 week-ish")},
            r"context entry '1 week-ish' is invalid: expected 'ha' or a duration",
        ),
        (
            {"context": "ha"},
            r"context='ha' is invalid: expected a tuple such as \('ha', '1D', '7D'\)",
        ),
        (
            {"hidden": (32, 0)},
            r"hidden=\(32, 0\) is invalid: expected a list of positive channel counts",
        ),
        ({"hidden": 32}, "hidden=32 is invalid"),
        ({"input_steps": 0}, "input_steps=0 is invalid: expected a positive integer"),
        ({"horizon": 2.0}, "horizon=2.0 is invalid: expected a positive integer"),
        ({"kernel_size": 4}, "kernel_size=4 is invalid: expected an odd integer such as 3"),
        (
            {"tile_size": 0},
            "tile_size=0 is invalid: expected a positive integer, or None for density grids",
        ),
        ({"crop": (4, 0)}, r"crop=\(4, 0\) is invalid: expected a crop size in cells"),
        (
            {"val": 1.2},
            r"val=1.2 is invalid: expected a fraction in \[0, 1\), or the first time of the val part",
        ),
        ({"test": "last week"}, "test='last week' is invalid"),
        (
            {"linear_lags": -1, "input_steps": 6},
            r"linear_lags=-1 is invalid: expected an integer from 0 \(no linear "
            r"term\) to input_steps=6",
        ),
        (
            {"bptt_steps": 0, "input_steps": 6},
            "bptt_steps=0 is invalid: expected an integer from 1 to input_steps=6",
        ),
        ({"residual": "yes"}, "residual='yes' is invalid: expected True or False"),
        ({"lr": 0}, "lr=0 is invalid: expected a number > 0"),
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001 is invalid: expected a number >= 0"),
        (
            {"max_time": 0},
            r"max_time=0 is invalid: expected minutes > 0, or None for no time limit",
        ),
        ({"patience": -1}, r"patience=-1 is invalid: expected an integer >= 0"),
    ],
)
def test_trafficforecaster__bad_value_refused_at_construction(params, match):
    with pytest.raises(ConfigError, match=match):
        TrafficForecaster(**grouped(params))  # each option in its group


@pytest.mark.parametrize("name", [*MODEL_NAMES, "ConvLSTM", "CONVGRU"])
def test_trafficforecaster__every_model_name_accepted(name):
    assert (
        TrafficForecaster(name).model == name
    )  # stored as given (sklearn's clone checks identity)


def test_trafficforecaster__every_registered_model_accepted():
    from trafficrnn.models import list_models

    assert sorted(MODEL_NAMES) == list_models()
    for name in list_models():
        TrafficForecaster(name)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_trafficforecaster__every_lightning_precision_accepted(precision):
    assert TrafficForecaster(trainer_kwargs=dict(precision=precision)).precision == precision


#: valid values away from the defaults, of every type a parameter takes
VALID = dict(
    model="ConvLSTM",
    input_steps=np.int64(4),
    horizon=2,
    tile_size=16,
    timezone="America/New_York",
    max_time=0.5,
    val="2024-05-01T06:00",
    test=0.0,
    context=["ha", "1D"],
    progress=False,
    model_kwargs=dict(
        hidden=[8, 8],
        kernel_size=5,
        time_features=np.bool_(False),
        log1p=True,
        linear_lags=0,
    ),
    trainer_kwargs=dict(
        lr=np.float32(1e-3),
        weight_decay=0,
        patience=0,
        crop=(4, 6),
        precision="bf16-mixed",
        bptt_steps=np.int32(2),
    ),
)


def test_clone__keeps_every_valid_value():
    est = TrafficForecaster(**VALID)
    again = clone(
        est
    )  # sklearn builds TrafficForecaster(**copies of the params) and checks nothing was changed
    assert again is not est
    for key, value in est.get_params().items():
        assert again.get_params()[key] == value, key


def test_clone__of_the_default():
    assert clone(TrafficForecaster()).get_params() == TrafficForecaster().get_params()


def test_set_params__validates_like_the_constructor():
    est = TrafficForecaster("convlstm", horizon=3)
    with pytest.raises(
        ConfigError, match="model='gru' is not a model name: expected one of convlstm, convgru"
    ):
        est.set_params(horizon=4, model="gru")
    assert est.model == "convlstm" and est.horizon == 3  # nothing set when one value is refused


def test_set_params__quotes_the_current_parameters():
    est = TrafficForecaster(input_steps=8)
    with pytest.raises(
        ConfigError, match="bptt_steps=0 is invalid: expected an integer from 1 to input_steps=8"
    ):
        est.set_params(trainer_kwargs=dict(bptt_steps=0))


def test_set_params__unknown_name():
    with pytest.raises(
        ConfigError, match="unknown parameter 'depth': expected one of model, input_steps"
    ):
        TrafficForecaster().set_params(depth=3)


def test_set_params__combinations_left_to_fit():
    # each value is valid alone: set one after the other, as sklearn's set_params may
    est = TrafficForecaster("convgru", input_steps=2, trainer_kwargs=dict(bptt_steps=2))
    est.set_params(trainer_kwargs=dict(bptt_steps=3))  # above input_steps=2 until the next call
    est.set_params(input_steps=3)
    assert est.get_params()["trainer_kwargs"]["bptt_steps"] == 3


def test_check_params__covers_the_documented_settings():
    from trafficrnn.estimator import PARAMS
    from trafficrnn.params import ALL_DEFAULTS, GROUPS

    assert set(PARAMS) == set(ALL_DEFAULTS) - set(GROUP_OF) | set(GROUPS)
    left_to_fit = {"encoder_width", "encoder_depth", "seed", "accelerator", "devices", "strategy"}
    assert set(CHECKS) == set(ALL_DEFAULTS) - left_to_fit  # the options of the groups included


# -- outputs checked before a long run -----------------------------------------------------------


def test_check_outputs__existing_output(tmp_path):
    (tmp_path / "forecast.tif").write_bytes(b"")
    with pytest.raises(
        OutputExistsError,
        match=r"forecast.tif already exists; pass overwrite=True \(CLI: "
        r"--overwrite\) to replace it",
    ):
        check_outputs([tmp_path / "forecast.tif", tmp_path / "my-model"])


def test_check_outputs__existing_model_folder(tmp_path):
    (tmp_path / "my-model").mkdir()
    with pytest.raises(OutputExistsError, match="my-model already exists"):
        check_outputs([tmp_path / "forecast.tif", tmp_path / "my-model"])


def test_check_outputs__overwrite_accepts_them(tmp_path):
    (tmp_path / "forecast.tif").write_bytes(b"")
    paths = check_outputs([str(tmp_path / "forecast.tif"), None, tmp_path / "m"], overwrite=True)
    assert paths == [tmp_path / "forecast.tif", tmp_path / "m"]


def test_check_outputs__one_path(tmp_path):
    assert check_outputs(tmp_path / "forecast.nc") == [tmp_path / "forecast.nc"]


def test_check_outputs__missing_folder(tmp_path):
    with pytest.raises(
        ExportError, match=r"forecast.tif: folder .*out does not exist; create it first"
    ):
        check_outputs([tmp_path / "out" / "forecast.tif"])


def test_check_outputs__same_path_twice(tmp_path):
    with pytest.raises(ExportError, match=r"f.tif is given twice as an output"):
        check_outputs([tmp_path / "f.tif", tmp_path / "." / "f.tif"])


def test_check_outputs__suffixes(tmp_path):
    with pytest.raises(
        ExportError, match=r"extension '.png' is not supported here; expected one of .tif, .nc"
    ):
        check_outputs([tmp_path / "f.png"], suffixes=(".tif", ".nc"))


def test_check_outputs__top_level_name():
    assert tr.check_outputs is check_outputs and "check_outputs" in tr.__all__


def test_readme_ten_lines__second_run_refuses_before_reading_anything(tmp_path, monkeypatch):
    code = ten_lines()
    first = next(line for line in code.splitlines() if line and not line.startswith("import"))
    assert first.startswith("tr.check_outputs(")
    monkeypatch.chdir(
        tmp_path
    )  # no data/sample here: a refusal after it would be an InputFileError
    (tmp_path / "forecast.tif").write_bytes(b"")  # left by the first run
    with pytest.raises(OutputExistsError, match="forecast.tif already exists"):
        exec(compile(code, "README.md", "exec"), {})


# -- a mistyped or misplaced model folder ----------------------------------------------------------


def test_load__missing_folder_says_so_and_names_the_close_one(tmp_path):
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text("{}")
    with pytest.raises(
        ModelFileError,
        match=re.escape(
            f"model folder {tmp_path / 'my-modle'} does not exist (did you mean {tmp_path / 'my-model'}?): expected "
            "the folder that `trafficrnn train --out FOLDER` (or TrafficForecaster.save) writes"
        ),
    ):
        TrafficForecaster.load(tmp_path / "my-modle")


def test_load__missing_folder_without_a_close_one(tmp_path):
    with pytest.raises(
        ModelFileError, match=r"model folder .*nothing-here does not exist: expected the folder"
    ):
        tr.load(tmp_path / "nothing-here")


def test_load__a_file(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ModelFileError, match="model.pt is not a saved model folder but a file"):
        TrafficForecaster.load(tmp_path / "model.pt")


# -- hints a GIS user can act on -------------------------------------------------------------------


def test_check_north_up__rotated_gives_a_gdalwarp_line():
    with pytest.raises(
        GridError, match=r"not north-up .*warp them north-up first, e.g. gdalwarp IN.tif OUT.tif"
    ) as err:
        check_north_up(Affine(8, 0.5, 601000, 0.5, -8, 5340000))
    assert "align='reproject'" not in str(err.value)  # it would not unrotate them


# -- a light start ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    TrafficForecaster(
        "convgru",
        input_steps=4,
        horizon=2,
        progress=False,
        model_kwargs=dict(hidden=(8,)),
        trainer_kwargs=dict(max_epochs=1, batch_size=32),
    ).fit(density_series(periods=48)).save(path)
    return path


def test_info__imports_no_torch(saved):
    code = (
        "import sys\nfrom trafficrnn.cli import main\ntry:\n    main(['info', sys.argv[1]])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "heavy = [m for m in ('torch', 'lightning', 'sklearn', 'geopandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "model      convgru (cell gru, hidden [8])" in proc.stdout


def test_read_config__imports_no_torch(saved):
    code = (
        "import sys\nfrom trafficrnn.estimation.persist import read_config\n"
        "assert read_config(sys.argv[1])['model'] == 'convgru'\n"
        "assert 'torch' not in sys.modules and 'trafficrnn.models.forecaster' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_io__names_imported_on_first_use():
    code = (
        "import sys\nimport trafficrnn.io as io\nfrom trafficrnn.io import check_outputs\n"
        "assert not {'rasterio', 'xarray', 'geopandas'} & set(sys.modules), sorted(sys.modules)\n"
        "from trafficrnn.io import read_stack, to_geotiff\n"
        "assert read_stack.__module__ == 'trafficrnn.io.stack' and to_geotiff.__module__ == 'trafficrnn.io.export'\n"
        "assert io.export.to_geotiff is to_geotiff and io.rasterize_points.__module__ == 'trafficrnn.io.vector'\n"
        "assert set(io.__all__) <= set(dir(io))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_io__unknown_name():
    import trafficrnn.io

    with pytest.raises(AttributeError, match="module 'trafficrnn.io' has no attribute 'read_stak'"):
        trafficrnn.io.read_stak  # noqa: B018


def test_load__rebuilds_the_model_with_its_imports_made_on_use(saved):
    est = TrafficForecaster.load(saved)
    assert est.model == "convgru" and est.is_fitted and est.target_normalizer_ is not None
