"""Tests of the CLI a newcomer meets first: a light ``--help`` (no torch, no xarray), the messages for a
mistyped model folder or model name, the flags the error hints name (--align reproject, --time-pattern),
and ``info`` saying why the split ranges overlap."""

import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import trafficrnn
import trafficrnn.errors
from trafficrnn import Grid
from trafficrnn.cli import LAZY_COMMANDS, main
from trafficrnn.cli_options import MODEL_NAMES
from trafficrnn.io import write_stack
from trafficrnn.modelinfo import split_lines

from .test_estimator import density_series

TINY = [
    "--input-steps",
    "4",
    "--horizon",
    "2",
    "--hidden",
    "8",
    "--max-epochs",
    "1",
    "--batch-size",
    "32",
    "--quiet",
]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def cli(*args):
    """Run ``trafficrnn ARGS`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "trafficrnn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("Error: ") and text in proc.stderr, proc.stderr


# -- a light start ---------------------------------------------------------------------------------


def test_main__help_imports_no_heavy_library():
    code = (
        "import sys\nfrom trafficrnn.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = [m for m in ('torch', 'lightning', 'xarray', 'rasterio', 'pandas', 'geopandas')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in (
        "compare",
        "datasets",
        "demo",
        "evaluate",
        "forecast",
        "info",
        "inspect",
        "simulate",
        "train",
    ):
        assert f"\n  {name} " in proc.stdout


def test_main__import_trafficrnn_is_light():
    code = (
        "import sys, trafficrnn\nassert 'torch' not in sys.modules and 'xarray' not in sys.modules\n"
        "assert trafficrnn.read_stack.__module__ == 'trafficrnn.io.stack'\n"
        "assert trafficrnn.synth.make_city.__module__ == 'trafficrnn.synth.city'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_main__lazy_command_help_is_its_own(name):
    import importlib

    module, attribute, short = LAZY_COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    assert command.get_short_help_str(limit=1000) == short
    result = run(name, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_main__model_names_are_the_registry():
    from trafficrnn.models import list_models

    assert sorted(MODEL_NAMES) == list_models()


def test_defaults__one_set_for_the_api_and_the_cli():
    import inspect

    from trafficrnn.estimator import TrafficForecaster
    from trafficrnn.params import ALL_DEFAULTS, DEFAULTS, GROUPS

    signature = inspect.signature(TrafficForecaster.__init__).parameters
    assert {name: signature[name].default for name in DEFAULTS} == DEFAULTS
    assert all(signature[group].default is None for group in GROUPS)  # None: the group's defaults
    cli_names = {"model": "model_name", "max_time": "max_minutes"}
    # the CLI's spelling of a default; None: a tri-state flag that, left out, keeps the estimator's
    expected = {"hidden": "32,32", "devices": "1", "context": ""}
    tri_state = {"context_inputs", "feedback", "count_head"}
    for command in ("train", "compare"):
        options = {
            # a flag with no default given (click's UNSET) is off
            p.name: False
            if getattr(p, "is_flag", False) and p.default not in (None, True, False)
            else p.default
            for p in main.get_command(None, command).params
        }
        checked = 0
        for name, value in ALL_DEFAULTS.items():
            if name == "model" and command == "compare":
                continue  # compare trains every model (--models)
            if cli_names.get(name, name) not in options:
                continue  # no flag of its own: --set (model_kwargs / trainer_kwargs) or --quiet
            found = options[cli_names.get(name, name)]
            want = None if name in tri_state else expected.get(name, value)
            assert found == want, (command, name)
            checked += 1
        assert checked >= 20, command
    assert (
        DEFAULTS["model"] == "convgru"
        and DEFAULTS["input_steps"] == 8
        and DEFAULTS["max_time"] == 5.0
    )


def test_train__help_states_the_defaults():
    proc = cli("train", "--help")
    assert proc.returncode == 0, proc.stderr
    for text in (
        "convgru, 8 frames in, 6 leads out, at most 5 minutes (--max-minutes 0: no",
        "[default: convgru]",
        "[default: 8; x>=1]",
        "[default: 5.0; x>=0]",
    ):
        assert text in " ".join(proc.stdout.split()), text


# -- mistyped names ---------------------------------------------------------------------------------


def test_info__missing_folder_says_so_and_names_the_close_one(tmp_path):
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text("{}")
    one_line_error(
        cli("info", tmp_path / "my-modle"),
        f"model folder {tmp_path / 'my-modle'} does not exist (did you mean {tmp_path / 'my-model'}?): "
        "expected the folder that `trafficrnn train --out FOLDER`",
    )


def test_forecast__missing_model_folder(tmp_path):
    result = run("forecast", tmp_path / "nothing", tmp_path, "--out", tmp_path / "f.tif")
    assert (
        result.exit_code == 2
        and f"model folder {tmp_path / 'nothing'} does not exist:" in result.output
    )


def test_compare__unknown_model_lists_the_names(tmp_path):
    one_line_error(
        cli("compare", tmp_path, "--models", "convlstm,gru", "--out", tmp_path / "c"),
        "Invalid value for '--models': 'gru' is not a model name: expected a comma-separated list of "
        "convlstm, convgru, e.g. --models convlstm,convgru",
    )


# -- the flags the hints name ----------------------------------------------------------------------

GRID = Grid("EPSG:32633", Affine(100, 0, 500000, 0, -100, 5000000), (4, 5))
SOUTH = Grid(
    "EPSG:32733", Affine(100, 0, 500000, 0, -100, 15000000), (4, 5)
)  # the same places in UTM 33S


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """A density-only model, its stack, the same stack in UTM 33S, and one whose later half is in UTM 33S."""
    root = tmp_path_factory.mktemp("fast")
    da = density_series(periods=48)
    south = SOUTH.attach(da.drop_vars(["x", "y", "spatial_ref"]))
    write_stack(da, root / "stack")
    write_stack(south, root / "south")
    write_stack(da.isel(time=slice(0, 24)), root / "mixed")
    write_stack(south.isel(time=slice(24, None)), root / "mixed")
    result = run("train", root / "stack", "--model", "convgru", *TINY, "--out", root / "model")
    assert result.exit_code == 0, result.output
    return root


def test_forecast__align_reproject_onto_the_model_grid(grids, tmp_path):
    assert (
        run("forecast", grids / "model", grids / "stack", "--out", tmp_path / "a.tif").exit_code
        == 0
    )
    for name in ("south", "mixed"):
        result = run(
            "forecast",
            grids / "model",
            grids / name,
            "--align",
            "reproject",
            "--out",
            tmp_path / f"{name}.tif",
        )
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / f"{name}.tif") as b:
            assert b.crs == a.crs and b.transform == a.transform == GRID.transform
            np.testing.assert_allclose(b.read(), a.read(), rtol=1e-5, atol=1e-5)


def test_forecast__other_crs_hint_is_for_the_cli_too(grids, tmp_path):
    one_line_error(
        cli("forecast", grids / "model", grids / "south", "--out", tmp_path / "f.tif"),
        "(CLI: --align reproject), or beforehand: gdalwarp -t_srs EPSG:32633 -te 500000 4999600 500500 "
        "5000000 -ts 5 4 -r bilinear IN.tif OUT.tif",
    )


def test_forecast__mixed_crs_hint_is_for_the_cli_too(grids, tmp_path):
    result = run("forecast", grids / "model", grids / "mixed", "--out", tmp_path / "f.tif")
    assert (
        result.exit_code == 2
        and "disagree on CRS" in result.output
        and "(CLI: --align reproject)" in result.output
    )


def test_forecast__window_with_reproject_gives_the_gdalwarp_line(grids, tmp_path):
    result = run(
        "forecast",
        grids / "model",
        grids / "south",
        "--align",
        "reproject",
        "--window",
        2,
        "--out",
        tmp_path / "f.tif",
    )
    assert result.exit_code == 2, result.output
    assert "--align reproject is not available with --window/--scheduler" in result.output
    assert "gdalwarp -t_srs EPSG:32633 -te 500000 4999600 500500 5000000 -ts 5 4" in result.output


def test_evaluate__align_reproject(grids):
    result = run(
        "evaluate", grids / "model", grids / "south", "--align", "reproject", "--split", "all"
    )
    assert result.exit_code == 0, result.output
    assert "persistence" in result.output


def test_inspect__align_reproject(grids):
    assert run("inspect", grids / "mixed").exit_code == 2
    result = run("inspect", grids / "mixed", "--align", "reproject")
    assert result.exit_code == 0, result.output
    assert "frames     48" in result.output and "CRS        EPSG:32633" in result.output


def test_train__time_pattern_and_align_reach_read_stack(grids, tmp_path):
    result = run("train", grids / "stack", "--time-pattern", "x_%Y", *TINY, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "do not match the pattern 'x_%Y'" in result.output
    result = run("train", grids / "mixed", "--align", "reproject", *TINY, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output


# -- info ------------------------------------------------------------------------------------------


def test_split_lines__overlap_is_explained():
    split = {
        "train": ["2024-05-01T00:00", "2024-05-01T08:15"],
        "val": ["2024-05-01T07:30", "2024-05-01T10:00"],
        "test": ["2024-05-01T09:15", "2024-05-01T11:45"],
    }
    lines = split_lines(split, 4)
    assert lines[0] == (
        "split",
        "train 2024-05-01T00:00 → 2024-05-01T08:15, val 2024-05-01T07:30 → "
        "2024-05-01T10:00, test 2024-05-01T09:15 → 2024-05-01T11:45",
    )
    assert lines[1][1].startswith(
        "(val and test start input_steps = 4 frames before their first target"
    )
    assert "no frame is a target in two parts" in lines[1][1]


def test_split_lines__no_overlap_no_note():
    split = {
        "train": ["2024-05-01T00:00", "2024-05-01T08:15"],
        "val": None,
        "test": ["2024-05-01T08:30", "2024-05-01T11:45"],
    }
    assert split_lines(split, 4) == [
        (
            "split",
            "train 2024-05-01T00:00 → 2024-05-01T08:15, test 2024-05-01T08:30 → 2024-05-01T11:45",
        )
    ]


def test_info__explains_the_overlapping_split(grids):
    proc = cli("info", grids / "model")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("split "))
    assert lines[at + 1].startswith(
        " " * 11 + "(val and test start input_steps = 4 frames before their first target"
    )


def test_describe__the_python_side_of_info(grids):
    # the grid of density_series: EPSG:32633, 100 m cells from (500000, 5000000), 4 × 5 cells
    lines = dict(trafficrnn.describe(grids / "model"))
    assert lines["CRS"] == "EPSG:32633"
    assert lines["grid"] == "4 × 5 cells"
    assert lines["transform"] == "(100, 0, 500000.000000, 0, -100, 5000000.000000)"
    assert lines["bounds"] == "(500000.000000, 4999600.000000, 500500.000000, 5000000.000000)"
    assert lines["steps"].startswith("input_steps 4, horizon")
    proc = cli("info", grids / "model")
    printed = [line for line in proc.stdout.splitlines() if line.startswith("CRS ")]
    assert printed == [f"{'CRS':<10} EPSG:32633"]


def test_describe__missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(trafficrnn.errors.ModelFileError, match="does not exist"):
        trafficrnn.describe(tmp_path / "nope")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_training_options__defaults_are_the_estimators(command):
    # the CLI and the API agree: every flag named after a TrafficForecaster parameter defaults to the
    # parameter's default (after its callback), and the on/off flags left out keep the estimator's
    from trafficrnn.cli_options import estimator_options
    from trafficrnn.params import ALL_DEFAULTS

    cmd = main.get_command(click_context(), command)
    ctx = cmd.make_context(command, ["STACK", "--out", "x"])
    options = estimator_options(ctx.params)
    assert len(options) >= 20
    for name, value in options.items():
        assert value == ALL_DEFAULTS[name], name
    assert not {"context_inputs", "feedback", "count_head"} & set(options)  # flags left out


def test_training_options__flags_reach_their_parameters():
    from trafficrnn.cli_options import estimator_options

    cmd = main.get_command(click_context(), "train")
    ctx = cmd.make_context(
        "train",
        "STACK --out x --max-minutes 0 --devices 2 --context ha,1D --no-feedback "
        "--hidden 4,4".split(),
    )
    options = estimator_options(ctx.params)
    assert options["max_time"] is None and options["devices"] == 2
    assert options["context"] == ("ha", "1D") and options["feedback"] is False
    assert options["hidden"] == (4, 4)


def click_context():
    import click

    return click.Context(main)
