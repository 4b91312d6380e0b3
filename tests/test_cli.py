"""Tests of the CLI: in-process with CliRunner and as a subprocess; one-line errors, exit codes."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from trafficrnn import __version__
from trafficrnn.cli import main

from .conftest import frame_values, write_tif


def test_main__version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", [[], ["inspect"], ["demo"], ["simulate"]])
def test_main__help_everywhere_with_examples(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command and command[0] in ("inspect", "demo"):
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
    proc = subprocess.run([sys.executable, "-m", "trafficrnn.cli", "inspect", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "is not a readable raster" in proc.stderr and "Traceback" not in proc.stderr


def test_main__missing_path_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
