"""What a fitted model knows about its data, in one object: :class:`FittedState`.

``TrafficForecaster.fit`` builds it, ``save`` writes it to ``config.json`` (plus the arrays: context
maps beside the weights, static layers as ``static.tif``), ``load`` reads it back, and prediction,
evaluation and ensembles read it. The estimator's fitted attributes (``grid_``, ``cadence_``, ...)
are views of its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd
import xarray as xr

from trafficrnn.estimation.calibration import Calibration
from trafficrnn.estimation.context import Context
from trafficrnn.estimation.covariates import Covariates
from trafficrnn.grid import Grid
from trafficrnn.windows import Normalizer


@dataclass
class FittedState:
    """The data facts of a fitted model (everything but the network weights and the parameters).

    Attributes
    ----------
    grid : Grid
        The forecast grid (CRS, transform, shape, tile size).
    cadence : pandas.Timedelta
        Time step of the training stack.
    gaps : list
        Missing time steps of the training stack (not saved).
    gsd : tuple of float
        Image pixel size (x, y) in CRS units the model was trained on.
    bands, input_bands : list of str
        Target bands, and the bands of the input stack.
    units : str
        Units of the target.
    density_only : bool
        True when the inputs are the target grids themselves (no images).
    naive_zone : str or None
        Zone whose wall clock the training stack's naive times read (None: UTC).
    target_normalizer, input_normalizer : Normalizer
        Scalings of the target and of the inputs.
    context : Context
        Historical-average and cell-mean context maps.
    static_bands : list of str
        Names of the static layers the model reads; ``static_scale`` their scales.
    static : xarray.DataArray or None
        The static layers kept from ``fit`` (predict's default).
    covariates : Covariates or None
        The exogenous covariate specification.
    split : dict or None
        First and last time of each part of the training stack (train / val / test).
    history : list
        Per-epoch training record.
    training_summary : dict
        Frames, windows, epochs, seconds and scores of the training.
    calibration : Calibration or None
        The split-conformal calibration of ``calibrate`` (quantile forecasts); None before it.
    """

    grid: Grid
    cadence: pd.Timedelta
    gsd: tuple[float, float]
    bands: list[str]
    input_bands: list[str]
    units: str
    density_only: bool
    naive_zone: str | None
    target_normalizer: Normalizer
    input_normalizer: Normalizer
    context: Context
    static_bands: list[str] = field(default_factory=list)
    static_scale: list[float] = field(default_factory=list)
    static: xr.DataArray | None = None
    covariates: Covariates | None = None
    split: dict | None = None
    history: list = field(default_factory=list)
    training_summary: dict = field(default_factory=dict)
    gaps: list = field(default_factory=list)
    calibration: Calibration | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON part of the state, under the keys of ``config.json`` (the static layers and
        the context's arrays are saved beside it; ``split`` lives in ``training_summary``)."""
        return {
            "grid": self.grid.to_dict(),
            "gsd": [float(v) for v in self.gsd],
            "bands": list(self.bands),
            "input_bands": list(self.input_bands),
            "units": self.units,
            "cadence": self.cadence.isoformat(),
            "density_only": bool(self.density_only),
            "naive_zone": self.naive_zone,
            "target_normalizer": self.target_normalizer.to_dict(),
            "input_normalizer": self.input_normalizer.to_dict(),
            "context": self.context.to_dict(),
            "static_bands": list(self.static_bands),
            "static_scale": [float(v) for v in self.static_scale],
            "covariates": None if self.covariates is None else self.covariates.to_dict(),
            "training_summary": self.training_summary,
            "history": self.history,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(
        cls,
        config: dict[str, Any],
        *,
        arrays: dict | None = None,
        static: xr.DataArray | None = None,
        gsd: tuple[float, float] | None = None,
        naive_zone: str | None = None,
    ) -> FittedState:
        """The state :meth:`to_dict` wrote, with the context's ``arrays`` and the ``static`` layers
        read from beside it. ``gsd`` and ``naive_zone``, where given, are the values checked (and
        filled in for older files) by the loader; else they are read from ``config`` as they are.

        Raises
        ------
        KeyError, TypeError, ValueError, ConfigError, GridError
            A field is missing or malformed (the loader names the file).
        """
        grid = Grid.from_dict(config["grid"])
        spec = config.get("covariates")
        summary = config.get("training_summary", {})
        calibration = config.get("calibration")  # absent from models saved before it existed
        return cls(
            grid=grid,
            cadence=pd.Timedelta(config["cadence"]),
            gsd=tuple(gsd if gsd is not None else config["gsd"]),
            bands=config["bands"],
            input_bands=config["input_bands"],
            units=config["units"],
            density_only=config["density_only"],
            naive_zone=naive_zone if naive_zone is not None else config.get("naive_zone"),
            target_normalizer=Normalizer.from_dict(config["target_normalizer"]),
            input_normalizer=Normalizer.from_dict(config["input_normalizer"]),
            context=Context.restore(
                config.get("context", {"entries": [], "cell_mean": False}), arrays or {}
            ),
            static_bands=[str(b) for b in config.get("static_bands", [])],
            static_scale=[float(v) for v in config.get("static_scale", [])],
            static=static,
            covariates=None if spec is None else Covariates.from_dict(spec),
            split=summary.get("split"),
            history=config.get("history", []),
            training_summary=summary,
            calibration=None if calibration is None else Calibration.from_dict(calibration),
        )


#: the estimator's fitted attributes that are views of FittedState fields (``grid_`` -> ``grid``)
STATE_FIELDS = tuple(f.name for f in fields(FittedState))


def state_attribute(name: str) -> property:
    """A property ``<name>_`` of the estimator reading and writing ``state_.<name>``; it raises
    AttributeError before ``fit`` (so ``hasattr`` says unfitted, as for sklearn estimators)."""

    def get(self):
        state = self.__dict__.get("state_")
        if state is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute '{name}_'")
        return getattr(state, name)

    def put(self, value):
        state = self.__dict__.get("state_")
        if state is None:
            raise AttributeError(f"'{name}_' is set by fit or load, not before")
        setattr(state, name, value)

    return property(
        get, put, doc=f"``state_.{name}`` (see :class:`FittedState`), set by fit or load."
    )
