"""ONNX out for deployment: :func:`export_onnx` writes a fitted forecaster's network as ONNX with a
sidecar JSON, :class:`OnnxForecaster` runs it in onnxruntime behind the estimator's own input
preparation and returns the same georeferenced forecast as ``TrafficForecaster.predict``.

The graph (``torch.onnx.export`` with the ``torch.export`` based exporter, whose default opset is
used, >= 17) reads the inputs that :mod:`trafficrnn.estimation.inputs` prepares, as maps:
``x (batch, input_steps, C, H, W)`` and, where the model reads them, ``past_covariates``,
``future_covariates``, ``static`` and ``last_target`` (see the sidecar's ``inputs``); it returns
``forecast (batch, horizon, bands, rows, cols)`` in normalised target units. The batch axis is
dynamic; the grid and ``horizon`` are fixed at export (shorter horizons: the runner pads the
known-in-advance inputs and keeps the first leads, which depend on nothing after them).
Needs the ``onnx`` extra: ``pip install 'trafficrnn[onnx]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trafficrnn.errors import (
    ExportError,
    MissingDependencyError,
    ModelFileError,
    ModelMismatchError,
)
from trafficrnn.io.atomic import atomic_output, check_output
from trafficrnn.onnx_sidecar import (
    INPUT_NAMES,
    OUTPUT_NAME,
    build_sidecar,
    input_specs,
    read_sidecar,
    restore,
    sidecar_path,
)

__all__ = ["export_onnx", "OnnxForecaster", "sidecar_path", "MIN_OPSET"]

log = logging.getLogger(__name__)

MIN_OPSET = 17
#: export's self-check: the ONNX graph's forecast of random inputs against the torch network's
RTOL, ATOL = 1e-4, 1e-5


def require(*packages: str) -> None:
    """Import ``packages`` (``onnx``, ``onnxscript``, ``onnxruntime``) or raise a clear error.

    Raises
    ------
    MissingDependencyError
        Naming the missing packages and the ``onnx`` extra that installs them.
    """
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependencyError(
            f"ONNX export and inference need {', '.join(packages)}; missing: {', '.join(missing)}: "
            "pip install 'trafficrnn[onnx]'"
        )


def _require_exporter() -> None:
    """Refuse a torch without the ``torch.export``-based ONNX exporter (``dynamo=True``, torch >= 2.5)."""
    import inspect

    import torch

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise MissingDependencyError(
            f"ONNX export needs torch.onnx.export(..., dynamo=True) (torch >= 2.5); this is torch "
            f"{torch.__version__}: upgrade torch (tested with 2.13)"
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- export ---------------------------------------------------------------------------------
def _network(est: Any) -> Any:
    """The fitted network with a fixed horizon and the inputs as positional tensors (the graph's inputs)."""
    import torch

    class Network(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, horizon: int) -> None:
            super().__init__()
            self.net, self.horizon = net, horizon

        def forward(
            self, x, past_covariates=None, future_covariates=None, static=None, last_target=None
        ):
            return self.net(
                x,
                horizon=self.horizon,
                past_covariates=past_covariates,
                future_covariates=future_covariates,
                static=static,
                last_target=last_target,
            )

    return Network(est.model_, int(est.horizon)).eval()


def _example_inputs(est: Any, specs: list[dict], batch: int = 2) -> dict[str, Any]:
    """Random inputs of the sidecar's shapes (a batch of 2: the exporter keeps 1 as a constant)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = {s["name"]: [batch, *s["shape"][1:]] for s in specs}
    return {
        name: torch.rand(*shapes[name], generator=gen) if name in shapes else None
        for name in INPUT_NAMES
    }


def _to_onnx(est: Any, inputs: dict[str, Any]) -> tuple[bytes, int]:
    """The network as ONNX bytes and its opset, exported by ``torch.export`` with a dynamic batch axis."""
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = {k: (None if v is None else {0: batch}) for k, v in inputs.items()}
    args = tuple(inputs.values())
    # the exporter logs each step, warns about torchvision and deprecations: keep the user's console clean
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _network(est),
                args,
                dynamo=True,
                dynamic_shapes=shapes,
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
    except Exception as exc:  # torch.export's errors have no common base class
        raise ExportError(
            f"torch.onnx.export could not trace the {est.model} network ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}); save the model with TrafficForecaster.save "
            "and run it with torch instead"
        ) from exc
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        raise ExportError(f"the exporter wrote opset {opset}, expected >= {MIN_OPSET}")
    return proto.SerializeToString(), int(opset)


def _check_graph(est: Any, data: bytes, inputs: dict[str, Any]) -> None:
    """Refuse a graph whose forecast of ``inputs`` differs from the torch network's."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {k: v.numpy() for k, v in inputs.items() if v is not None}
    got = session.run([OUTPUT_NAME], feeds)[0]
    with torch.inference_mode():
        want = _network(est)(*inputs.values()).numpy()
    if got.shape != want.shape or not np.allclose(got, want, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise ExportError(
            f"the ONNX graph's forecast differs from the torch network's (largest difference "
            f"{worst:.3g}, shapes {got.shape} vs {want.shape}); nothing was written: run the "
            "model with torch (TrafficForecaster.save / load)"
        )


def _estimator_config(est: Any) -> dict[str, Any]:
    """The parameters and fitted state, in the keys of a saved model's ``config.json``."""
    from trafficrnn.estimation.persist import jsonable

    return {
        "model": est.model,
        "model_config": jsonable(est.model_.config),
        "params": jsonable(est.get_params()),
        **jsonable(est.state_.to_dict()),
    }


def export_onnx(model: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the network of a fitted forecaster as ONNX to ``path``, with its sidecar ``path + ".json"``.

    Both files are written atomically, after the exported graph has been run in onnxruntime and
    checked against the torch network on random inputs (within ``rtol=1e-4, atol=1e-5``).

    Parameters
    ----------
    model : TrafficForecaster
        Fitted. A :class:`~trafficrnn.ensemble.ForecastEnsemble` is refused: export its members.
    path : path-like
        The ``.onnx`` file; the sidecar (grid, normalisation, cadence, bands, steps, the inputs'
        names, shapes and channels, context maps, version; see :mod:`trafficrnn.onnx_sidecar`)
        goes beside it as ``<name>.onnx.json``.
    overwrite : bool
        Replace existing files; otherwise refuse them.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    NotFittedError
        Before ``fit``.
    ExportError
        An ensemble; a model with a quantile head; a path not ending in ``.onnx`` or in a
        missing folder; a network the exporter cannot trace, or whose graph disagrees with it.
    OutputExistsError
        ``path`` or its sidecar exists and ``overwrite`` is false.
    MissingDependencyError
        onnx, onnxscript or onnxruntime is not installed.
    """
    from trafficrnn.ensemble import ForecastEnsemble

    if isinstance(model, ForecastEnsemble):
        n = len(model.estimators_) if model.is_fitted else model.members
        raise ExportError(
            f"a ForecastEnsemble of {n} members has no single network to export as ONNX: export "
            "each member, e.g. for i, member in enumerate(ensemble.estimators_): "
            "member.export_onnx(f'member-{i}.onnx') (CLI: trafficrnn export ENSEMBLE/member-0 "
            "--out member-0.onnx), and average their forecasts"
        )
    model._check_fitted()
    levels = getattr(model.model_, "quantiles", None)
    if levels is not None:
        raise ExportError(
            f"the {model.model} model has a quantile head (quantiles={tuple(levels)}), which the "
            "ONNX export does not carry (its graph returns the point forecast alone): run the "
            "model with torch (TrafficForecaster.save / load) for its quantiles, or export a "
            "model trained without model_kwargs={'quantiles': ...}"
        )
    path = check_output(path, overwrite=overwrite, suffixes=(".onnx",))
    side = check_output(sidecar_path(path), overwrite=overwrite)
    require("onnx", "onnxscript", "onnxruntime")
    _require_exporter()
    specs = input_specs(model)
    inputs = _example_inputs(model, specs)
    data, opset = _to_onnx(model, inputs)
    _check_graph(model, data, inputs)
    sidecar = build_sidecar(
        model,
        onnx_file=path.name,
        onnx_sha256=_sha256(data),
        opset=opset,
        estimator=_estimator_config(model),
    )
    with atomic_output(side, overwrite=overwrite) as tmp_side:
        tmp_side.write_text(json.dumps(sidecar, indent=1))
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(data)
    log.info("exported %s (opset %d) and %s", path, opset, side)
    return path


# -- inference -------------------------------------------------------------------------------
class _OrtNetwork:
    """Stands in for the torch network inside the estimator's ``predict_many``: the same prepared
    tensors go to an onnxruntime session instead."""

    tile_encoder = None  # predict_many then feeds frames, not cached tile features

    def __init__(self, session: Any, spec: dict[str, Any]) -> None:
        self.session = session
        self.horizon = int(spec["horizon"])
        self.shapes = {s["name"]: tuple(s["shape"][1:]) for s in spec["inputs"]}

    def eval(self) -> _OrtNetwork:
        return self

    def __call__(self, x: Any, *, horizon: int, encoded: bool = False, **given: Any) -> Any:
        import torch

        if tuple(x.shape[1:]) != self.shapes["x"]:
            raise ModelMismatchError(
                f"the ONNX model was exported for inputs x of shape (batch, {self.shapes['x']}) "
                f"(its training grid), this stack gives {tuple(x.shape[1:])}: forecast on the "
                "model's grid, or run the torch model (TrafficForecaster.load) on other areas"
            )
        feeds = {"x": x.numpy()}
        for name, shape in self.shapes.items():
            if name == "x":
                continue
            value = given.get(name)
            if value is None:
                raise ModelMismatchError(f"the ONNX model reads {name}, which was not prepared")
            value = value.numpy()
            if value.ndim == 3 and len(shape) == 4:  # per-step vectors: broadcast over the grid
                value = np.broadcast_to(value[..., None, None], (*value.shape, *shape[-2:]))
            if name == "future_covariates" and value.shape[1] < self.horizon:
                # a shorter horizon: repeat the last lead's inputs; leads never read later ones
                pad = np.repeat(value[:, -1:], self.horizon - value.shape[1], axis=1)
                value = np.concatenate([value, pad], axis=1)
            feeds[name] = np.ascontiguousarray(value, dtype=np.float32)
        out = self.session.run([OUTPUT_NAME], feeds)[0]
        return torch.from_numpy(np.ascontiguousarray(out[:, :horizon]))


class OnnxForecaster:
    """An exported forecaster run in onnxruntime, with ``TrafficForecaster``'s input preparation.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file :func:`export_onnx` wrote (its sidecar beside it).
    threads : int, optional
        onnxruntime's intra-op threads (default: its own choice).
    providers : list of str, optional
        onnxruntime execution providers (default: CPU).

    Attributes
    ----------
    forecaster : TrafficForecaster
        The estimator rebuilt from the sidecar whose network is the onnxruntime session: its fitted
        attributes (``grid_``, ``bands_``, ``cadence_`` ...) are also this object's.

    Raises
    ------
    ModelFileError
        A missing or corrupt sidecar, or an ONNX file that is not the one it describes.
    MissingDependencyError
        onnxruntime is not installed.
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        from trafficrnn.estimator import TrafficForecaster

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(
                f"{path} does not exist: expected the .onnx file that "
                "TrafficForecaster.export_onnx (CLI: trafficrnn export) writes"
            )
        spec = read_sidecar(path)
        data = path.read_bytes()
        if _sha256(data) != spec.get("onnx_sha256"):
            raise ModelFileError(
                f"{path}: checksum does not match its sidecar's onnx_sha256; the ONNX file was "
                "modified or belongs to another export — export the model again"
            )
        require("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(
            data, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.path, self.spec = path, spec
        self.forecaster = restore(TrafficForecaster, spec, path)
        self.forecaster.model_ = _OrtNetwork(session, spec)

    def __getattr__(self, name: str) -> Any:
        # only for names not found normally: the parameters and fitted attributes of the forecaster
        if name.startswith("__") or "forecaster" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.forecaster, name)

    def __repr__(self) -> str:
        return f"OnnxForecaster({str(self.path)!r}) [{self.forecaster!r}]"

    def predict(self, images: Any, **kwargs: Any) -> Any:
        """Forecast the leads after the last frame of ``images``: :meth:`TrafficForecaster.predict
        <trafficrnn.estimator.TrafficForecaster.predict>` with the network run in onnxruntime (the
        same arguments, checks, errors and georeferenced ``(lead, band, y, x)`` DataArray)."""
        return self.forecaster.predict(images, **kwargs)

    def predict_many(self, images: Any, issue_indices: Any, **kwargs: Any) -> Any:
        """:meth:`TrafficForecaster.predict_many <trafficrnn.estimator.TrafficForecaster.predict_many>`
        with the network run in onnxruntime."""
        return self.forecaster.predict_many(images, issue_indices, **kwargs)
