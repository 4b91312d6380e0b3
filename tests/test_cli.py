"""Tests of the CLI: in-process with CliRunner and as a subprocess; one-line errors, exit codes."""

import json
import subprocess
import sys

import geopandas as gpd
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from trafficrnn import __version__
from trafficrnn.cli import main
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack
from trafficrnn.synth.simulate import simulate, write_simulation

from .conftest import frame_values, write_tif
from .test_estimator import density_series


def test_main__version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["inspect"],
        ["demo"],
        ["simulate"],
        ["train"],
        ["forecast"],
        ["evaluate"],
        ["compare"],
        ["info"],
    ],
)
def test_main__help_everywhere_with_examples(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command != ["simulate"]:
        assert "Example" in result.output


def test_inspect__prints_the_stack(utm_stack):
    result = CliRunner().invoke(main, ["inspect", str(utm_stack)])
    assert result.exit_code == 0, result.output
    assert "frames     3  (2024-05-01T08:00:00 → 2024-05-01T08:10:00)" in result.output
    assert "CRS        EPSG:32633" in result.output
    assert "transform  (0.5, 0, 601000.000000, 0, -0.5, 5340000.000000)" in result.output


def test_inspect__user_mistake_is_one_line(tmp_path):
    write_tif(tmp_path / "a_20240501_0800.tif", frame_values(0))
    write_tif(tmp_path / "b_20240501_0805.tif", frame_values(1), crs="EPSG:32632")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: stack files disagree on CRS")


def test_inspect__debug_shows_the_exception(tmp_path):
    write_tif(tmp_path / "a.tif", frame_values(0))
    result = CliRunner().invoke(main, ["--debug", "inspect", str(tmp_path)])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "TimestampError"


def test_main__subprocess_error_exit_code(tmp_path):
    (tmp_path / "x_20240501_0800.tif").write_text("not a raster")
    proc = subprocess.run(
        [sys.executable, "-m", "trafficrnn.cli", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "is not a readable raster" in proc.stderr and "Traceback" not in proc.stderr


def test_main__missing_path_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


# -- model commands: train, forecast, evaluate, compare, info -------------------------------

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
    """Invoke the CLI in-process with string arguments."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, text):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.output


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "city"
    write_simulation(simulate(64, days=1, step="30min", seed=1, tile_size=16, gsd=1.0), folder)
    return folder


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """A density-only stack (4 × 5 cells of 100 m, 15 min) on disk, and the model trained on it."""
    root = tmp_path_factory.mktemp("grids")
    write_stack(density_series(periods=48), root / "stack")
    result = run("train", root / "stack", "--model", "convgru", *TINY, "--out", root / "model")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def image_model(city, tmp_path_factory):
    out = tmp_path_factory.mktemp("image-model") / "model"
    result = run(
        "train",
        city / "images",
        "--vehicles",
        city / "vehicles.gpkg",
        "--roads",
        city / "roads.gpkg",
        "--tile-size",
        16,
        "--model",
        "convlstm",
        *TINY,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train__density_only_summary(grids):
    est = TrafficForecaster.load(grids / "model")
    assert est.model == "convgru" and est.density_only_ and est.horizon == 2 and est.hidden == (8,)


def test_train__context_and_cell_mean(grids, tmp_path):
    result = run(
        "train",
        grids / "stack",
        *TINY,
        "--context",
        "ha,1D",
        "--cell-mean",
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 0, result.output
    est = TrafficForecaster.load(tmp_path / "m")
    assert (
        est.context_.entries == ["ha", "1D"]
        and est.cell_mean
        and est.model_.config["static_channels"] == 1
    )


def test_train__vehicles_and_roads(image_model):
    out, output = image_model
    assert (
        "trained    convlstm on 48 frames" in output and "grid 4×4 cells, bands density" in output
    )
    assert "epochs     1" in output and "parameters " in output and f"saved      {out}" in output
    est = TrafficForecaster.load(out)
    assert (
        est.static_bands_ == ["road"]
        and est.grid_.tile_size == 16
        and est.input_bands_ == ["red", "green", "blue"]
    )
    assert (
        est.training_summary_["counting"]["stage_a"]["sub_cell_px"] == 4
    )  # the points reached the fit
    assert est.gsd_ == (1.0, 1.0)


def test_evaluate__align_resample(image_model, city, tmp_path):
    import xarray as xr
    from affine import Affine

    from trafficrnn import Grid
    from trafficrnn.io import read_stack

    images = read_stack(city / "images")
    values = images.values.repeat(2, axis=2).repeat(2, axis=3)  # the same scene at 0.5 m
    pixels = Grid(images.rio.crs, images.rio.transform() * Affine.scale(0.5), values.shape[2:])
    fine = pixels.attach(
        xr.DataArray(
            values,
            dims=images.dims,
            coords={"time": images.time.values, "band": images.band.values},
        )
    )
    write_stack(fine, tmp_path / "fine")
    result = run(
        "evaluate",
        image_model[0],
        tmp_path / "fine",
        "--vehicles",
        city / "vehicles.gpkg",
        "--split",
        "all",
    )
    assert (
        result.exit_code == 2
        and "--align resample" in result.output
        and "0.5 x 0.5" in result.output
    )
    result = run(
        "evaluate",
        image_model[0],
        tmp_path / "fine",
        "--vehicles",
        city / "vehicles.gpkg",
        "--roads",
        city / "roads.gpkg",
        "--split",
        "all",
        "--align",
        "resample",
    )
    assert result.exit_code == 0, result.output


def test_train__vehicles_outside_the_images(city, tmp_path):
    far = gpd.read_file(city / "vehicles.gpkg")
    far = far.set_geometry(far.translate(90_000, 0))
    far.to_file(tmp_path / "far.gpkg", driver="GPKG")
    one_line_error(
        run(
            "train",
            city / "images",
            "--vehicles",
            tmp_path / "far.gpkg",
            "--tile-size",
            16,
            "--out",
            tmp_path / "m",
        ),
        "far.gpkg: none of its",
    )


def test_train__model_options_reach_the_estimator(grids, tmp_path):
    result = run(
        "train",
        grids / "stack",
        *TINY,
        "--context",
        "ha",
        "--context-inputs",
        "--feedback",
        "--model",
        "convlstm",
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 0, result.output
    est = TrafficForecaster.load(tmp_path / "m")
    assert est.context_inputs and est.feedback and est.model_.config["feedback"]


def test_train__linear_lags_and_bptt_steps_reach_the_model(grids, tmp_path):
    result = run(
        "train",
        grids / "stack",
        *TINY,
        "--linear-lags",
        2,
        "--bptt-steps",
        3,
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 0, result.output
    est = TrafficForecaster.load(tmp_path / "m")
    assert (
        est.linear_lags == 2
        and est.model_.config["linear_lags"] == 2
        and est.model_.linear is not None
    )
    assert est.bptt_steps == 3


def test_train__set_reaches_the_groups(grids, tmp_path):
    """--set KEY=VALUE sets an option without a flag of its own (JSON, else a string), and wins over
    the option's flag (TINY gives --batch-size 32)."""
    result = run(
        "train",
        grids / "stack",
        *TINY,
        "--set",
        "kernel_size=5",
        "--set",
        "lr=0.002",
        "--set",
        "residual=false",
        "--set",
        "crop=[3, 3]",
        "--set",
        "precision=32-true",
        "--set",
        "batch-size=8",
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 0, result.output
    est = TrafficForecaster.load(tmp_path / "m")
    assert est.kernel_size == 5 and est.model_.config["kernel_size"] == 5
    assert est.residual is False and est.model_.config["residual"] is False
    assert est.lr == 0.002 and list(est.crop) == [3, 3] and est.precision == "32-true"
    assert est.batch_size == 8 and est.hidden == (8,)  # --hidden 8 of TINY, in model_kwargs


@pytest.mark.parametrize(
    "item, text",
    [
        (
            "lrr=0.1",
            "unknown option 'lrr' in 'lrr=0.1': --set takes the model_kwargs options (hidden,",
        ),
        (
            "input_steps=3",
            "unknown option 'input_steps' in 'input_steps=3'; input_steps has an option",
        ),
        ("lr", "'lr' is not KEY=VALUE, e.g. --set lr=0.001"),
    ],
)
def test_train__set_unknown_key_is_a_usage_error(grids, tmp_path, item, text):
    result = run("train", grids / "stack", *TINY, "--set", item, "--out", tmp_path / "m")
    assert result.exit_code == 2, result.output
    assert text in result.output and not (tmp_path / "m").exists()


def test_train__set_bad_value_refused_naming_its_group(grids, tmp_path):
    result = run("train", grids / "stack", *TINY, "--set", "kernel_size=4", "--out", tmp_path / "m")
    one_line_error(result, "model_kwargs: kernel_size=4 is invalid: expected an odd integer")
    assert not (tmp_path / "m").exists()


def test_forecast__target_inputs_model_reads_the_detections(city, tmp_path):
    model = tmp_path / "m"
    result = run(
        "train",
        city / "images",
        "--vehicles",
        city / "vehicles.gpkg",
        "--tile-size",
        16,
        "--target-inputs",
        "--count-head",
        "--model",
        "convgru",
        *TINY,
        "--out",
        model,
    )
    assert result.exit_code == 0, result.output
    one_line_error(
        run("forecast", model, city / "images", "--out", tmp_path / "f.tif"),
        "reads the observed targets of its input frames (trained with --target-inputs): pass --target",
    )
    result = run(
        "forecast",
        model,
        city / "images",
        "--vehicles",
        city / "vehicles.gpkg",
        "--out",
        tmp_path / "f.tif",
    )
    assert result.exit_code == 0, result.output
    result = run(
        "evaluate", model, city / "images", "--vehicles", city / "vehicles.gpkg", "--split", "all"
    )
    assert result.exit_code == 0 and "persistence" in result.output, result.output


def test_info__prints_what_the_model_expects(image_model):
    out, _ = image_model
    result = run("info", out)
    assert result.exit_code == 0, result.output
    for line in (
        "model      convlstm (cell lstm, hidden [8])",
        "input      red, green, blue",
        "target     density (vehicles per cell)",
        "static     road",
        "tile size  16 px per cell",
        "cadence    30min (P0DT0H30M0S)",
        "steps      input_steps 4, horizon 2",
        "CRS        EPSG:32633",
        "grid       4 × 4 cells",
        "covariates none",
        "saved by   trafficrnn ",
    ):
        assert line in result.output


def test_info__not_a_model(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04pickle")
    one_line_error(run("info", tmp_path / "model.pt"), "model.pt is not a saved model folder")


def test_info__incomplete_folder(tmp_path):
    one_line_error(run("info", tmp_path), "config.json is missing; the model folder is incomplete")


def test_forecast__road_segments_geopackage(image_model, city, tmp_path):
    out, _ = image_model
    result = run(
        "forecast",
        out,
        city / "images",
        "--segments",
        city / "roads.gpkg",
        "--out",
        tmp_path / "seg.gpkg",
    )
    assert result.exit_code == 0, result.output
    assert "(GeoPackage, road segments)" in result.output
    segments = gpd.read_file(tmp_path / "seg.gpkg", layer="segments")
    assert len(segments) == len(gpd.read_file(city / "roads.gpkg"))
    assert {"lead_30min", "lead_60min"} <= set(segments.columns)


def test_forecast__cells_geopackage_by_default(image_model, city, tmp_path):
    out, _ = image_model
    result = run("forecast", out, city / "images", "--out", tmp_path / "cells.gpkg")
    assert result.exit_code == 0, result.output
    assert "(GeoPackage, cells)" in result.output
    cells = gpd.read_file(tmp_path / "cells.gpkg", layer="cells")
    assert len(cells) == 16 and {"row", "col", "lead_30min", "lead_60min"} <= set(cells.columns)


@pytest.mark.parametrize("name", ["f.tif", "f.nc"])
def test_forecast__format_from_extension(image_model, city, tmp_path, name):
    out, _ = image_model
    result = run(
        "forecast",
        out,
        city / "images",
        "--roads",
        city / "roads.gpkg",
        "--horizon",
        1,
        "--out",
        tmp_path / name,
    )
    assert result.exit_code == 0, result.output
    assert "1 lead(s) +30min" in result.output
    if name.endswith(".tif"):
        with rasterio.open(tmp_path / name) as src:
            assert src.count == 1 and src.crs.to_epsg() == 32633 and src.transform.a == 16.0


def test_forecast__model_remembers_its_roads(image_model, city, tmp_path):
    out, _ = image_model
    assert (out / "static.tif").is_file()
    kept = run("forecast", out, city / "images", "--out", tmp_path / "kept.tif")
    assert kept.exit_code == 0, kept.output
    given = run(
        "forecast",
        out,
        city / "images",
        "--roads",
        city / "roads.gpkg",
        "--out",
        tmp_path / "given.tif",
    )
    assert given.exit_code == 0, given.output
    with rasterio.open(tmp_path / "kept.tif") as a, rasterio.open(tmp_path / "given.tif") as b:
        assert a.count == 2 and (a.read() == b.read()).all()


def test_evaluate__table_csv_json(image_model, city, tmp_path):
    out, _ = image_model
    result = run(
        "evaluate",
        out,
        city / "images",
        "--vehicles",
        city / "vehicles.gpkg",  # its roads: kept
        "--csv",
        tmp_path / "s.csv",
        "--json",
        tmp_path / "s.json",
    )
    assert result.exit_code == 0, result.output
    assert (
        "convlstm vs baselines on the test split" in result.output and "skill_rmse" in result.output
    )
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table["model"].unique()) == [
        "convlstm",
        "persistence",
        "historical_average",
        "ridge",
    ]
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["split"] == "test" and len(report["per_lead"]) == 8


def test_evaluate__whole_stack_density_only(grids):
    result = run("evaluate", grids / "model", grids / "stack", "--split", "all")
    assert result.exit_code == 0, result.output
    assert "convgru vs baselines on the all split" in result.output


def test_compare__writes_table_json_png(grids, tmp_path):
    out = tmp_path / "cmp"
    result = run("compare", grids / "stack", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "RMSE per lead" in result.output and "inference_seconds" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.csv",
        "comparison.json",
        "comparison.png",
    ]
    summary = json.loads((out / "comparison.json").read_text())["summary"]
    assert [r["model"] for r in summary] == [
        "convlstm",
        "convgru",
        "persistence",
        "historical_average",
        "ridge",
    ]


def test_compare__members_trains_ensembles(grids, tmp_path):
    out = tmp_path / "cmp"
    result = run(
        "compare",
        grids / "stack",
        *TINY,
        "--models",
        "convgru",
        "--members",
        "2",
        "--max-minutes",
        "0",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert (
        "training   convgru-ensemble2 (at most" not in result.output
    )  # --max-minutes 0: no time limit
    assert (
        "training   convgru-ensemble2 ..." in result.output
        and "1 epochs per member" in result.output
    )
    summary = json.loads((out / "comparison.json").read_text())["summary"]
    assert [(r["model"], r["members"]) for r in summary] == [
        ("convgru-ensemble2", 2),
        ("persistence", None),
        ("historical_average", None),
        ("ridge", None),
    ]


# -- user mistakes: one line, status 2, nothing written ------------------------------------


def test_forecast__missing_stack(grids, tmp_path):
    one_line_error(
        run("forecast", grids / "model", tmp_path / "nope", "--out", tmp_path / "f.tif"),
        "does not exist",
    )
    assert not (tmp_path / "f.tif").exists()


def test_train__missing_vehicles_file(grids, tmp_path):
    one_line_error(
        run(
            "train", grids / "stack", "--vehicles", tmp_path / "nope.gpkg", "--out", tmp_path / "m"
        ),
        "does not exist",
    )
    assert not (tmp_path / "m").exists()


def test_forecast__wrong_extension(grids, tmp_path):
    one_line_error(
        run("forecast", grids / "model", grids / "stack", "--out", tmp_path / "f.png"),
        "extension '.png' is not supported here; expected one of .tif, .tiff, .nc, .zarr, .gpkg",
    )
    assert not (tmp_path / "f.png").exists()


def test_forecast__segments_need_a_geopackage(grids, city, tmp_path):
    one_line_error(
        run(
            "forecast",
            grids / "model",
            grids / "stack",
            "--segments",
            city / "roads.gpkg",
            "--out",
            tmp_path / "f.nc",
        ),
        "road segments need a .gpkg output",
    )
    assert not (tmp_path / "f.nc").exists()


def test_forecast__roads_for_a_model_without_static_layers(grids, city, tmp_path):
    one_line_error(
        run(
            "forecast",
            grids / "model",
            grids / "stack",
            "--roads",
            city / "roads.gpkg",
            "--out",
            tmp_path / "f.gpkg",
        ),
        "uses no static layer (it was trained without --roads); "
        "drop --roads (for a forecast per road segment: --segments",
    )
    assert not (tmp_path / "f.gpkg").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("bands", "stack bands ['flow'] differ from the model's ['density']"),
        ("crs", "stack CRS EPSG:32632 differs from the model's EPSG:32633"),
        ("cadence", "stack cadence 0 days 00:30:00 differs from the model's 0 days 00:15:00"),
    ],
)
def test_forecast__model_does_not_match_the_stack(grids, tmp_path, case, message):
    da = density_series(periods=12, freq="30min" if case == "cadence" else "15min")
    if case == "bands":
        da = da.assign_coords(band=["flow"])
    if case == "crs":
        da = da.rio.write_crs("EPSG:32632")
    write_stack(da, tmp_path / "other")
    one_line_error(
        run("forecast", grids / "model", tmp_path / "other", "--out", tmp_path / "f.tif"), message
    )
    assert not (tmp_path / "f.tif").exists()


def test_train__output_exists(grids, tmp_path):
    (tmp_path / "model").mkdir()
    one_line_error(
        run("train", grids / "stack", *TINY, "--out", tmp_path / "model"),
        "already exists; pass overwrite=True (CLI: --overwrite)",
    )
    assert list((tmp_path / "model").iterdir()) == []


def test_evaluate__csv_exists(grids, tmp_path):
    (tmp_path / "s.csv").write_text("keep")
    one_line_error(
        run("evaluate", grids / "model", grids / "stack", "--csv", tmp_path / "s.csv"),
        "already exists",
    )
    assert (tmp_path / "s.csv").read_text() == "keep"


def test_compare__output_exists(grids, tmp_path):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "comparison.png").write_text("keep")
    one_line_error(
        run("compare", grids / "stack", *TINY, "--out", tmp_path / "cmp"),
        "comparison.png already exists",
    )
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["comparison.png"]


def test_forecast__horizon_longer_than_trained(grids, tmp_path):
    one_line_error(
        run(
            "forecast", grids / "model", grids / "stack", "--horizon", 5, "--out", tmp_path / "f.nc"
        ),
        "horizon=5 is longer than the 2 steps the model was trained for",
    )
    assert not (tmp_path / "f.nc").exists()


def test_train__target_and_vehicles(city, tmp_path):
    one_line_error(
        run(
            "train",
            city / "images",
            "--target",
            city / "density",
            "--vehicles",
            city / "vehicles.gpkg",
            "--tile-size",
            16,
            "--out",
            tmp_path / "m",
        ),
        "are both given: pass one of them",
    )
    assert not (tmp_path / "m").exists()


def test_train__empty_vehicles(city, tmp_path):
    empty = gpd.read_file(city / "vehicles.gpkg").iloc[:0]
    empty.to_file(tmp_path / "empty.gpkg", driver="GPKG")
    one_line_error(
        run(
            "train",
            city / "images",
            "--vehicles",
            tmp_path / "empty.gpkg",
            "--tile-size",
            16,
            "--out",
            tmp_path / "m",
        ),
        "empty.gpkg is empty (0 features)",
    )
    assert not (tmp_path / "m").exists()


def test_train__no_training_window_leaves_no_model(grids, tmp_path):
    one_line_error(
        run(
            "train",
            grids / "stack",
            "--input-steps",
            40,
            "--horizon",
            6,
            "--quiet",
            "--out",
            tmp_path / "m",
        ),
        "one window needs input_steps + horizon = 40 + 6 = 46",
    )
    assert not (tmp_path / "m").exists()


def test_train__bad_hidden(grids, tmp_path):
    one_line_error(
        run("train", grids / "stack", "--hidden", "32,x", "--out", tmp_path / "m"),
        "is not a comma-separated list of positive channel counts",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--horizon", "5"], "horizon=5 is longer than the 2 steps the model was trained for"),
        (["--out-ext", ".shp"], "extension '.shp' is not supported here"),
    ],
)
def test_forecast__subprocess_one_line(grids, tmp_path, args, message):
    out = tmp_path / ("f" + (args[1] if args[0] == "--out-ext" else ".tif"))
    extra = [] if args[0] == "--out-ext" else args
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficrnn.cli",
            "forecast",
            str(grids / "model"),
            str(grids / "stack"),
            *extra,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().count("\n") == 0
        and message in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert not out.exists()


def test_forecast__windowed_cog_equals_whole_area(grids, tmp_path):
    whole = run("forecast", grids / "model", grids / "stack", "--out", tmp_path / "a.tif")
    tiled = run(
        "forecast", grids / "model", grids / "stack", "--out", tmp_path / "b.tif", "--window", 2
    )
    assert whole.exit_code == 0 and tiled.exit_code == 0, tiled.output
    import numpy as np
    import rasterio

    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-5)
    # the streamed COG gets the QGIS style to_geotiff writes: the same legend
    assert (tmp_path / "b.qml").read_text() == (tmp_path / "a.qml").read_text()


def test_forecast__window_needs_a_tif(grids, tmp_path):
    one_line_error(
        run(
            "forecast", grids / "model", grids / "stack", "--out", tmp_path / "f.nc", "--window", 2
        ),
        "stream the forecast into a COG or a Zarr store",
    )


def test_datasets__registered_and_one_line_errors(tmp_path):
    result = run(
        "datasets",
        "export",
        "nyc-bike",
        tmp_path / "out",
        "--start",
        "2016-08-01",
        "--end",
        "2016-08-01T01:00",
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.tif"))) == 3
    one_line_error(run("datasets", "export", "no-such-set", tmp_path / "x"), "no-such-set")
