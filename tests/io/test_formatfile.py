"""One reader for the JSON files written beside the binaries: config.json, ensemble.json, the ONNX
sidecar and run.json all refuse a corrupt, foreign or newer file with the same kind of message."""

import json

import pytest

from trafficrnn.ensemble import read_manifest
from trafficrnn.errors import ModelFileError
from trafficrnn.estimation import checkpoints
from trafficrnn.io.formatfile import read_format_json
from trafficrnn.onnx_sidecar import read_sidecar


def _write(path, doc):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_read_format_json__returns_the_object(tmp_path):
    doc = {"format": "trafficrnn-x", "format_version": 2, "a": [1, 2]}
    file = _write(tmp_path / "x.json", doc)
    assert read_format_json(file, format="trafficrnn-x", kind="x", max_version=2) == doc
    unversioned = _write(tmp_path / "y.json", {"format": "trafficrnn-y"})
    assert read_format_json(unversioned, format="trafficrnn-y", kind="y", max_version=None) == {
        "format": "trafficrnn-y"
    }


@pytest.mark.parametrize(
    "doc, match",
    [
        ("{not json", r"x\.json is not valid JSON \(.*\); delete it"),
        ("[1, 2]", r"x\.json: format 'list', expected 'trafficrnn-x'; not a trafficrnn thing file"),
        ({"format": "other"}, r"format 'other', expected 'trafficrnn-x'; not a trafficrnn thing"),
        ({"format": "trafficrnn-x"}, r"format_version = None, expected a positive integer"),
        ({"format": "trafficrnn-x", "format_version": True}, r"format_version = True, expected"),
        ({"format": "trafficrnn-x", "format_version": "1"}, r"format_version = '1', expected"),
        ({"format": "trafficrnn-x", "format_version": 0}, r"format_version = 0, expected"),
        (
            {"format": "trafficrnn-x", "format_version": 3},
            r"x\.json: thing format 3 is newer than this trafficrnn \(.*\) reads \(<= 2\); upgrade",
        ),
    ],
)
def test_read_format_json__refusals_name_the_file_what_was_found_and_the_fix(tmp_path, doc, match):
    file = _write(tmp_path / "x.json", doc)
    with pytest.raises(ModelFileError, match=match):
        read_format_json(file, format="trafficrnn-x", kind="thing", max_version=2, fix="delete it")


def test_onnx_sidecar__newer_or_corrupt_refused(tmp_path):
    _write(tmp_path / "m.onnx.json", {"format": "trafficrnn-onnx", "format_version": 9})
    with pytest.raises(
        ModelFileError, match=r"ONNX sidecar format 9 is newer .* upgrade trafficrnn"
    ):
        read_sidecar(tmp_path / "m.onnx")
    _write(tmp_path / "m.onnx.json", "\x00")
    with pytest.raises(ModelFileError, match=r"not valid JSON .*export again with"):
        read_sidecar(tmp_path / "m.onnx")


def test_ensemble_manifest__foreign_format_refused(tmp_path):
    _write(tmp_path / "ensemble.json", {"format": "trafficrnn-model", "format_version": 1})
    with pytest.raises(
        ModelFileError, match=r"expected 'trafficrnn-ensemble'; not a trafficrnn ensemble"
    ):
        read_manifest(tmp_path)


def test_run_record__without_settings_refused(tmp_path):
    _write(tmp_path / "run.json", {"format": "trafficrnn-run", "settings": None})
    with pytest.raises(
        ModelFileError,
        match=r"run\.json: settings = None, expected an object; .*new checkpoint_dir",
    ):
        checkpoints.prepare(tmp_path, {"format": "trafficrnn-run", "settings": {}}, resume=True)
