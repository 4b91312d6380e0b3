"""A dataset's published split travels with the data (nyc_bike → datasets export → read_stack) and is the
split that fit / evaluate / compare and the CLI use unless val= / test= are given; a stack of held-out days
only is refused by fit."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner
from sklearn.base import clone

from trafficrnn import TrafficForecaster
from trafficrnn.cli import main
from trafficrnn.datasets import nyc_bike
from trafficrnn.datasets.nyc_bike import SPLIT_ATTR
from trafficrnn.errors import ConfigError, SplitError
from trafficrnn.grid import Grid
from trafficrnn.io import read_stack, write_stack
from trafficrnn.splits import choose_split, parse_split

CANONICAL = "val 2016-09-28T00:00:00; test 2016-10-12T00:00:00"
VAL, TEST = pd.Timestamp("2016-09-28"), pd.Timestamp("2016-10-12")
#: the smallest NYC slice that holds all three parts: 8 train slots, the 14 val days, 9 test slots
FIRST, LAST = "2016-09-27T20:00", "2016-10-12T04:00"
TINY = dict(
    input_steps=2,
    horizon=1,
    progress=False,
    model_kwargs=dict(hidden=(2,)),
    trainer_kwargs=dict(max_epochs=1, batch_size=64, accelerator="cpu"),
)
TINY_CLI = [
    "--input-steps",
    "2",
    "--horizon",
    "1",
    "--hidden",
    "2",
    "--max-epochs",
    "1",
    "--batch-size",
    "64",
    "--accelerator",
    "cpu",
    "--quiet",
]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *texts):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for text in texts:
        assert text in lines[0], result.output


@pytest.fixture(scope="module")
def slice_():
    return nyc_bike(start=FIRST, end=LAST)


@pytest.fixture(scope="module")
def fitted(slice_):
    return TrafficForecaster("convgru", **TINY).fit(slice_)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nyc") / "stack"
    result = run("datasets", "export", "nyc-bike", folder, "--start", FIRST, "--end", LAST)
    assert result.exit_code == 0, result.output
    return folder, result.output


# -- the split travels with the data ---------------------------------------------------------------


def test_nyc_bike__carries_the_published_split(slice_):
    assert SPLIT_ATTR == CANONICAL and slice_.attrs["split"] == CANONICAL
    assert (
        nyc_bike("test", end="2016-10-12T01:00").attrs["split"] == CANONICAL
    )  # a part keeps the dataset's split
    found = parse_split(CANONICAL)
    assert (found.val, found.test) == (VAL, TEST) and found.text == CANONICAL


@pytest.mark.parametrize(
    "value",
    [
        CANONICAL,
        "train 2016-08-01..2016-09-27; val 2016-09-28..2016-10-11; test 2016-10-12..2016-10-29",  # the NetCDF's form
        {"val": "2016-09-28", "test": "2016-10-12T00:00"},
    ],
)
def test_parse_split__forms(value):
    found = parse_split(value)
    assert (found.val, found.test) == (VAL, TEST)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "train",
        "val soon; test later",
        "test 2016-10-12",
        {"val": "2016-09-28"},
        "val 2016-10-12; test 2016-09-28",
        "val 2016-09-28T00:00Z; test 2016-10-12T00:00Z",
    ],
)
def test_parse_split__not_a_split(value):
    assert parse_split(value) is None


def test_export__every_file_records_the_split_and_read_stack_restores_it(exported):
    folder, output = exported
    assert "published split val from 2016-09-28 00:00, test from 2016-10-12 00:00" in output
    files = sorted(folder.glob("*.tif"))
    assert len(files) == 689
    for path in (files[0], files[-1]):
        with rasterio.open(path) as src:
            assert src.tags()["split"] == CANONICAL
    assert read_stack(folder).attrs["split"] == CANONICAL


def test_export__test_part_keeps_the_split_and_says_what_it_is_for(tmp_path):
    result = run(
        "datasets",
        "export",
        "nyc-bike",
        tmp_path / "t",
        "--split",
        "test",
        "--end",
        "2016-10-12T01:00",
    )
    assert result.exit_code == 0, result.output
    assert "it holds only the test part: evaluate on it" in result.output
    stack = read_stack(tmp_path / "t")
    assert stack.attrs["split"] == CANONICAL  # kept though the stack lies past both boundaries


def _tiny_stack(split: str | None, periods=12) -> xr.DataArray:
    grid = Grid("EPSG:32633", rasterio.Affine(100, 0, 500000, 0, -100, 5000400), (4, 4))
    times = pd.date_range("2024-05-01", periods=periods, freq="15min")
    values = np.random.default_rng(0).uniform(0, 5, (periods, 1, 4, 4)).astype("float32")
    da = grid.attach(
        xr.DataArray(
            values, dims=("time", "band", "y", "x"), coords={"time": times, "band": ["density"]}
        )
    )
    if split is not None:
        da.attrs["split"] = split
    return da


def test_read_stack__files_that_disagree_drop_the_split(tmp_path, caplog):
    paths = write_stack(_tiny_stack("val 2024-05-01T01:00; test 2024-05-01T02:00"), tmp_path)
    assert (
        read_stack(tmp_path).attrs["split"] == "val 2024-05-01T01:00:00; test 2024-05-01T02:00:00"
    )
    with rasterio.open(paths[3], "r+") as dst:
        dst.update_tags(split="val 2024-05-01T01:30; test 2024-05-01T02:00")
    with caplog.at_level(logging.WARNING, logger="trafficrnn.io.stack"):
        stack = read_stack(tmp_path)
    assert "split" not in stack.attrs
    assert "disagree on the published split" in caplog.text


def test_read_stack__files_some_without_the_split_drop_it(tmp_path):
    write_stack(_tiny_stack("val 2024-05-01T01:00; test 2024-05-01T02:00"), tmp_path)
    write_stack(_tiny_stack(None, periods=14).isel(time=slice(12, None)), tmp_path)
    assert "split" not in read_stack(tmp_path).attrs


# -- which split applies ---------------------------------------------------------------------------


def test_choose_split__published_default_and_given():
    times = pd.date_range(FIRST, LAST, freq="30min")
    attrs = {"split": CANONICAL}
    published = choose_split(None, None, times, attrs)
    assert (published.val, published.test, published.source) == (VAL, TEST, "published")
    assert published.parts == ("train", "val", "test")
    assert choose_split(None, None, times, {}).source == "default"
    assert (choose_split(None, None, times, {}).val, choose_split(None, None, times, {}).test) == (
        0.15,
        0.15,
    )
    given = choose_split(0.2, 0.1, times, attrs)  # both given: the published split is not even read
    assert (given.val, given.test, given.source) == (0.2, 0.1, "given")
    keep_test = choose_split(
        0, None, times, attrs
    )  # --val 0: train on the val days too, the test part stays
    assert (keep_test.val, keep_test.test) == (0, TEST)
    assert "val=0 as given, test from 2016-10-12 00:00" in keep_test.describe()


def test_choose_split__parts_the_stack_lacks_are_empty():
    attrs = {"split": CANONICAL}
    train_val = choose_split(
        None, None, pd.date_range("2016-09-27", "2016-10-11T23:30", freq="30min"), attrs
    )
    assert (train_val.val, train_val.test, train_val.parts) == (VAL, 0.0, ("train", "val"))
    train = choose_split(
        None, None, pd.date_range("2016-09-01", "2016-09-27T23:30", freq="30min"), attrs
    )
    assert (train.val, train.test, train.parts) == (0.0, 0.0, ("train",))
    assert "holds only its train part" in train.describe()


def test_clone_and_params__none_means_the_datas_split():
    est = TrafficForecaster()
    assert est.get_params()["val"] is None and est.get_params()["test"] is None
    assert clone(est).get_params() == est.get_params()
    again = clone(TrafficForecaster(val=0.1, test="2016-10-12"))
    assert (again.val, again.test) == (0.1, "2016-10-12")
    assert est.set_params(val=None, test=0.2).test == 0.2
    with pytest.raises(ConfigError, match="val=1.5 is invalid"):
        est.set_params(val=1.5)


# -- the estimator ---------------------------------------------------------------------------------


def test_fit__follows_the_published_split(fitted):
    split = fitted.split_
    step = pd.Timedelta("30min")
    assert split["train"][1] == "2016-09-27 23:30:00"
    assert split["val"][1] == "2016-10-11 23:30:00"
    # the test range starts input_steps frames before its first target, which is 2016-10-12 00:00 exactly
    assert pd.Timestamp(split["test"][0]) + 2 * step == TEST
    assert fitted.training_summary_["split_source"].startswith(
        "the data's published split (val from 2016-09-28"
    )


def test_evaluate__scores_the_published_test_days(fitted, slice_):
    table = fitted.evaluate(slice_, baselines=("persistence",))
    assert table.attrs["first_issue"] == "2016-10-11 23:30:00"  # its first target: 2016-10-12 00:00
    assert table.attrs["issues"] == 9  # one per test slot of the slice (00:00 .. 04:00)
    assert "published split" in table.attrs["split_source"]
    val = fitted.evaluate(slice_, split="val", baselines=())
    assert val.attrs["first_issue"] == "2016-09-27 23:30:00"


def test_evaluate__a_test_only_stack(fitted):
    test_days = nyc_bike("test", end="2016-10-12T05:00")
    with pytest.raises(
        ConfigError, match="starts in the test part of its dataset's published split"
    ):
        fitted.evaluate(test_days)  # the baselines would have nothing before it to learn from
    alone = fitted.evaluate(test_days, baselines=())
    assert alone.attrs["first_issue"] == "2016-10-12 00:30:00"  # every test window of the stack
    with pytest.raises(ConfigError, match="holds no frame of the val part"):
        fitted.evaluate(test_days, split="val", baselines=())


def test_fit__explicit_fractions_win(slice_):
    est = TrafficForecaster("convgru", val=0.15, test=0.15, **TINY).fit(slice_)
    n = slice_.sizes["time"]
    first_target = slice_.indexes["time"][n - round(0.15 * n)]
    assert pd.Timestamp(est.split_["test"][0]) + 2 * pd.Timedelta("30min") == first_target != TEST
    assert est.training_summary_["split_source"] == "val=0.15 as given, test=0.15 as given"


def test_fit__test_only_stack_refused():
    test_days = nyc_bike("test", end="2016-10-13")
    with pytest.raises(SplitError) as info:
        TrafficForecaster("convgru", **TINY).fit(test_days)
    message = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert (
        "(2016-10-12 00:00 → 2016-10-13 23:30) holds only the test part of its dataset's published split"
        in message
    )
    assert "Train on the whole dataset" in message and "pass both val= and test=" in message


def test_fit__val_and_test_only_stack_refused():
    with pytest.raises(SplitError, match="holds only the val and test parts"):
        TrafficForecaster("convgru", **TINY).fit(nyc_bike(start="2016-10-11", end="2016-10-12"))


# -- the command line ------------------------------------------------------------------------------


def test_cli__train_refuses_a_test_only_export(tmp_path):
    folder = tmp_path / "nyc-test"
    assert (
        run(
            "datasets", "export", "nyc-bike", folder, "--split", "test", "--end", "2016-10-12T03:00"
        ).exit_code
        == 0
    )
    one_line_error(
        run("train", folder, *TINY_CLI, "--out", tmp_path / "m"),
        f"STACK {folder} (2016-10-12 00:00 → 2016-10-12 03:00) holds only the test part",
        "export NAME DIR` without --split",
        "--val and --test",
    )
    assert not (tmp_path / "m").exists()
    one_line_error(
        run("compare", folder, *TINY_CLI, "--out", tmp_path / "c"), "holds only the test part"
    )


def test_cli__train_evaluate_info_use_the_published_split(exported, tmp_path):
    folder, _ = exported
    model = tmp_path / "m"
    trained = run("train", folder, *TINY_CLI, "--out", model)
    assert trained.exit_code == 0, trained.output
    assert (
        "split      train 2016-09-27 20:00 → 2016-09-27 23:30, val 2016-09-27 23:00 → 2016-10-11 23:30, "
        "test 2016-10-11 23:00 → 2016-10-12 04:00"
    ) in trained.output
    assert (
        "split by the data's published split (val from 2016-09-28 00:00, test from 2016-10-12 00:00)"
        in trained.output
    )
    scored = run("evaluate", model, folder, "--quiet")
    assert scored.exit_code == 0, scored.output
    assert "9 forecasts issued 2016-10-11 23:30 → 2016-10-12 03:30" in scored.output
    assert "split by the data's published split" in scored.output
    info = run("info", model)
    assert (
        info.exit_code == 0
        and "split by the data's published split (val from 2016-09-28" in info.output
    )
    inspected = run("inspect", folder)
    assert (
        "split      published: val from 2016-09-28 00:00, test from 2016-10-12 00:00"
        in inspected.output
    )


def test_cli__explicit_val_test_win(exported, tmp_path):
    folder, _ = exported
    trained = run(
        "train",
        folder,
        *TINY_CLI,
        "--val",
        "0.1",
        "--test",
        "2016-10-12T02:00",
        "--out",
        tmp_path / "m",
    )
    assert trained.exit_code == 0, trained.output
    assert "test 2016-10-12 01:00 → 2016-10-12 04:00" in trained.output
    assert "split by val=0.1 as given, test='2016-10-12T02:00' as given" in trained.output
