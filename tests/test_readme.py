"""The README's recipes run as written, in the order written, on a tiny simulated city (issue 22).

The convention (stated in a comment at the top of README.md, which readers do not see): its
```python blocks run in order in one namespace, and every line of its ```bash blocks runs as its
own ``trafficrnn`` process, which must exit with status 0 and write the outputs it names; ```sh
blocks are shown only (make, pip). So that the same text runs in about two minutes on 2 cores,
the test changes only sizes and budgets:

- ``data/sample`` is a city simulated here: 128 px at 1 m, one day at 30 minutes, 64 px tiles;
- Python: ``max_time=N`` becomes ``max_time=0.05, trainer_kwargs={"max_epochs": 1}, progress=False`` (the architecture
  stays, so that a fine-tuning keeps the pretrained model's);
- ``trafficrnn simulate``: ``--size 512 --days 2 --step 15min`` become ``--size 128 --days 1 --step 30min``;
- ``trafficrnn train`` / ``compare`` get ``--max-epochs 1 --max-minutes 0.05 --hidden 8 --quiet``
  appended (click keeps an option's last value); ``evaluate`` gets ``--quiet``;
- ``trafficrnn datasets export nyc-bike`` gets ``--start 2016-09-27 --end 2016-10-12``: 16 days that
  still hold the published train (one day), val and test parts; ``train`` on that export also gets
  ``--input-steps 2 --horizon 2 --batch-size 128`` (its 14 val days are the cost).
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import rasterio

from trafficrnn.synth.simulate import simulate, write_simulation

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
TINY_PY = 'max_time=0.05, trainer_kwargs={"max_epochs": 1}, progress=False'
TINY_CITY = {"--size 512": "--size 128", "--days 2": "--days 1", "--step 15min": "--step 30min"}
TINY_TRAINING = ["--max-epochs", "1", "--max-minutes", "0.05", "--hidden", "8", "--quiet"]
TINY_EXPORT = ["--start", "2016-09-27", "--end", "2016-10-12"]
TINY_NYC = ["--input-steps", "2", "--horizon", "2", "--batch-size", "128"]
#: options whose value is a file or folder the command writes
OUTPUTS = ("--out", "--csv", "--json", "--checkpoint-dir")


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def ten_lines() -> str:
    """The code of "Python in ten lines" (also read by tests/test_newcomer_api.py)."""
    text = README.read_text(encoding="utf-8")
    return next(
        code
        for lang, code in blocks(text[text.index("## Python in ten lines") :])
        if lang == "python"
    )


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block: continuations joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def tiny_python(code: str) -> str:
    return re.sub(r"max_time=[\d.]+", TINY_PY, code)


def tiny_command(args: list[str]) -> list[str]:
    if args[1] == "simulate":
        line = " ".join(args)
        for big, small in TINY_CITY.items():
            assert big in line, (
                f"the README's simulate recipe changed: map {big} in TINY_CITY ({line})"
            )
            line = line.replace(big, small)
        return line.split()
    if args[1:3] == ["datasets", "export"]:
        return args + TINY_EXPORT
    if args[1] in ("train", "compare"):
        return args + TINY_TRAINING + (TINY_NYC if args[2] == "nyc/" else [])
    if args[1] == "evaluate":
        return args + ["--quiet"]
    return args


def written(args: list[str]) -> list[str]:
    if args[1:3] == ["datasets", "export"]:  # the folder, and the CSV of --covariates
        return [args[4]] + [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--covariates"]
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in OUTPUTS]


def test_readme__blocks_follow_the_convention():
    found = blocks(README.read_text(encoding="utf-8"))
    assert {lang for lang, _ in found} <= {"python", "bash", "sh"}, sorted(
        {lang for lang, _ in found}
    )
    assert [lang for lang, _ in found].count("python") >= 2 and "bash" in [
        lang for lang, _ in found
    ]
    for lang, code in found:
        if lang == "bash":
            for args in commands(code):
                assert args[0] == "trafficrnn", f"a ```bash line runs in the test: {' '.join(args)}"


def test_readme__python_and_cli_recipes_run_in_order(tmp_path, monkeypatch):
    write_simulation(
        simulate(128, days=1, step="30min", seed=3, tile_size=64, gsd=1.0),
        tmp_path / "data" / "sample",
    )
    monkeypatch.chdir(
        tmp_path
    )  # the recipes' relative paths: data/sample and city/ in, their outputs here
    namespace: dict = {}
    ran = []
    for lang, code in blocks(README.read_text(encoding="utf-8")):
        if lang == "python":
            exec(compile(tiny_python(code), str(README), "exec"), namespace)
            ran.append("python")
        elif lang == "bash":
            for args in commands(code):
                args = tiny_command(args)
                proc = subprocess.run(
                    [sys.executable, "-m", "trafficrnn.cli", *args[1:]],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
                for out in written(args):
                    assert Path(out).exists(), f"{' '.join(args)} did not write {out}"
                ran.append(args[1])
    assert ran.count("python") >= 2 and {
        "simulate",
        "train",
        "forecast",
        "evaluate",
        "info",
        "compare",
        "datasets",
        "--help",
    } <= set(ran)
    with rasterio.open(
        tmp_path / "forecast.tif"
    ) as src:  # the ten lines: default horizon, the sample's grid
        assert src.count == 6 and src.crs.to_epsg() == 32633 and src.transform.a == 64.0
    assert (tmp_path / "my-model" / "config.json").is_file()
    assert (
        tmp_path / "city-model" / "static.tif"
    ).is_file()  # the --roads layer the forecasts reused
    assert (tmp_path / "nyc-ensemble" / "member-1").is_dir()  # --members 2
    assert any((tmp_path / "runs" / "nyc").iterdir())  # --checkpoint-dir: what --resume reads
