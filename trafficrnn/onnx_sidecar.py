"""The sidecar JSON of an exported ONNX forecaster (``model.onnx.json`` beside ``model.onnx``): what a
deployment needs to prepare the network's inputs and read its output, and the fitted state that
:class:`~trafficrnn.onnx.OnnxForecaster` rebuilds the estimator's input preparation from.

Layout (``format: "trafficrnn-onnx"``, ``format_version: 1``): the readable deployment facts first
(``grid``, ``normalisation``, ``cadence``, ``bands``, ``input_steps``, ``horizon``, ``inputs`` and
``outputs`` with their names, shapes and channel order, ``context``, ``static``); then
``estimator`` (the model's parameters and fitted state, as in a saved model's ``config.json``) and
``arrays`` (the context maps and static layers: little-endian float32, base64, with their shape).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from trafficrnn._version import __version__
from trafficrnn.errors import ModelFileError, TrafficRNNError
from trafficrnn.io.formatfile import read_format_json

FORMAT = "trafficrnn-onnx"
FORMAT_VERSION = 1
#: the ONNX graph's inputs, in order (those the model does not read are left out of the graph)
INPUT_NAMES = ("x", "past_covariates", "future_covariates", "static", "last_target")
OUTPUT_NAME = "forecast"
#: the columns of :func:`trafficrnn.timeaxis.time_features`
CALENDAR_NAMES = ("time_of_day_sin", "time_of_day_cos", "week_sin", "week_cos")
STATIC_ARRAY = "static"

NORMALISATION = (
    "per band: normalised = (f(value) - mean) / scale, f = log1p where log1p is true, else the "
    "identity; NaN (missing) stays NaN and is masked by the network"
)


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of the ONNX file ``path``: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def encode_array(values: np.ndarray) -> dict[str, Any]:
    """``values`` as JSON: little-endian float32 bytes in base64, with the shape."""
    data = np.ascontiguousarray(values, dtype="<f4")
    return {
        "dtype": "float32",
        "byte_order": "little",
        "shape": list(data.shape),
        "base64": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def decode_array(spec: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array` (float32, native byte order).

    Raises
    ------
    KeyError, TypeError, ValueError
        A malformed entry (the reader names the file).
    """
    raw = base64.b64decode(spec["base64"], validate=True)
    return np.frombuffer(raw, dtype="<f4").reshape(spec["shape"]).astype("float32")


def channel_names(est: Any) -> dict[str, list[str]]:
    """The channel order of each network input beside ``x``, as :class:`~trafficrnn.estimation.inputs.Channels`
    documents it: calendar, covariates, context maps (``past``: with ``context_inputs``), observed
    targets and their validity (``past``: with ``target_inputs``); static: the user's layers, then
    the cell means."""
    bands = list(est.bands_)
    vectors = [f"calendar:{n}" for n in CALENDAR_NAMES] if est.time_features else []
    if est.covariates_ is not None:
        vectors += [f"covariate:{c}" for c in est.covariates_.columns]
    context = []
    for entry in est.context_.entries:
        context += [f"context:{entry}:{b}" for b in bands]
        if entry != "ha":
            context.append(f"context:{entry}:valid")
    observed = (
        [f"observed:{b}" for b in bands] + [f"observed_valid:{b}" for b in bands]
        if est.target_inputs
        else []
    )
    static = [f"static:{b}" for b in est.static_bands_]
    if est.context_.cell_mean:
        static += [f"cell_mean:{b}" for b in bands]
    return {
        "past_covariates": vectors + (context if est.context_inputs else []) + observed,
        "future_covariates": vectors + context,
        "static": static,
        "last_target": bands,
    }


def input_specs(est: Any) -> list[dict[str, Any]]:
    """Name, shape (``"batch"`` for the dynamic axis), dtype, channels and meaning of each input the
    exported network of the fitted estimator ``est`` reads, in the graph's order."""
    cfg = est.model_.config
    rows, cols = est.grid_.shape
    tile, steps, horizon = est.grid_.tile_size, int(est.input_steps), int(est.horizon)
    names = channel_names(est)
    x_what = "density grids" if est.density_only_ else "images"
    specs = [
        {
            "name": "x",
            "shape": ["batch", steps, cfg["in_channels"], rows * tile, cols * tile],
            "channels": list(est.input_bands_),
            "description": (
                f"the last input_steps {x_what}, oldest first, each band normalised with "
                f"normalisation.{'target' if est.density_only_ else 'input'}; NaN marks missing "
                "pixels"
            ),
        }
    ]
    sizes = {
        "past_covariates": (steps, cfg["past_covariate_channels"]),
        "future_covariates": (horizon, cfg["future_covariate_channels"]),
    }
    for name, (count, channels) in sizes.items():
        if channels:
            when = "input frame" if name == "past_covariates" else "lead time (issue + k * cadence)"
            specs.append(
                {
                    "name": name,
                    "shape": ["batch", count, channels, rows, cols],
                    "channels": names[name],
                    "description": (
                        f"per {when}: calendar channels of the local time (see timezone), "
                        "covariates standardised as in estimator.covariates, context maps; "
                        "per-step vectors broadcast over the grid"
                    ),
                }
            )
    if cfg["static_channels"]:
        specs.append(
            {
                "name": "static",
                "shape": ["batch", cfg["static_channels"], rows, cols],
                "channels": names["static"],
                "description": (
                    "static layers divided by static.scale, then the cell means "
                    f"(arrays.{STATIC_ARRAY} and arrays['context.cell_mean'] on the model's grid)"
                ),
            }
        )
    if est.target_inputs:
        specs.append(
            {
                "name": "last_target",
                "shape": ["batch", cfg["out_channels"], rows, cols],
                "channels": names["last_target"],
                "description": "the observed target of the last input frame, normalised; NaN: unobserved",
            }
        )
    for spec in specs:
        spec["dtype"] = "float32"
    return specs


def build_sidecar(
    est: Any, *, onnx_file: str, onnx_sha256: str, opset: int, estimator: dict[str, Any]
) -> dict[str, Any]:
    """The sidecar of the fitted estimator ``est`` exported to ``onnx_file``; ``estimator``: its
    parameters and fitted state in the keys of a saved model's ``config.json``."""
    grid = est.grid_
    rows, cols = grid.shape
    arrays = {k: encode_array(v) for k, v in est.context_.arrays().items()}
    kept = getattr(est, "static_", None)
    if kept is not None:
        arrays[STATIC_ARRAY] = encode_array(np.asarray(kept.values))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trafficrnn_version": __version__,
        "onnx_file": onnx_file,
        "onnx_sha256": onnx_sha256,
        "opset": int(opset),
        "model": est.model,
        "grid": {
            "crs_wkt": grid.crs.to_wkt(),
            "epsg": grid.crs.to_epsg(),
            "transform": [float(v) for v in grid.transform[:6]],
            "shape": [rows, cols],
            "tile_size": int(grid.tile_size),
            "image_shape": [rows * grid.tile_size, cols * grid.tile_size],
        },
        "cadence": est.cadence_.isoformat(),
        "input_steps": int(est.input_steps),
        "horizon": int(est.horizon),
        "bands": list(est.bands_),
        "input_bands": list(est.input_bands_),
        "units": est.units_,
        "density_only": bool(est.density_only_),
        "timezone": est.timezone,
        "naive_zone": est.naive_zone_,
        "normalisation": {
            "formula": NORMALISATION,
            "input": est.input_normalizer_.to_dict(),
            "target": est.target_normalizer_.to_dict(),
        },
        "inputs": input_specs(est),
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "shape": ["batch", int(est.horizon), len(est.bands_), rows, cols],
                "dtype": "float32",
                "channels": list(est.bands_),
                "description": (
                    "lead k = 1..horizon at issue + k * cadence, in normalised target units: "
                    "invert normalisation.target, then clip at 0"
                ),
            }
        ],
        "context": {
            **est.context_.to_dict(),
            "arrays": sorted(est.context_.arrays()),
            "how": (
                "the network reads the context maps as input channels (not embedded in the "
                "graph): 'ha' is arrays['context.ha_table'][slot of week of the lead time], a "
                "period P the observed value P before (and its validity), cell_mean a static layer"
            ),
        },
        "static": {
            "bands": list(est.static_bands_),
            "scale": [float(v) for v in est.static_scale_],
            "kept": kept is not None,
        },
        "estimator": estimator,
        "arrays": arrays,
    }


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read and check the sidecar of the ONNX file ``path``.

    Raises
    ------
    ModelFileError
        The sidecar is missing, not JSON, of another format or of a newer version.
    """
    file = sidecar_path(path)
    if not file.is_file():
        raise ModelFileError(
            f"{file} is missing: an exported model is the ONNX file and its sidecar JSON beside "
            "it; export again with TrafficForecaster.export_onnx (CLI: trafficrnn export)"
        )
    return read_format_json(
        file,
        format=FORMAT,
        kind="ONNX sidecar",
        max_version=FORMAT_VERSION,
        fix="export again with TrafficForecaster.export_onnx (CLI: trafficrnn export)",
    )


def restore(cls: type, spec: dict[str, Any], file: Path) -> Any:
    """An estimator of class ``cls`` with the parameters and fitted state of the sidecar ``spec``
    (read from ``file``), without a network: the caller sets ``model_``.

    Raises
    ------
    ModelFileError
        A missing or malformed field.
    """
    from trafficrnn.estimation.inputs import kept_static
    from trafficrnn.estimation.state import FittedState
    from trafficrnn.grid import Grid

    try:
        config = spec["estimator"]
        from trafficrnn.estimation.persist import saved_params

        est = cls(**saved_params(config["params"]))
        arrays = {k: decode_array(v) for k, v in spec.get("arrays", {}).items()}
        static = arrays.pop(STATIC_ARRAY, None)
        if static is not None:
            grid = Grid.from_dict(config["grid"])
            static = kept_static(
                _layers(static), grid, [str(b) for b in config.get("static_bands", [])]
            )
        est.state_ = FittedState.from_dict(config, arrays=arrays, static=static)
    except (KeyError, TypeError, ValueError, AttributeError, TrafficRNNError) as exc:
        raise ModelFileError(
            f"{sidecar_path(file)}: the estimator's state is incomplete or malformed ({exc!r:.200}); "
            "export the model again"
        ) from None
    return est


def _layers(values: np.ndarray) -> Any:
    import xarray as xr

    return xr.DataArray(values, dims=("band", "y", "x"))
