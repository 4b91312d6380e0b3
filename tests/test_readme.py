"""The README's "Python in ten lines" runs as written, on a tiny simulated city in place of data/sample."""

import re
from pathlib import Path

import rasterio

from trafficrnn.synth.simulate import simulate, write_simulation

README = Path(__file__).resolve().parent.parent / "README.md"


def ten_lines() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python in ten lines"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_ten_lines__run_on_a_tiny_city(tmp_path, monkeypatch):
    city = tmp_path / "data" / "sample"
    write_simulation(simulate(128, days=1, step="30min", seed=3, tile_size=64, gsd=1.0), city)
    code = ten_lines()
    assert "data/sample" in code and "max_time=1" in code
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths: data/sample in, forecast.tif and my-model out
    code = code.replace("max_time=1", "max_time=0.05, max_epochs=1, progress=False")
    exec(compile(code, str(README), "exec"), {})
    with rasterio.open(tmp_path / "forecast.tif") as src:
        assert src.count == 6 and src.crs.to_epsg() == 32633 and src.transform.a == 64.0
    assert (tmp_path / "my-model" / "config.json").is_file()
