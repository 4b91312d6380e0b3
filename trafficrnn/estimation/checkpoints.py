"""The checkpoint folder of a training run: what it was trained with, whether it finished, safe resume.

``TrafficForecaster.fit(checkpoint_dir=...)`` keeps Lightning's ``best.ckpt`` and ``last.ckpt`` there
and beside them ``run.json``: the settings and a description of the data (frames, period, grid, bands,
static layers, covariates) the run was started with, and once it ends, how it ended (epochs, seconds,
history). With ``resume=True`` this is checked before anything is loaded, so that

- a run is only continued with the settings and the data it was started with (the stopping
  budget — ``max_epochs``, ``max_time``, ``patience`` — and the hardware may change: continuing a
  run for longer is what resume is for);
- a run that had already finished with the very same settings is not trained again: its selected
  weights are read back;
- a checkpoint that is truncated, tampered with or not a checkpoint is refused, without unpickling
  anything (``weights_only=True``).

A fresh ``fit`` never trains over the checkpoints of another run: a folder that holds them is refused
unless ``resume=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trafficrnn.errors import ConfigError, ModelFileError
from trafficrnn.io.formatfile import read_format_json

RUN_FILE = "run.json"
FORMAT = "trafficrnn-run"
#: settings a resumed run may change: how long it trains and on what hardware, not what it learns
RESUMABLE = frozenset(
    {
        "max_epochs",
        "max_time",
        "patience",
        "progress",
        "precision",
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
    }
)
#: settings that do not change a finished run's result (it is read back whatever they say)
_COSMETIC = frozenset({"progress"})
_CHECKPOINTS = ("last.ckpt", "best.ckpt")


def run_record(params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What ``run.json`` holds when a run starts: format, settings and data description (JSON-ready)."""
    from trafficrnn.estimation.persist import jsonable

    # through JSON and back, so that it compares equal to what a later run reads from run.json
    return json.loads(
        json.dumps(
            {
                "format": FORMAT,
                "settings": jsonable(params),
                "data": jsonable(data),
                "finished": None,
            }
        )
    )


def _read(root: Path) -> dict[str, Any] | None:
    file = root / RUN_FILE
    if not file.is_file():
        return None
    fix = "the checkpoint folder is corrupt: train again into a new checkpoint_dir"
    record = read_format_json(file, format=FORMAT, kind="run record", max_version=None, fix=fix)
    if not isinstance(record.get("settings"), dict):
        raise ModelFileError(
            f"{file}: settings = {record.get('settings')!r:.60}, expected an object; {fix}"
        )
    return record


def _differences(
    old: dict[str, Any], new: dict[str, Any], skip: frozenset[str] = frozenset()
) -> list[str]:
    keys = sorted((set(old) | set(new)) - skip)
    return [
        f"{k}: {old.get(k)!r:.60} then, {new.get(k)!r:.60} now"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def prepare(
    root: Path, record: dict[str, Any], resume: bool
) -> tuple[Path | None, dict[str, Any] | None]:
    """Check the folder before training; returns ``(last.ckpt to resume from or None, finished record or None)``.

    A finished record is returned when ``resume`` and the run finished with the same settings (all but
    ``progress``) on the same data: the caller then reads its best weights instead of training.

    Raises
    ------
    ConfigError
        ``root`` holds checkpoints and ``resume`` is false; ``root`` is a file.
    ModelFileError
        ``resume`` with a ``run.json`` that is corrupt, or whose settings or data differ from these,
        or checkpoints without a ``run.json`` (written by something else).
    """
    present = check_folder(root, resume)
    if not resume:
        return None, None
    old = _read(root)
    if old is None:
        if present:
            raise ModelFileError(
                f"{root} holds {', '.join(present)} but no {RUN_FILE}: not a trafficrnn checkpoint "
                "folder, or from a version that did not record its runs; train again into a new "
                "checkpoint_dir"
            )
        return None, None  # nothing to resume yet: this run starts it
    changed = _differences(old["settings"], record["settings"], RESUMABLE)
    if changed:
        raise ModelFileError(
            f"{root}: the run there was trained with other settings ({'; '.join(changed)}); "
            "resume with the settings it was started with, or train into a new checkpoint_dir"
        )
    moved = _differences(old.get("data") or {}, record["data"])
    if moved:
        raise ModelFileError(
            f"{root}: the run there was trained on other data ({'; '.join(moved)}); resume "
            "with the same stack, or train into a new checkpoint_dir"
        )
    finished = old.get("finished")
    if finished and not _differences(old["settings"], record["settings"], _COSMETIC):
        name = finished.get("best")
        if not isinstance(name, str) or Path(name).name != name or not (root / name).is_file():
            raise ModelFileError(
                f"{root}: the finished run's checkpoint {name!r:.60} is missing or not a file of "
                "this folder; train again into a new checkpoint_dir"
            )
        return None, finished
    last = root / "last.ckpt"
    if not last.exists():
        return None, None  # killed before its first epoch ended: start over, same folder
    check_checkpoint(last)
    return last, None


def check_folder(root: Path, resume: bool) -> list[str]:
    """The checkpoint files in ``root``; refuses a file, and a folder with checkpoints unless ``resume``.

    Raises
    ------
    ConfigError
    """
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"checkpoint_dir {root} is a file; pass a folder (it is created if missing)"
        )
    present = [name for name in _CHECKPOINTS if (root / name).exists()]
    if present and not resume:
        raise ConfigError(
            f"checkpoint_dir {root} already holds {', '.join(present)} of an earlier run; pass "
            "resume=True (CLI: --resume) to continue it, or a new or empty folder to start afresh"
        )
    return present


def check_checkpoint(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling arbitrary objects; its dict.

    Raises
    ------
    ModelFileError
        If the file is truncated, tampered with, or not a checkpoint.
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it means the same to the user
        kind = type(exc).__name__
        raise ModelFileError(
            f"{path} cannot be read as a checkpoint ({kind}: {str(exc).splitlines()[0][:120]}); it "
            "is truncated, tampered with or not a checkpoint, and is never unpickled: delete the "
            "folder and train again"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelFileError(
            f"{path} holds no state_dict: not a Lightning checkpoint; delete the folder and train again"
        )
    return ckpt


def load_state(path: Path, module) -> None:
    """Load a checkpoint's weights into ``module``, refusing a file whose tensors do not fit it.

    Raises
    ------
    ModelFileError
    """
    state = check_checkpoint(path)["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelFileError(
            f"{path} does not fit this model ({detail[:200]}{'...' if len(detail) > 200 else ''}); it was "
            "written for other settings: train again into a new checkpoint_dir"
        ) from None


def finish(root: Path, record: dict[str, Any], finished: dict[str, Any]) -> None:
    """Record how the run ended in ``run.json`` (atomically)."""
    from trafficrnn.estimation.persist import jsonable

    write(root, {**record, "finished": jsonable(finished)})


def write(root: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` in ``root`` (created if missing) through a temporary file and a rename."""
    from trafficrnn.io.atomic import atomic_output

    root.mkdir(parents=True, exist_ok=True)
    with atomic_output(root / RUN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
