"""ForecastEnsemble: several TrafficForecasters of the same settings and different seeds, averaged.

A deep ensemble (Lakshminarayanan et al., 2017): the members differ only in their seed (weights
drawn at the start, order of the training windows), so averaging their forecasts cancels much of
the run-to-run noise of one training, and their spread says where the forecast is uncertain.
The members can train side by side in worker processes (``n_jobs``), each with its share of the
cores (``benchmarks/README.md`` measures what that gains for small models on a CPU).

The ensemble has the surface of a fitted :class:`~trafficrnn.estimator.TrafficForecaster`:
``predict`` / ``predict_many`` return the member mean (``members=True``: every member along a
``member`` dimension), ``evaluate`` scores it beside the baselines, ``save`` / ``load`` write and
read a folder holding one saved model per member plus ``ensemble.json``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn._version import __version__
from trafficrnn.errors import ConfigError, ModelFileError, NotFittedError
from trafficrnn.io.formatfile import read_format_json

FORMAT = "trafficrnn-ensemble"
FORMAT_VERSION = 1
MANIFEST = "ensemble.json"
MAX_MEMBERS = 64
_MEMBER_NAME = re.compile(r"member-\d{1,2}")
#: what every member must share for their forecasts to be averaged cell by cell
_SHARED = (
    "bands_",
    "input_bands_",
    "units_",
    "cadence_",
    "density_only_",
    "input_steps",
    "horizon",
    "static_bands_",
    "target_inputs",
)
#: read-only attributes the ensemble answers with its first member's (identical in all, see _SHARED)
_DELEGATED = frozenset(
    {
        *_SHARED,
        "state_",
        "grid_",
        "context_",
        "static_scale_",
        "static_",
        "covariates_",
        "split_",
        "cell_mean",
        "context_inputs",
        "time_features",
        "timezone",
        "naive_zone_",
        "val",
        "test",
        "history_needed",
        "check_stack",
        "_observed",
        "input_normalizer_",
        "target_normalizer_",
        "gsd_",
    }
)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fit_member(
    params: dict,
    images,
    target,
    data: dict,
    threads: int | None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
):
    """Fit one member (in a worker process when ``threads`` is set: that many torch threads)."""
    from trafficrnn.estimator import TrafficForecaster

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return TrafficForecaster(**params).fit(
        images, target, **data, checkpoint_dir=checkpoint_dir, resume=resume
    )


class ForecastEnsemble:
    """A deep ensemble of :class:`~trafficrnn.estimator.TrafficForecaster` members.

    Parameters
    ----------
    estimator : TrafficForecaster, optional
        The settings every member copies (not fitted itself); member ``i`` trains with seed
        ``estimator.seed + i``. Default: ``TrafficForecaster()``.
    members : int
        Number of members (>= 1).
    n_jobs : int
        Members trained at once, each in its own worker process with ``cores // n_jobs`` torch
        threads (1: one after another in this process). With ``n_jobs == members`` the ensemble
        takes about the wall time of one member (``max_time`` holds per member). Worker processes
        are started by joblib (loky): in a script, keep the call under ``if __name__ == "__main__":``.

    Examples
    --------
    >>> ens = ForecastEnsemble(TrafficForecaster("convgru", max_time=10), members=2, n_jobs=2)  # doctest: +SKIP
    >>> ens.fit(grids).predict(grids, members=True).std("member")  # doctest: +SKIP
    """

    def __init__(self, estimator=None, *, members: int = 3, n_jobs: int = 1) -> None:
        self.estimator = estimator
        self.members = members
        self.n_jobs = n_jobs

    # -- scikit-learn plumbing ----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"estimator": self.estimator, "members": self.members, "n_jobs": self.n_jobs}

    def set_params(self, **params: Any) -> ForecastEnsemble:
        for key, value in params.items():
            if key not in ("estimator", "members", "n_jobs"):
                raise ValueError(f"unknown parameter {key!r}; valid: estimator, members, n_jobs")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        status = (
            f"fitted, grid={self.grid_.shape}, bands={self.bands_}"
            if self.is_fitted
            else "not fitted"
        )
        return f"ForecastEnsemble({self._template()!r}, members={self.members}, n_jobs={self.n_jobs}) [{status}]"

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found normally: the shared, read-only facts of the members
        if name in _DELEGATED:
            members = self.__dict__.get("estimators_")
            if not members:
                raise NotFittedError(
                    f"this ForecastEnsemble is not fitted yet: {name} needs fit(...) or "
                    "ForecastEnsemble.load(path)"
                )
            return getattr(members[0], name)
        raise AttributeError(f"'ForecastEnsemble' object has no attribute {name!r}")

    def _template(self):
        from trafficrnn.estimator import TrafficForecaster

        return TrafficForecaster() if self.estimator is None else self.estimator

    @property
    def is_fitted(self) -> bool:
        return bool(self.__dict__.get("estimators_"))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "this ForecastEnsemble is not fitted yet: call fit(...) or ForecastEnsemble.load(path)"
            )

    @property
    def model(self) -> str:
        """Name used in forecasts and evaluation tables, e.g. ``convgru-ensemble3``."""
        names = (
            sorted({e.model for e in self.estimators_})
            if self.is_fitted
            else [self._template().model]
        )
        n = len(self.estimators_) if self.is_fitted else self.members
        return f"{'+'.join(names)}-ensemble{n}"

    @property
    def training_summary_(self) -> dict[str, Any]:
        """Members' summaries; ``train_seconds`` is the longest member's, ``parameters`` the total."""
        self._check_fitted()
        runs = [e.training_summary_ for e in self.estimators_]
        return {
            "members": len(runs),
            "seeds": [e.seed for e in self.estimators_],
            "epochs": [r.get("epochs") for r in runs],
            "train_seconds": max(float(r.get("train_seconds", 0.0)) for r in runs),
            "parameters": int(sum(r.get("parameters", 0) for r in runs)),
            "wall_seconds": getattr(self, "fit_seconds_", None),
            "runs": runs,
        }

    # -- fit ----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        from trafficrnn.estimator import TrafficForecaster

        if self.estimator is not None and not isinstance(self.estimator, TrafficForecaster):
            raise ConfigError(
                f"estimator is a {type(self.estimator).__name__}, expected a TrafficForecaster "
                "(its settings are copied by every member)"
            )
        for name, value, low in (("members", self.members, 1), ("n_jobs", self.n_jobs, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name}={value!r} is invalid: expected an integer >= {low}")
        if self.members > MAX_MEMBERS:
            raise ConfigError(f"members={self.members} is invalid: expected at most {MAX_MEMBERS}")

    def fit(
        self,
        images: xr.DataArray,
        target: xr.DataArray | None = None,
        *,
        vehicles: Any = None,
        static: xr.DataArray | None = None,
        covariates: pd.DataFrame | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        init: Any = None,
    ) -> ForecastEnsemble:
        """Fit every member on the same data (arguments as :meth:`TrafficForecaster.fit`).

        ``init``: every member starts from that model's weights (their seeds still differ in the
        order of the training windows).

        ``checkpoint_dir``: member ``i`` keeps its checkpoints in ``checkpoint_dir/member-<i>``.
        ``resume``: after an interruption, members that had finished are read back and the others
        continue from their last epoch (see :meth:`TrafficForecaster.fit`).

        Raises
        ------
        ConfigError, GridError, TimestampError, CadenceError, ModelFileError
            As :meth:`TrafficForecaster.fit` (raised by the first member to fail).
        """
        import time

        self._validate_params()
        if resume and checkpoint_dir is None:
            raise ConfigError(
                "resume=True needs checkpoint_dir=...: the folder of the ensemble's run to continue"
            )
        dirs = [None] * int(self.members)
        if checkpoint_dir is not None:
            from trafficrnn.estimation.checkpoints import check_folder

            check_folder(Path(checkpoint_dir), resume=True)  # a folder (or none yet), not a file
            dirs = [Path(checkpoint_dir) / f"member-{i}" for i in range(int(self.members))]
            for d in dirs:  # before any member starts: none may train over an earlier run
                check_folder(d, resume)
        template = self._template()
        template._validate_params()
        base = template.get_params()
        jobs = min(int(self.n_jobs), int(self.members))
        params = [
            {**base, "seed": int(base["seed"]) + i, **({"progress": False} if jobs > 1 else {})}
            for i in range(int(self.members))
        ]
        from trafficrnn.estimation.inputs import data_kwargs

        data = data_kwargs(static, covariates)
        if vehicles is not None:
            data["vehicles"] = vehicles
        if init is not None:
            data["init"] = init
        started = time.perf_counter()
        if jobs == 1:
            fitted = [
                _fit_member(p, images, target, data, None, d, resume) for p, d in zip(params, dirs)
            ]
        else:
            from joblib import Parallel, delayed

            threads = max(1, _cores() // jobs)
            fitted = Parallel(n_jobs=jobs, backend="loky")(
                delayed(_fit_member)(p, images, target, data, threads, d, resume)
                for p, d in zip(params, dirs)
            )
        self.fit_seconds_ = round(time.perf_counter() - started, 2)
        self.estimators_ = list(fitted)
        return self

    # -- predict ------------------------------------------------------------------------
    def _combine(self, forecasts: list[xr.DataArray], members: bool) -> xr.DataArray:
        seeds = [int(e.seed) for e in self.estimators_]
        stacked = xr.concat(
            forecasts,
            dim=pd.Index(np.arange(len(forecasts)), name="member"),
            coords="minimal",
            compat="override",
            combine_attrs="override",
        )
        stacked = stacked.assign_coords(seed=("member", seeds))
        out = (
            stacked
            if members
            else stacked.mean("member", keep_attrs=True).drop_vars("seed", errors="ignore")
        )
        out.attrs.update(forecasts[0].attrs)
        out.attrs["model"] = self.model
        out.attrs["members"] = len(forecasts)
        return out

    def predict_many(
        self,
        images: xr.DataArray,
        issue_indices: Any,
        *,
        members: bool = False,
        quantiles: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> xr.DataArray:
        """Forecasts issued at several frames → ``(issued, lead, band, y, x)``, the member mean.

        ``members=True``: every member's forecast along a leading ``member`` dimension (with a
        ``seed`` coordinate), e.g. for ``.std("member")`` or quantiles. ``quantiles``: as
        :meth:`predict`. Other keyword arguments (``horizon``, ``static``, ``target``,
        ``covariates``, ``batch_size``) as :meth:`TrafficForecaster.predict_many`.
        """
        self._check_fitted()

        def forecast(every: bool, levels: tuple[float, ...] | None = None) -> xr.DataArray:
            extra = {} if levels is None else {"quantiles": levels}
            found = [
                e.predict_many(images, issue_indices, **kwargs, **extra) for e in self.estimators_
            ]
            return self._combine(found, every)

        if quantiles is None:
            return forecast(members)
        return self._quantiles(forecast, quantiles, members)

    def predict(
        self,
        images: xr.DataArray,
        *,
        members: bool = False,
        quantiles: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> xr.DataArray:
        """Forecast the frames after the last one of ``images``: ``(lead, band, y, x)``, the member mean.

        ``members=True`` keeps every member along a ``member`` dimension. ``quantiles``: levels
        along a leading ``quantile`` dimension: those of the calibrated ensemble (:meth:`calibrate`)
        around the member mean where it is calibrated (the calibration wins); else, where every
        member has a quantile head with the same levels (``model_kwargs={"quantiles": ...}``), the
        mean of the members' quantiles, level by level (quantile averaging, which keeps them
        sorted). Other keyword arguments as :meth:`TrafficForecaster.predict`.

        Raises
        ------
        ConfigError, CalibrationError
            ``members`` with ``quantiles``; bad quantiles; quantiles of an ensemble neither
            calibrated nor of members with quantile heads.
        """
        self._check_fitted()

        def forecast(every: bool, levels: tuple[float, ...] | None = None) -> xr.DataArray:
            extra = {} if levels is None else {"quantiles": levels}
            return self._combine(
                [e.predict(images, **kwargs, **extra) for e in self.estimators_], every
            )

        if quantiles is None:
            return forecast(members)
        return self._quantiles(forecast, quantiles, members)

    def _quantiles(self, forecast, quantiles: Any, members: bool) -> xr.DataArray:
        """The quantile forecast of the calibrated ensemble, else the mean of its members' quantile
        heads' (``forecast(every, levels)``: the combined forecasts, or the members' quantiles).

        Raises
        ------
        ConfigError, CalibrationError
        """
        from trafficrnn.estimation.calibration import check_quantiles, quantile_forecast
        from trafficrnn.estimation.quantile_head import quantile_plan

        check_quantiles(quantiles)  # bad levels are refused before members=True is
        if members:
            raise ConfigError(
                "members=True with quantiles: ask for one or the other (the quantiles are "
                "those of the calibrated member mean, or the mean of the members' quantile heads')"
            )
        quantiles, method = quantile_plan(self, quantiles)
        if method == "head":
            return forecast(False, quantiles)
        if method == "conformal head":
            return self._conformal_head(forecast, quantiles)
        calibration = self.calibration_
        if calibration.scale == "spread":  # adaptive: the members' spread scales the radii
            every = forecast(True)
            mean = every.mean("member", keep_attrs=True).drop_vars("seed", errors="ignore")
            spread = every.std("member").drop_vars("seed", errors="ignore")
            return quantile_forecast(mean, calibration, quantiles, spread=spread)
        return quantile_forecast(forecast(False), calibration, quantiles)

    def _conformal_head(self, forecast, quantiles: tuple[float, ...]) -> xr.DataArray:
        """The members' averaged head quantiles at their trained levels plus the conformal shifts of
        the ensemble's calibration (``adaptive="head"``), sorted, clipped at 0, at ``quantiles``.

        Raises
        ------
        CalibrationError
            More leads than calibrated.
        """
        from trafficrnn.estimation.conformal_head import METHOD_LABEL, conformalise
        from trafficrnn.estimation.quantile_head import head_forecast, head_levels

        trained = head_levels(self)  # the levels asked lie within them (quantile_plan)
        averaged = forecast(False, trained)
        values = conformalise(np.asarray(averaged.values), self.calibration_.shifts)
        point = averaged.isel(quantile=0).drop_vars("quantile")
        point.attrs = {k: v for k, v in averaged.attrs.items() if k != "quantile_method"}
        return head_forecast(point, values, trained, quantiles, METHOD_LABEL)

    def calibrate(
        self, images: xr.DataArray, target: xr.DataArray | None = None, **kwargs: Any
    ) -> ForecastEnsemble:
        """Split-conformal calibration of the member mean on held-out frames before the test part
        (``calibration_``, saved in ``ensemble.json``); arguments as :meth:`TrafficForecaster.calibrate`,
        and ``adaptive="spread"``: radii in units of the members' spread (intervals widen where they
        disagree; see :mod:`trafficrnn.estimation.adaptive`); ``adaptive="head"`` (members with a
        quantile head): conformal shifts of the members' averaged head quantiles.

        Raises
        ------
        CalibrationError, NotFittedError, ModelMismatchError, ConfigError
        """
        from trafficrnn.estimation.calibration import calibrate

        self._check_fitted()
        self.calibration_ = calibrate(self, images, target, **kwargs)
        return self

    def evaluate(
        self, images: xr.DataArray, target: xr.DataArray | None = None, **kwargs: Any
    ) -> pd.DataFrame:
        """Per-lead scores of the ensemble mean beside the baselines; see :meth:`TrafficForecaster.evaluate`."""
        from trafficrnn.estimation.evaluation import evaluate

        return evaluate(self, images, target, **kwargs)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``ensemble.json`` and one saved model per member (``member-0`` ...) to the folder ``path``, atomically.

        Raises
        ------
        NotFittedError, OutputExistsError
        """
        from trafficrnn.estimation.persist import save_model
        from trafficrnn.io.atomic import atomic_output

        self._check_fitted()
        path = Path(path)
        names = [f"member-{i}" for i in range(len(self.estimators_))]
        with atomic_output(path, overwrite=overwrite, directory=True) as tmp:
            for name, est in zip(names, self.estimators_):
                save_model(est, tmp / name)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "trafficrnn_version": __version__,
                "model": self.model,
                "members": names,
                "n_jobs": int(self.n_jobs),
                "fit_seconds": getattr(self, "fit_seconds_", None),
            }
            calibration = getattr(self, "calibration_", None)
            if calibration is not None:
                manifest["calibration"] = calibration.to_dict()
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return path

    def export_onnx(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Refused: an ensemble has no single network; export each member (``estimators_[i].export_onnx``).

        Raises
        ------
        ExportError
            Always, saying how to export the members.
        """
        from trafficrnn.onnx import export_onnx

        return export_onnx(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> ForecastEnsemble:
        """Load a saved ensemble: every member through :meth:`TrafficForecaster.load` (no unpickling,
        checksums verified), then checked to share grid, bands, cadence and windows.

        Raises
        ------
        ModelFileError
            A missing or invalid ``ensemble.json``, a member folder that is missing, tampered or
            saved from another model, or members that do not fit together.
        """
        from trafficrnn.estimator import TrafficForecaster

        path = Path(path)
        manifest = read_manifest(path)
        members = [TrafficForecaster.load(path / name) for name in manifest["members"]]
        first = members[0]
        for name, est in zip(manifest["members"][1:], members[1:]):
            for key in _SHARED:
                if getattr(est, key) != getattr(first, key):
                    raise ModelFileError(
                        f"{path / name}: {key} = {getattr(est, key)!r:.80} but the first member has "
                        f"{getattr(first, key)!r:.80}; the members of an ensemble must be "
                        "trained on the same stack with the same settings"
                    )
            if not est.grid_.matches(first.grid_) or est.grid_.tile_size != first.grid_.tile_size:
                raise ModelFileError(
                    f"{path / name}: grid {est.grid_} differs from the first member's {first.grid_}"
                )
            if _covariate_columns(est) != _covariate_columns(first):
                raise ModelFileError(
                    f"{path / name}: covariates {_covariate_columns(est)} differ from the first "
                    f"member's {_covariate_columns(first)}"
                )
        ens = cls(
            TrafficForecaster(**first.get_params()),
            members=len(members),
            n_jobs=int(manifest.get("n_jobs", 1)),
        )
        ens.estimators_ = members
        ens.fit_seconds_ = manifest.get("fit_seconds")
        if manifest.get("calibration") is not None:
            from trafficrnn.estimation.calibration import Calibration
            from trafficrnn.estimation.persist import check_head_calibration
            from trafficrnn.estimation.quantile_head import head_levels

            check_head_calibration(manifest["calibration"], head_levels(ens), path / MANIFEST)
            try:
                ens.calibration_ = Calibration.from_dict(manifest["calibration"])
            except ConfigError as exc:
                raise ModelFileError(f"{path / MANIFEST}: {exc}") from None
        return ens


def load(path: str | Path):
    """Load a saved model folder of either kind: a :class:`ForecastEnsemble` (``ensemble.json``) or
    a :class:`~trafficrnn.estimator.TrafficForecaster`.

    Raises
    ------
    ModelFileError
    """
    from trafficrnn.estimator import TrafficForecaster

    return ForecastEnsemble.load(path) if is_ensemble(path) else TrafficForecaster.load(path)


def _covariate_columns(est) -> list[str] | None:
    return None if est.covariates_ is None else list(est.covariates_.columns)


def is_ensemble(path: str | Path) -> bool:
    """Whether the folder ``path`` holds a saved ensemble (an ``ensemble.json``)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate ``ensemble.json`` (format, version, member folder names) before loading anything.

    Raises
    ------
    ModelFileError
    """
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise ModelFileError(
            f"{path} is not a saved ensemble folder ({MANIFEST} is missing); save one with "
            "ForecastEnsemble.save(path)"
        )
    manifest = read_format_json(file, format=FORMAT, kind="ensemble", max_version=FORMAT_VERSION)
    names = manifest.get("members")
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= MAX_MEMBERS
        or not all(isinstance(n, str) and _MEMBER_NAME.fullmatch(n) for n in names)
        or len(set(names)) != len(names)
    ):
        raise ModelFileError(
            f"{file}: members = {names!r:.80}, expected a list of 1 to {MAX_MEMBERS} distinct "
            "folder names 'member-<i>' inside the ensemble folder"
        )
    jobs = manifest.get("n_jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ModelFileError(f"{file}: n_jobs = {jobs!r:.40}, expected a positive integer")
    return manifest
