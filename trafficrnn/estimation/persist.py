"""Saved models: a folder with ``model.safetensors`` (no pickle) and a validated ``config.json`` holding its checksum."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trafficrnn._version import __version__
from trafficrnn.errors import ConfigError, GridError, ModelFileError, TrafficRNNError
from trafficrnn.io.atomic import atomic_output
from trafficrnn.io.formatfile import read_format_json
from trafficrnn.params import ALL_DEFAULTS, GROUPS, MODEL_NAMES, grouped

if (
    TYPE_CHECKING
):  # for annotations only: load_model imports what it builds (torch with it), so that
    from trafficrnn.grid import (
        Grid,
    )  # read_config, all `trafficrnn info` needs, starts in a fraction of a second

FORMAT = "trafficrnn-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
#: the static layers a model keeps from fit (road mask ...): a float32 GeoTIFF on the model's grid
STATIC = "static.tif"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(file: Path, expected: str, what: str) -> None:
    """Refuse ``file`` (``what`` it holds, e.g. "the weights") unless its SHA-256 is ``expected``."""
    found = _sha256(file)
    if found != expected:
        raise ModelFileError(
            f"{file}: checksum {found[:12]}… does not match the config's {expected[:12]}…; "
            f"{what} were modified or truncated — refusing to load"
        )


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars as Python numbers, tuples as lists, keys as str, others as str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_model(est, path, *, overwrite: bool = False, half: bool = False) -> Path:
    """Write a fitted TrafficForecaster to the folder ``path`` (weights + config), atomically.

    ``half`` stores the network's floating-point weights as float16 (half the size, for shipping
    pretrained models); loading casts them back to the model's float32.

    Raises
    ------
    NotFittedError
        If the estimator is not fitted.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    from safetensors.torch import save_file

    est._check_fitted()
    path = Path(path)
    with atomic_output(path, overwrite=overwrite, directory=True) as tmp:
        import torch

        state = {k: v.detach().cpu().contiguous() for k, v in est.model_.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        state.update({k: torch.from_numpy(v) for k, v in est.context_.arrays().items()})
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        static_sha256 = _write_static(est, tmp / STATIC)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "trafficrnn_version": __version__,
            "weights_sha256": _sha256(tmp / WEIGHTS),
            "model": est.model,
            "model_config": jsonable(est.model_.config),
            "params": jsonable(est.get_params()),
            **jsonable(est.state_.to_dict()),
            "static_sha256": static_sha256,
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return path


def _write_static(est, target: Path) -> str | None:
    """Write the static layers the model kept from ``fit`` (``est.static_``) to ``target``, a float32
    GeoTIFF on the model's grid with one named band per layer; its SHA-256, or None without layers."""
    kept = getattr(est, "static_", None)
    if kept is None:
        return None
    import rasterio

    grid = est.grid_
    with rasterio.open(
        target,
        "w",
        driver="GTiff",
        height=grid.shape[0],
        width=grid.shape[1],
        count=kept.sizes["band"],
        dtype="float32",
        crs=grid.crs,
        transform=grid.transform,
    ) as dst:
        dst.write(np.asarray(kept.values, dtype="float32"))
        dst.descriptions = tuple(str(b) for b in kept.band.values)
    return _sha256(target)


def _read_static(config: dict, grid: Grid, names: list[str], path: Path):
    """The static layers saved by :func:`_write_static`, checked against the config's checksum, grid and
    band names; None for a model saved without them (it then asks for ``static=``, as before).

    Raises
    ------
    ModelFileError
        ``static.tif`` missing, modified, unreadable, or not the config's layers on the model's grid.
    """
    import rasterio
    import xarray as xr

    from trafficrnn.estimation.inputs import kept_static
    from trafficrnn.grid import Grid

    digest = config.get("static_sha256")
    if digest is None:
        return None
    file = path / STATIC
    if not isinstance(digest, str) or not names:
        raise ModelFileError(
            f"{path / CONFIG}: static_sha256 = {digest!r:.60} with static_bands {names}: expected "
            "a checksum and the layers' names; the config is corrupt or was modified"
        )
    if not file.is_file():
        raise ModelFileError(
            f"{file} is missing: the model keeps its static layers {names} there; the model "
            "folder is incomplete (copy the whole folder, or save the model again)"
        )
    _check_sha256(file, digest, "the static layers")
    try:
        with rasterio.open(file) as src:
            values, crs, transform, bands = (
                src.read().astype("float32"),
                src.crs,
                src.transform,
                src.descriptions,
            )
    except rasterio.errors.RasterioError as exc:
        raise ModelFileError(f"{file} is not a readable GeoTIFF ({exc})") from None
    if (
        crs is None
        or list(bands) != names
        or not Grid(crs, transform, values.shape[1:], 1).matches(grid)
    ):
        raise ModelFileError(
            f"{file}: layers {list(bands)} on {values.shape[1:]} cells do not match the config's "
            f"static layers {names} on the model's grid {grid} — refusing to load"
        )
    return kept_static(xr.DataArray(values, dims=("band", "y", "x")), grid, names)


def _require(config: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in config:
        raise ModelFileError(
            f"{path / CONFIG}: key {key!r} is missing; the file is truncated or not a trafficrnn model"
        )
    value = config[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ModelFileError(
            f"{path / CONFIG}: {key!r} is {type(value).__name__} {value!r:.60}, expected {names}"
        )
    return value


# Bounds far above any model this package trains, far below what would exhaust memory: a crafted
# config.json is refused before a single layer is allocated.
MAX_CHANNELS = 4096
MAX_LAYERS = 16
MAX_KERNEL = 15
MAX_TILE = 1024
_MODEL_KEYS = {
    "in_channels",
    "out_channels",
    "cell",
    "hidden_channels",
    "kernel_size",
    "encoder",
    "static_channels",
    "past_covariate_channels",
    "future_covariate_channels",
    "feedback",
    "residual",
    "output_activation",
    "cell_kwargs",
    "count_head",
    "linear_leads",
    "linear_lags",
    "count_stage",
    "density_per_cell",
    "count_validity",
    "quantiles",
}
_ENCODER_KEYS = {
    "in_channels",
    "tile_size",
    "width",
    "depth",
    "out_channels",
    "strides",
    "max_width",
    "stem",
    "norm",
}
_CELL_KEYS = {"bias"}
#: parameters added after format version 1 appeared, with the behaviour of models saved before them
_ADDED_PARAMS = {
    "context_inputs": False,
    "count_head": False,
    "feedback": True,
    "target_inputs": False,
    "linear_lags": 0,
    "bptt_steps": None,
    "counting": False,
    "quantiles": None,
}


def saved_params(params: dict[str, Any]) -> dict[str, Any]:
    """TrafficForecaster parameters from the ``params`` of a saved ``config.json``, of either layout.

    This version saves ``get_params()``: the top-level parameters and the group dicts
    (``model_kwargs``, ``trainer_kwargs``) as given. Earlier versions saved every option flat at the
    top level (``"lr": 0.003, "hidden": [32, 32]``): those go into their group, and the options
    added since then (:data:`_ADDED_PARAMS`) get the behaviour the model was built with. Names this
    version does not know (removed options) are dropped; JSON lists become tuples where the
    estimator uses tuples (``hidden``, ``context``).
    """
    flat_layout = not any(group in params for group in GROUPS)
    if flat_layout:  # models saved before these parameters existed were built without them
        params = {**_ADDED_PARAMS, **params}
    known = {k: v for k, v in params.items() if k in ALL_DEFAULTS or k in GROUPS}
    out = grouped(known)
    if isinstance(out.get("context"), list):
        out["context"] = tuple(out["context"])  # JSON has no tuples
    for group, defaults in GROUPS.items():
        options = out.get(group)
        if isinstance(options, dict):  # in the order of the defaults, unknown keys last (refused)
            order = {name: i for i, name in enumerate(defaults)}
            out[group] = dict(sorted(options.items(), key=lambda kv: order.get(kv[0], len(order))))
            for key in ("hidden", "quantiles"):
                if isinstance(out[group].get(key), list):
                    out[group][key] = tuple(out[group][key])
    return out


#: removed options that built a different network: a model saved with one set is refused. The removed
#: training options (``ema``, ``lead_weights``) are dropped on load: the saved weights are what they are
_REMOVED_ARCHITECTURE = ("peephole",)


def _check_removed(config: dict, path: Path) -> None:
    """Refuse a model saved with a removed architecture option (``peephole``), naming the version that
    saved it; where that option is null, drop it (the network is the one built without it)."""
    params, cell_kwargs = config["params"], config["model_config"].get("cell_kwargs")
    cell_kwargs = cell_kwargs if isinstance(cell_kwargs, dict) else {}
    for key in _REMOVED_ARCHITECTURE:
        value = params.get(key) if params.get(key) is not None else cell_kwargs.get(key)
        if value is not None:
            version = config.get("trafficrnn_version")
            saved = (
                f"trafficrnn {version}"
                if isinstance(version, str) and version
                else "an earlier trafficrnn"
            )
            older = " (a build from before the removal)" if version == __version__ else ""
            raise ModelFileError(
                f"{path}: this model was saved by {saved} with {key}={value!r}, an option removed from this "
                f"trafficrnn ({__version__}) because the benchmarks showed no gain, so its network cannot be "
                f"rebuilt; retrain the model with trafficrnn {__version__}, or load it with {saved}{older}, the "
                "version that saved it"
            )
        params.pop(key, None)
        cell_kwargs.pop(key, None)


def _int_in(value: Any, low: int, high: int, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelFileError(
            f"{path / CONFIG}: {where} = {value!r:.60}, expected an integer in [{low}, {high}]; "
            "the config is corrupt or was crafted — refusing to build the model"
        )
    return value


def _check_keys(spec: dict, allowed: set[str], where: str, path: Path) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ModelFileError(
            f"{path / CONFIG}: {where} has unknown key(s) {unknown[:5]}; expected only "
            f"{', '.join(sorted(allowed))} — saved by a newer or a modified trafficrnn"
        )


def _check_model_config(mc: dict, path: Path) -> None:
    """Types and ranges of ``model_config`` (the EncoderForecaster kwargs), before anything is allocated."""
    _check_keys(mc, _MODEL_KEYS, "model_config", path)
    for key, low in (
        ("in_channels", 1),
        ("out_channels", 1),
        ("static_channels", 0),
        ("past_covariate_channels", 0),
        ("future_covariate_channels", 0),
    ):
        if key in mc:
            _int_in(mc[key], low, MAX_CHANNELS, f"model_config.{key}", path)
    hidden = mc.get("hidden_channels")
    if not isinstance(hidden, list) or not 1 <= len(hidden) <= MAX_LAYERS:
        raise ModelFileError(
            f"{path / CONFIG}: model_config.hidden_channels = {hidden!r:.60}, expected a list of "
            f"1 to {MAX_LAYERS} channel counts"
        )
    for i, h in enumerate(hidden):
        _int_in(h, 1, MAX_CHANNELS, f"model_config.hidden_channels[{i}]", path)
    _int_in(mc.get("kernel_size", 3), 1, MAX_KERNEL, "model_config.kernel_size", path)
    _int_in(mc.get("linear_leads", 0), 0, MAX_CHANNELS, "model_config.linear_leads", path)
    _int_in(mc.get("linear_lags", 1), 1, MAX_CHANNELS, "model_config.linear_lags", path)
    if mc.get("count_stage") is not None:
        _int_in(mc["count_stage"], 0, MAX_LAYERS, "model_config.count_stage", path)
    for key in ("feedback", "residual", "count_head", "density_per_cell", "count_validity"):
        if key in mc and not isinstance(mc[key], bool):
            raise ModelFileError(
                f"{path / CONFIG}: model_config.{key} = {mc[key]!r:.60}, expected true or false"
            )
    for key in ("cell", "output_activation"):
        if key in mc and not isinstance(mc[key], str):
            raise ModelFileError(
                f"{path / CONFIG}: model_config.{key} = {mc[key]!r:.60}, expected a name"
            )
    cell_kwargs = mc.get("cell_kwargs") or {}
    if not isinstance(cell_kwargs, dict):
        raise ModelFileError(
            f"{path / CONFIG}: model_config.cell_kwargs is {type(cell_kwargs).__name__}, expected a dict"
        )
    _check_keys(cell_kwargs, _CELL_KEYS, "model_config.cell_kwargs", path)
    encoder = mc.get("encoder")
    if encoder is None:
        return
    if not isinstance(encoder, dict):
        raise ModelFileError(
            f"{path / CONFIG}: model_config.encoder is {type(encoder).__name__}, expected a dict or null"
        )
    _check_keys(encoder, _ENCODER_KEYS, "model_config.encoder", path)
    for key, low, high in (
        ("in_channels", 1, MAX_CHANNELS),
        ("tile_size", 1, MAX_TILE),
        ("width", 1, MAX_CHANNELS),
        ("depth", 0, MAX_LAYERS),
        ("max_width", 1, MAX_CHANNELS),
    ):
        if key in encoder:
            _int_in(encoder[key], low, high, f"model_config.encoder.{key}", path)
    if encoder.get("out_channels") is not None:
        _int_in(encoder["out_channels"], 1, MAX_CHANNELS, "model_config.encoder.out_channels", path)
    if encoder.get("norm", "channel") not in ("batch", "channel"):
        raise ModelFileError(
            f"{path / CONFIG}: model_config.encoder.norm = {encoder['norm']!r:.60}, expected "
            "'batch' or 'channel'"
        )
    strides = encoder.get("strides")
    if strides is not None:
        if not isinstance(strides, list) or len(strides) > MAX_LAYERS:
            raise ModelFileError(
                f"{path / CONFIG}: model_config.encoder.strides = {strides!r:.60}, expected a list "
                f"of at most {MAX_LAYERS} integers"
            )
        for i, v in enumerate(strides):
            _int_in(v, 1, MAX_TILE, f"model_config.encoder.strides[{i}]", path)


def _check_quantile_head(config: dict, path: Path) -> None:
    """The levels of a quantile head (``model_config.quantiles``): absent or null (no head), else
    sorted, unique levels in (0, 1), the same as the ``quantiles`` option of ``params``."""
    levels = config["model_config"].get("quantiles")
    if levels is None:
        found = None
    elif not isinstance(levels, list) or len(levels) > MAX_CHANNELS:
        raise ModelFileError(
            f"{path / CONFIG}: model_config.quantiles = {levels!r:.60}, expected a list of at "
            f"most {MAX_CHANNELS} probability levels, or null; the config is corrupt or was modified"
        )
    else:
        from trafficrnn.estimation.calibration import check_quantiles  # xarray: for a head only

        try:
            found = check_quantiles(levels)
        except ConfigError as exc:
            raise ModelFileError(
                f"{path / CONFIG}: model_config.quantiles: {exc}; the config is corrupt or was "
                "modified — refusing to load"
            ) from None
    params = saved_params(config["params"])
    options = params.get("model_kwargs")
    option = options.get("quantiles") if isinstance(options, dict) else None
    if (tuple(option) if isinstance(option, (list, tuple)) else option) != found:
        raise ModelFileError(
            f"{path / CONFIG}: params' quantiles = {option!r:.60} but the network's quantile head "
            f"has the levels {found!r:.60}; the config is corrupt or was modified — refusing to load"
        )
    check_head_calibration(config.get("calibration"), found, path / CONFIG)


def check_head_calibration(calibration: Any, trained: tuple | None, where: Path) -> None:
    """Refuse a calibration of a quantile head (``scale="head"``) whose levels are not the ``trained``
    levels of the model's head (None: no head).

    Raises
    ------
    ModelFileError
    """
    if not isinstance(calibration, dict) or calibration.get("scale") != "head":
        return
    levels = calibration.get("levels")
    if trained is None or not isinstance(levels, list) or tuple(levels) != tuple(trained):
        raise ModelFileError(
            f"{where}: the calibration (adaptive='head') has the levels {levels!r:.60} but the "
            f"model's quantile head has {trained!r:.60}; the config is corrupt or was modified — "
            "refusing to load (calibrate the model again: model.calibrate(stack, adaptive='head'))"
        )


def _check_weights_fit(config: dict, state: dict, path: Path) -> None:
    """Build the model on the meta device (no memory) and compare every weight name and shape with the file."""
    import torch

    from trafficrnn.models import EncoderForecaster

    try:
        with torch.device("meta"):
            expected = {
                k: tuple(v.shape)
                for k, v in EncoderForecaster(**config["model_config"]).state_dict().items()
            }
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelFileError(
            f"{path / CONFIG}: model_config is invalid ({str(exc)[:200]})"
        ) from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:3]
        extra = sorted(set(found) - set(expected))[:3]
        shapes = [
            f"{k}: {found[k]} vs {expected[k]}"
            for k in sorted(set(expected) & set(found))
            if found[k] != expected[k]
        ][:3]
        raise ModelFileError(
            f"{path}: weights do not fit the model described by config.json (missing {missing}, "
            f"unexpected {extra}, shapes {shapes}); the folder mixes files of different models"
        )


def _check_vector_channels(config: dict, est, path: Path) -> None:
    """The forecaster's known-in-advance input channels must be the calendar, covariate and context
    channels the config describes (else a crafted covariate list would fail deep inside torch)."""
    from trafficrnn.estimation.inputs import Channels

    channels = Channels.of(
        est, bands=len(est.bands_), context=est.context_, covariates=est.covariates_, static=0
    )
    found = config["model_config"].get("future_covariate_channels", 0)
    if found != channels.future:
        raise ModelFileError(
            f"{path / CONFIG}: the forecaster reads {found} known-in-advance channel(s), but the "
            f"config describes {channels.future} ({channels.calendar} calendar, "
            f"{channels.covariates} covariate, {channels.context} context); the config was "
            "modified — refusing to load"
        )


def check_model_folder(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` where it exists; else a ModelFileError that says so, naming a saved model of a close name beside it.

    Raises
    ------
    ModelFileError
        If ``path`` does not exist, e.g. ``model folder my-modle does not exist (did you mean my-model?): ...``.
    """
    from difflib import get_close_matches
    from itertools import islice

    found = Path(path)
    if found.exists():
        return path
    parent = found.parent
    if (parent / "ensemble.json").is_file():
        raise ModelFileError(
            f"model folder {path} does not exist: the ensemble {parent} lists it as a member in "
            "ensemble.json, so the ensemble folder is incomplete; save the ensemble again "
            "(ForecastEnsemble.save, or trafficrnn train --members N)"
        )
    try:
        saved = (
            [
                p.name
                for p in islice(parent.iterdir(), 10_000)
                if (p / CONFIG).is_file() or (p / "ensemble.json").is_file()
            ]
            if parent.is_dir()
            else []
        )
    except OSError:  # an unreadable folder: no suggestion
        saved = []
    close = get_close_matches(found.name, saved, n=1)
    hint = f" (did you mean {parent / close[0]}?)" if close else ""
    raise ModelFileError(
        f"model folder {path} does not exist{hint}: expected the folder that "
        "`trafficrnn train --out FOLDER` (or TrafficForecaster.save) writes"
    )


def read_config(path) -> dict[str, Any]:
    """Read and validate ``config.json`` of a saved model before anything is built from it.

    Raises
    ------
    ModelFileError
        Missing files, invalid JSON, wrong format or version, bad types or values.
    """
    path = Path(check_model_folder(path))
    if not path.is_dir():
        raise ModelFileError(
            f"{path} is not a saved model folder but a file (a saved model is a folder with "
            "config.json and model.safetensors); save one with TrafficForecaster.save(path)"
        )
    if (path / "ensemble.json").is_file() and not (path / CONFIG).is_file():
        raise ModelFileError(
            f"{path} holds an ensemble (ensemble.json, one folder per member): load it with "
            "ForecastEnsemble.load(path), or trafficrnn.load(path) for either kind"
        )
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise ModelFileError(f"{path}: {name} is missing; the model folder is incomplete")
    config = read_format_json(
        path / CONFIG, format=FORMAT, kind="model", max_version=FORMAT_VERSION
    )
    model = _require(config, "model", str, path)
    if model.lower() not in MODEL_NAMES:
        raise ModelFileError(
            f"{path}: unknown model {model!r}; known: {', '.join(sorted(MODEL_NAMES))}"
        )
    for key, kind in (
        ("model_config", dict),
        ("params", dict),
        ("grid", dict),
        ("bands", list),
        ("input_bands", list),
        ("units", str),
        ("cadence", str),
        ("density_only", bool),
        ("target_normalizer", dict),
        ("input_normalizer", dict),
        ("weights_sha256", str),
    ):
        _require(config, key, kind, path)
    if (
        not all(isinstance(b, str) for b in config["bands"] + config["input_bands"])
        or not config["bands"]
    ):
        raise ModelFileError(f"{path / CONFIG}: bands must be non-empty lists of names")
    try:
        cadence = pd.Timedelta(config["cadence"])
    except ValueError:
        raise ModelFileError(
            f"{path / CONFIG}: cadence {config['cadence']!r} is not a duration"
        ) from None
    if cadence <= pd.Timedelta(0):
        raise ModelFileError(f"{path / CONFIG}: cadence {config['cadence']!r} must be positive")
    _check_removed(config, path)
    _check_model_config(config["model_config"], path)
    _check_quantile_head(config, path)
    params = config["params"]
    for key in ("input_steps", "horizon"):
        if (
            not isinstance(params.get(key), int)
            or isinstance(params.get(key), bool)
            or params[key] < 1
        ):
            raise ModelFileError(
                f"{path / CONFIG}: params.{key} = {params.get(key)!r}, expected a positive integer"
            )
    return config


def _gsd(config: dict, grid: Grid, path: Path) -> tuple[float, float]:
    """The image pixel size (x, y) the model was trained on, checked against its grid and tile size;
    models saved before it was recorded: the grid resolution divided by the tile size."""
    implied = tuple(float(r) / grid.tile_size for r in grid.resolution)
    gsd = config.get("gsd")
    if gsd is None:
        return implied
    ok = (
        isinstance(gsd, list)
        and len(gsd) == 2
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
            for v in gsd
        )
    )
    if not ok or not np.allclose(gsd, implied, rtol=1e-6):
        raise ModelFileError(
            f"{path / CONFIG}: gsd = {gsd!r:.60} does not match the grid's cells of "
            f"{grid.resolution} at tile_size={grid.tile_size} (expected {list(implied)}); "
            "the config is corrupt or was modified — refusing to load"
        )
    return float(gsd[0]), float(gsd[1])


def _naive_zone(config: dict, path: Path) -> str | None:
    """The zone whose wall clock the training stack's naive times read (None: UTC). Models saved before it was
    recorded read naive times as they were, on the clock of their ``timezone``: that zone."""
    from trafficrnn.params import known_zone

    zone = config["naive_zone"] if "naive_zone" in config else config["params"].get("timezone")
    if zone is None:
        return None
    if not known_zone(zone):
        raise ModelFileError(
            f"{path / CONFIG}: naive_zone = {zone!r:.60} is not a known IANA zone; the config is "
            "corrupt or was modified — refusing to load"
        )
    return str(zone)


def load_model(cls, path):
    """Rebuild a fitted TrafficForecaster from a folder written by :func:`save_model`.

    Never unpickles: weights are read with safetensors after their SHA-256 matches the config.

    Raises
    ------
    ModelFileError
        Invalid config, checksum mismatch, unreadable weights, or weights that do not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from trafficrnn.estimation.state import FittedState
    from trafficrnn.grid import Grid
    from trafficrnn.models import MODELS, EncoderForecaster

    path = Path(path)
    config = read_config(path)
    _check_sha256(path / WEIGHTS, config["weights_sha256"], "the weights")
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path / WEIGHTS} is not a readable safetensors file ({exc})"
        ) from None
    extras = {k: state.pop(k).numpy() for k in [k for k in state if k.startswith("context.")]}
    cell = config["model_config"].get("cell")
    if cell != MODELS.info(config["model"]).cell:
        raise ModelFileError(
            f"{path / CONFIG}: model {config['model']!r} with cell {cell!r} is inconsistent"
        )
    _check_weights_fit(config, state, path)
    params = saved_params(config["params"])
    try:
        est = cls(**params)
        cell = config["model_config"].get("cell")
        if cell != MODELS.info(config["model"]).cell:
            raise ModelFileError(
                f"{path / CONFIG}: model {config['model']!r} with cell {cell!r} is inconsistent"
            )
        net = EncoderForecaster(**config["model_config"])
        net.load_state_dict(state, strict=True)
        grid = Grid.from_dict(config["grid"])
        static_bands = [str(b) for b in config.get("static_bands", [])]
        est.state_ = FittedState.from_dict(
            config,
            arrays=extras,
            static=_read_static(config, grid, static_bands, path),
            gsd=_gsd(config, grid, path),
            naive_zone=_naive_zone(config, path),
        )
        _check_vector_channels(config, est, path)
    except (RuntimeError, TypeError) as exc:
        raise ModelFileError(
            f"{path}: weights do not fit the model described by config.json ({str(exc)[:200]})"
        ) from None
    except ModelFileError:
        raise
    except (ConfigError, GridError, ValueError) as exc:
        raise ModelFileError(f"{path / CONFIG}: {exc}") from None
    except TrafficRNNError:
        raise
    est.model_ = net.eval()
    return est
