import json

from click.testing import CliRunner

from trafficrnn.synth.cli import simulate_command


def test_simulate_command__writes_outputs(tmp_path):
    out = tmp_path / "city"
    result = CliRunner().invoke(
        simulate_command,
        [
            str(out),
            "--size",
            "64",
            "--gsd",
            "1",
            "--days",
            "0.05",
            "--step",
            "15min",
            "--seed",
            "2",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {"images", "density", "vehicles.gpkg", "roads.gpkg", "manifest.json"} <= {
        p.name for p in out.iterdir()
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["size"] == 64 and manifest["time"]["count"] == 5
    assert "wrote 5 time steps" in result.output


def test_simulate_command__bad_step_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(
        simulate_command, [str(tmp_path / "x"), "--step", "soon", "--quiet"]
    )
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: step='soon' is invalid: expected a duration such as '5min' or '15min'"
    ]


def test_simulate_command__existing_output_refused(tmp_path):
    args = [
        str(tmp_path / "c"),
        "--size",
        "64",
        "--gsd",
        "1",
        "--days",
        "0.03",
        "--step",
        "15min",
        "--quiet",
    ]
    assert CliRunner().invoke(simulate_command, args).exit_code == 0
    again = CliRunner().invoke(simulate_command, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert CliRunner().invoke(simulate_command, [*args, "--overwrite"]).exit_code == 0
