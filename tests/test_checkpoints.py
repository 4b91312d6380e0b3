"""Checkpoint folders: run.json, resuming only the same run, finished runs read back, unreadable checkpoints refused."""

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from trafficrnn.cli import main
from trafficrnn.ensemble import ForecastEnsemble
from trafficrnn.errors import ConfigError, ModelFileError
from trafficrnn.estimation.fitting import seconds_down
from trafficrnn.estimator import TrafficForecaster
from trafficrnn.io import write_stack
from trafficrnn.params import grouped

from .test_estimator import FAST, density_series


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _same_weights(a: TrafficForecaster, b: TrafficForecaster) -> bool:
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of 2 epochs that ended, its folder and its data."""
    da = density_series(periods=60)
    ckpt = tmp_path_factory.mktemp("run")
    est = TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=ckpt)
    return est, ckpt, da


def test_run_json__settings_data_and_outcome(finished):
    est, ckpt, da = finished
    record = json.loads((ckpt / "run.json").read_text())
    assert record["format"] == "trafficrnn-run"
    assert record["settings"]["hidden"] == [8] and record["settings"]["model"] == "convgru"
    assert record["data"]["frames"] == 60 and record["data"]["bands"] == ["density"]
    assert record["data"]["period"] == [
        str(pd.Timestamp(da.time.values[0])),
        str(pd.Timestamp(da.time.values[-1])),
    ]
    assert record["data"]["grid"] == est.grid_.to_dict()
    assert record["finished"]["epochs"] == 2 and record["finished"]["best"] == "best.ckpt"
    assert [h["epoch"] for h in record["finished"]["history"]] == [0, 1]


def test_resume__finished_run_is_read_back_not_trained(finished):
    est, ckpt, da = finished
    before = _mtimes(ckpt)
    again = TrafficForecaster("convgru", **grouped(FAST, {"progress": True})).fit(
        da, checkpoint_dir=ckpt, resume=True
    )
    assert _mtimes(ckpt) == before  # nothing trained, nothing written
    assert _same_weights(again, est)
    assert again.history_ == est.history_
    assert again.training_summary_ == est.training_summary_
    np.testing.assert_array_equal(again.predict(da).values, est.predict(da).values)


@pytest.mark.parametrize("recorded", [0.0, 0.07, 0.28, 0.29, 0.57, 1.13, 4.35, 1010.95])
def test_seconds_down__a_recorded_time_read_back_stays_the_same(recorded):
    # 0.29 * 100 is 28.999999999999996 in floats: a finished run read back must not lose 0.01 s
    assert seconds_down(recorded) == recorded
    assert seconds_down(recorded + 0.00999) == recorded


def test_resume__finished_run_for_longer_trains_on(tmp_path):
    da = density_series(periods=60)
    TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path)
    longer = TrafficForecaster("convgru", **grouped(FAST, {"max_epochs": 3})).fit(
        da, checkpoint_dir=tmp_path, resume=True
    )
    assert [h["epoch"] for h in longer.history_] == [2]
    assert json.loads((tmp_path / "run.json").read_text())["finished"]["epochs"] == 3


def test_fit__folder_with_checkpoints_refused_without_resume(finished):
    _, ckpt, da = finished
    before = _mtimes(ckpt)
    with pytest.raises(
        ConfigError,
        match=r"already holds last\.ckpt, best\.ckpt of an earlier run; pass resume=True",
    ):
        TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=ckpt)
    assert _mtimes(ckpt) == before


@pytest.mark.parametrize(
    "change, match",
    [
        ({"hidden": (4,)}, r"other settings \(hidden: \[8\] then, \[4\] now\)"),
        ({"model": "convlstm"}, r"other settings \(model: 'convgru' then, 'convlstm' now\)"),
        ({"lr": 1e-2}, r"other settings \(lr: "),
    ],
)
def test_resume__other_settings_refused(finished, change, match):
    _, ckpt, da = finished
    with pytest.raises(ModelFileError, match=match):
        TrafficForecaster(**grouped({"model": "convgru"}, FAST, change)).fit(
            da, checkpoint_dir=ckpt, resume=True
        )


def test_resume__other_data_refused(finished):
    _, ckpt, _ = finished
    with pytest.raises(ModelFileError, match=r"other data \(frames: 60 then, 70 now; period: "):
        TrafficForecaster("convgru", **FAST).fit(
            density_series(periods=70), checkpoint_dir=ckpt, resume=True
        )


def test_resume__needs_a_checkpoint_dir():
    with pytest.raises(ConfigError, match=r"resume=True needs checkpoint_dir"):
        TrafficForecaster("convgru", **FAST).fit(density_series(periods=60), resume=True)
    with pytest.raises(ConfigError, match=r"resume=True needs checkpoint_dir"):
        ForecastEnsemble(TrafficForecaster("convgru", **FAST), members=2).fit(
            density_series(periods=60), resume=True
        )


def test_resume__empty_folder_starts_a_run(tmp_path):
    est = TrafficForecaster("convgru", **FAST).fit(
        density_series(periods=60), checkpoint_dir=tmp_path / "new", resume=True
    )
    assert len(est.history_) == 2 and (tmp_path / "new" / "last.ckpt").exists()


def test_checkpoint_dir__a_file_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"checkpoint_dir .*f is a file"):
        TrafficForecaster("convgru", **FAST).fit(
            density_series(periods=60), checkpoint_dir=tmp_path / "f"
        )


class _Payload:
    """Unpickling this runs code (touches a file): what a tampered checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["garbage", "truncated", "payload", "no_state_dict"])
def test_resume__unreadable_checkpoint_refused_never_unpickled(tmp_path, content):
    da = density_series(periods=60)
    TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path)
    last, marker = tmp_path / "last.ckpt", tmp_path / "executed"
    if content == "garbage":
        last.write_bytes(b"not a checkpoint" * 10)
    elif content == "truncated":
        last.write_bytes(last.read_bytes()[:500])
    elif content == "payload":
        with last.open("wb") as f:
            pickle.dump({"state_dict": {}, "x": _Payload(marker)}, f)
    else:
        torch.save({"epoch": 1}, last)
    match = (
        r"holds no state_dict"
        if content == "no_state_dict"
        else r"last\.ckpt cannot be read as a checkpoint"
    )
    with pytest.raises(
        ModelFileError, match=match
    ):  # max_epochs 3: the run is continued, from last.ckpt
        TrafficForecaster("convgru", **grouped(FAST, {"max_epochs": 3})).fit(
            da, checkpoint_dir=tmp_path, resume=True
        )
    assert not marker.exists()


def test_resume__checkpoint_of_other_shapes_refused(tmp_path):
    # a checkpoint swapped for one of another model, under an unchanged run.json
    da = density_series(periods=60)
    TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path / "a")
    TrafficForecaster("convgru", **grouped(FAST, {"hidden": (4,)})).fit(
        da, checkpoint_dir=tmp_path / "b"
    )
    (tmp_path / "b" / "best.ckpt").replace(tmp_path / "a" / "best.ckpt")
    with pytest.raises(
        ModelFileError, match=r"best\.ckpt does not fit this model \(.*size mismatch"
    ):
        TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path / "a", resume=True)


def test_resume__run_json_corrupt_or_missing(tmp_path):
    da = density_series(periods=60)
    TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"run\.json is not valid JSON"):
        TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path, resume=True)
    (tmp_path / "run.json").unlink()
    with pytest.raises(ModelFileError, match=r"holds last\.ckpt, best\.ckpt but no run\.json"):
        TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path, resume=True)


def test_resume__finished_record_pointing_outside_the_folder_refused(tmp_path):
    da = density_series(periods=60)
    TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "best.ckpt").replace(tmp_path / "best.ckpt")
    record["finished"]["best"] = "../best.ckpt"
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(
        ModelFileError,
        match=r"the finished run's checkpoint '\.\./best\.ckpt' is missing or not a file "
        r"of this folder",
    ):
        TrafficForecaster("convgru", **FAST).fit(da, checkpoint_dir=tmp_path / "run", resume=True)


def test_ensemble__members_checkpoint_in_their_folders_and_resume_reads_them_back(tmp_path):
    da = density_series(periods=60)
    ens = ForecastEnsemble(TrafficForecaster("convgru", **FAST), members=2).fit(
        da, checkpoint_dir=tmp_path
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member-0", "member-1"]
    seeds = [
        json.loads((tmp_path / f"member-{i}" / "run.json").read_text())["settings"]["seed"]
        for i in (0, 1)
    ]
    assert seeds == [0, 1]
    before = {i: _mtimes(tmp_path / f"member-{i}") for i in (0, 1)}
    again = ForecastEnsemble(TrafficForecaster("convgru", **FAST), members=2).fit(
        da, checkpoint_dir=tmp_path, resume=True
    )
    assert {i: _mtimes(tmp_path / f"member-{i}") for i in (0, 1)} == before
    assert all(_same_weights(a, b) for a, b in zip(ens.estimators_, again.estimators_))
    with pytest.raises(
        ConfigError, match=r"member-0 already holds"
    ):  # checked before any member starts
        ForecastEnsemble(TrafficForecaster("convgru", **FAST), members=2, n_jobs=2).fit(
            da, checkpoint_dir=tmp_path
        )


def test_cli__train_checkpoint_dir_and_resume(tmp_path):
    stack, ckpt = tmp_path / "grids", tmp_path / "ckpt"
    write_stack(density_series(periods=60), stack)
    args = [
        "train",
        str(stack),
        "--model",
        "convgru",
        "--input-steps",
        "6",
        "--horizon",
        "3",
        "--hidden",
        "8",
        "--max-epochs",
        "2",
        "--quiet",
        "--checkpoint-dir",
        str(ckpt),
        "--out",
    ]
    runner = CliRunner()
    res = runner.invoke(main, [*args, str(tmp_path / "m1")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, [*args, str(tmp_path / "m2")])
    assert (
        res.exit_code == 2
        and "already holds last.ckpt, best.ckpt" in res.output
        and "--resume" in res.output
    )
    res = runner.invoke(main, [*args, str(tmp_path / "m2"), "--resume"])
    assert res.exit_code == 0, res.output
    a, b = TrafficForecaster.load(tmp_path / "m1"), TrafficForecaster.load(tmp_path / "m2")
    assert _same_weights(a, b) and "epochs     2 " in res.output
    res = runner.invoke(main, ["train", str(stack), "--resume", "--out", str(tmp_path / "m3")])
    assert res.exit_code == 2 and "--resume needs --checkpoint-dir" in res.output


def test_resume__under_max_time_the_clock_and_the_schedule_go_on(tmp_path):
    # Lightning's Timer state travels in last.ckpt: the resumed run's cosine goes on from the time the
    # first run trained (its set-up, which max_time also bounds, is not on the Timer) rather than from
    # the full learning rate, and ends near its floor. Compared with the Timer's own record, not with
    # fixed seconds: set-up and the last validation take seconds more on a loaded machine
    da = density_series(periods=160)
    params = grouped(FAST, {"max_epochs": 10_000, "max_time": 0.1, "lr": 1e-2})
    first = TrafficForecaster("convgru", **params).fit(da, checkpoint_dir=tmp_path)
    trained = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["Timer"]
    trained = trained["time_elapsed"]["train"]
    resumed = TrafficForecaster("convgru", **{**params, "max_time": 0.15}).fit(
        da, checkpoint_dir=tmp_path, resume=True
    )
    assert resumed.history_[0]["epoch"] == first.history_[-1]["epoch"] + 1
    # the schedule at the end of the resumed run's first epoch: at least the first run's share of 9 s
    # spent (a clock started again would be at about 1e-2, one epoch being a fraction of a second)
    assert trained > 0.5
    carried = 1e-2 * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * trained / 9.0)))
    assert resumed.history_[0]["lr"] <= carried * (1 + 1e-6) < 0.98e-2
    assert resumed.history_[-1]["lr"] < 0.3e-2
