"""Side-by-side comparison of forecasters (ConvLSTM vs ConvGRU vs baselines) on one chronological split.

:func:`compare` fits each model with the same settings, scores it per lead beside every baseline
on the same issue times, and times training and inference; :func:`plot_comparison` draws it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from trafficrnn.errors import ConfigError
from trafficrnn.estimation.evaluation import DEFAULT_BASELINES
from trafficrnn.estimation.inputs import data_kwargs
from trafficrnn.metrics import skill
from trafficrnn.params import MODEL_NAMES

log = logging.getLogger(__name__)

#: column order of :attr:`ComparisonResult.summary`
SUMMARY_COLUMNS = (
    "kind",
    "members",
    "parameters",
    "epochs",
    "train_seconds",
    "inference_seconds",
    "best_val_loss",
    "mean_rmse",
    "mean_mae",
)


@dataclass
class ComparisonResult:
    """What :func:`compare` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        Rows ``(model, lead)`` for every fitted model then every baseline (a model trained as an
        ensemble is labelled as its forecasts are, e.g. ``convgru-ensemble3``); columns ``mae``,
        ``rmse``, ``mape``, ``skill_rmse`` (1 − RMSE / RMSE of persistence). ``attrs`` hold the
        split and the number of issue times.
    summary : pandas.DataFrame
        One row per model and baseline: ``kind`` (``"model"`` or ``"baseline"``), ``members``
        (1 for one network, N for an ensemble), ``parameters`` (all members together), ``epochs``
        (per member; the fewest any member ran), ``train_seconds`` (wall time of the fit),
        ``inference_seconds`` (seconds per forecast), ``best_val_loss`` (one network only),
        ``mean_rmse`` and ``mean_mae`` over the leads.
    models : dict of str to TrafficForecaster or ForecastEnsemble
        The fitted estimators, by the labels of the table.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    models: dict = field(default_factory=dict)

    def to_records(self) -> dict[str, Any]:
        """JSON-serialisable form: ``{"split", "split_source", "issues", "summary": [...], "per_lead": [...]}``."""
        summary = (
            self.summary.reset_index()
            .astype(object)
            .where(self.summary.reset_index().notna(), None)
        )
        per_lead = (
            self.table.reset_index().astype(object).where(self.table.reset_index().notna(), None)
        )
        return {
            "split": self.table.attrs.get("split"),
            "split_source": self.table.attrs.get("split_source"),
            "issues": self.table.attrs.get("issues"),
            "summary": summary.to_dict(orient="records"),
            "per_lead": per_lead.to_dict(orient="records"),
        }


def comparison_table(table: pd.DataFrame, metric: str = "rmse") -> pd.DataFrame:
    """Leads as rows, models as columns, for one metric of a ``(model, lead)`` table, plus the mean over leads.

    Raises
    ------
    ConfigError
        If ``metric`` is not a column of ``table``.
    """
    if metric not in table.columns:
        raise ConfigError(
            f"metric {metric!r} is not in the table; available: {', '.join(map(str, table.columns))}"
        )
    wide = table[metric].unstack("model")
    wide.loc["mean"] = wide.mean()
    seen = list(dict.fromkeys(table.index.get_level_values("model")))
    return wide[[m for m in seen if m in wide.columns]]


def _check_models(models: Sequence[str], params: dict[str, Any]) -> list[str]:
    from trafficrnn.estimator import PARAMS
    from trafficrnn.models import list_models
    from trafficrnn.params import GROUP_OF, misplaced

    names = [models.lower()] if isinstance(models, str) else [str(m).lower() for m in models]
    unknown = [m for m in names if m not in list_models()]
    if not names or unknown:
        raise ConfigError(
            f"models={list(names)!r} is invalid: expected one or more of {', '.join(list_models())}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"models={names!r} lists a model twice: name each model once")
    bad = sorted(set(params) - (set(PARAMS) - {"model", "progress"}))
    for name in bad:
        if name in GROUP_OF:  # an option of a group given on its own: name its group
            raise misplaced(name, params[name])
    if bad:
        raise ConfigError(
            f"unknown training parameter(s) {', '.join(bad)}: expected TrafficForecaster "
            f"parameters such as input_steps, horizon, tile_size, max_time, model_kwargs, "
            "trainer_kwargs"
        )
    return names


def _inference_seconds(
    est,
    images: xr.DataArray,
    static: xr.DataArray | None,
    target: xr.DataArray | None = None,
    repeats: int = 5,
    covariates: pd.DataFrame | None = None,
) -> float:
    """Fastest of ``repeats`` single forecasts from the last ``input_steps`` frames."""
    recent = images.isel(time=slice(-est.input_steps, None))
    extra = {"target": target} if est.target_inputs else {}
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        est.predict(recent, **data_kwargs(static, covariates), **extra)
        best = min(best, time.perf_counter() - t0)
    return float(best)


def _time_baselines(
    est,
    images: xr.DataArray,
    target: xr.DataArray | None,
    split: str | None,
    baselines: Sequence[str],
) -> dict[str, tuple[float, float]]:
    """(fit seconds, seconds per forecast) of each baseline, fitted on the frames before ``split`` as evaluate does."""
    from trafficrnn.estimation.evaluation import baseline_history, evaluation_issues
    from trafficrnn.models.baselines import get_baseline

    history = baseline_history(
        est, images if target is None else target.reindex(time=images.time.values)
    )
    fit_on = evaluation_issues(
        est, pd.DatetimeIndex(images.time.values), split, images, target
    ).fit_on
    out = {}
    for name in baselines:
        t0 = time.perf_counter()
        base = get_baseline(name, horizon=est.horizon, timezone=est.timezone).fit(
            history.isel(time=fit_on)
        )
        t1 = time.perf_counter()
        base.predict_many(history, [history.sizes["time"] - 1], est.horizon)
        out[name] = (t1 - t0, time.perf_counter() - t1)
    return out


def compare(
    images: xr.DataArray,
    target: xr.DataArray | None = None,
    *,
    models: Sequence[str] = MODEL_NAMES,
    static: xr.DataArray | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    split: str | None = "test",
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
    covariates: pd.DataFrame | None = None,
    members: int = 1,
    n_jobs: int = 1,
    vehicles: Any = None,
    init: Mapping[str, Any] | None = None,
    **params: Any,
) -> ComparisonResult:
    """Fit each model with the same settings and score it beside the baselines on the same split.

    Parameters
    ----------
    images : xarray.DataArray
        ``(time, band, y, x)`` images (with ``target`` and ``tile_size=``), or density / flow grids
        (density-only path, ``target=None``).
    target : xarray.DataArray, optional
        ``(time, band, y, x)`` target on ``Grid.from_image(images, tile_size)``.
    models : sequence of str
        Registered model names (see :func:`trafficrnn.models.list_models`).
    static : xarray.DataArray, optional
        ``(band, y, x)`` static channels on the grid (road mask, lanes), given to every model.
    covariates : pandas.DataFrame, optional
        Exogenous covariate table (daily weather, holidays; see ``TrafficForecaster.fit``), given to
        every model.
    baselines : sequence of str
        Baselines scored on the same issue times (persistence, historical_average, ridge).
    split : {"test", "val", "train"} or None
        Windows scored; ``None`` scores the whole stack. The parts: ``val`` / ``test`` of
        ``params`` where given, else the published split the data carries (``attrs["split"]``, see
        :mod:`trafficrnn.splits`), else the fractions 0.15 / 0.15.
    progress : bool
        Show training progress bars.
    echo : callable, optional
        Receives one line per training step (e.g. ``print``); otherwise they go to the log.
    members : int
        Train each model as a :class:`~trafficrnn.ensemble.ForecastEnsemble` of this many seeds
        (``seed``, ``seed + 1`` ...) and score the members' mean; 1 trains one network.
    n_jobs : int
        Ensemble members trained at once, each in its own process with its share of the cores.
    vehicles : geopandas.GeoDataFrame, optional
        Vehicle points with a ``time`` column: every model's tile encoder learns to count them
        (point-supervised counting, see ``TrafficForecaster.fit``).
    init : mapping, optional
        Model name → a fitted model or a saved model's folder that model starts from
        (fine-tuning, see ``TrafficForecaster.fit``); models not named start from scratch.
    **params
        :class:`~trafficrnn.estimator.TrafficForecaster` parameters shared by every model
        (``input_steps``, ``horizon``, ``tile_size``, ``max_time``, ``seed``, ``model_kwargs``,
        ``trainer_kwargs``, ...). An option of a group given on its own (``lr=``) is refused,
        naming its group.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ConfigError
        Unknown or repeated model names, unknown parameters, or any invalid training setting
        (``members`` or ``n_jobs`` below 1 included).
    GridError, TimestampError, CadenceError
        As :meth:`TrafficForecaster.fit` for mismatched grids or times.
    """
    names = _check_models(models, params)
    target = _counted_target(images, target, vehicles, params)
    _check_ensemble(members, n_jobs)  # refuse bad counts before any training
    say = echo or log.info
    tables, rows, fitted, labels = [], {}, {}, []
    for name in names:
        label, est, row = _fit_model(
            name,
            images,
            target,
            static=static,
            covariates=covariates,
            vehicles=vehicles,
            init=init,
            members=members,
            n_jobs=n_jobs,
            progress=progress,
            say=say,
            params=params,
        )
        table = est.evaluate(
            images,
            target,
            split=split,
            baselines=() if tables else tuple(baselines),
            **data_kwargs(static, covariates),
        )
        tables.append(table)
        labels.append(label)
        fitted[label] = est
        row["inference_seconds"] = _inference_seconds(
            est, images, static, target, covariates=covariates
        )
        rows[label] = row
    table = _joined_table(tables, labels, say)
    for name, (fit_s, pred_s) in _time_baselines(
        fitted[labels[0]], images, target, split, baselines
    ).items():
        rows[name] = _baseline_row(fit_s, pred_s)
    summary = _summary_frame(rows, table)
    return ComparisonResult(table=table, summary=summary[list(SUMMARY_COLUMNS)], models=fitted)


def _counted_target(
    images: xr.DataArray,
    target: xr.DataArray | None,
    vehicles: Any,
    params: dict[str, Any],
) -> xr.DataArray | None:
    """The target: ``target`` as given, else the vehicle counts per cell where vehicles and a tile size are."""
    if target is None and vehicles is not None and params.get("tile_size") not in (None, 1):
        # the counts per cell are the target the models and baselines are scored against
        from trafficrnn.counting import count_vehicles
        from trafficrnn.grid import Grid

        target = count_vehicles(
            vehicles, Grid.from_image(images, int(params["tile_size"])), images.time.values
        )
    return target


def _check_ensemble(members: int, n_jobs: int) -> None:
    """Refuse a ``members`` or ``n_jobs`` below 1 as an ensemble would."""
    from trafficrnn.ensemble import ForecastEnsemble

    ForecastEnsemble(members=members, n_jobs=n_jobs)._validate_params()


def _fit_model(
    name: str,
    images: xr.DataArray,
    target: xr.DataArray | None,
    *,
    static: xr.DataArray | None,
    covariates: pd.DataFrame | None,
    vehicles: Any,
    init: Mapping[str, Any] | None,
    members: int,
    n_jobs: int,
    progress: bool,
    say: Callable[[str], Any],
    params: dict[str, Any],
) -> tuple[str, Any, dict[str, Any]]:
    """Train one model (an ensemble when ``members`` > 1), saying so: its label, estimator and summary row."""
    from trafficrnn.ensemble import ForecastEnsemble
    from trafficrnn.estimator import TrafficForecaster

    est = TrafficForecaster(name, progress=progress, **params)
    limit = (
        f" (at most {est.max_time:g} min{' per member' if members > 1 else ''})"
        if est.max_time
        else ""
    )
    if members > 1:
        est = ForecastEnsemble(est, members=members, n_jobs=n_jobs)
    label = est.model
    say(f"training   {label}{limit} ...")
    t0 = time.perf_counter()
    start = {"init": init[name]} if init and name in init else {}
    est.fit(images, target, vehicles=vehicles, **start, **data_kwargs(static, covariates))
    seconds = time.perf_counter() - t0
    summary = est.training_summary_
    epochs = min(summary["epochs"]) if members > 1 else summary["epochs"]
    say(
        f"           {epochs} epochs{' per member' if members > 1 else ''} in {seconds:.0f} s, "
        f"{summary['parameters']:,} parameters"
    )
    return label, est, _model_row(summary, members, epochs, seconds)


def _model_row(summary: Mapping[str, Any], members: int, epochs, seconds: float) -> dict[str, Any]:
    """The summary row of one fitted model, its inference time left to fill in."""
    return {
        "kind": "model",
        "members": members,
        "parameters": summary["parameters"],
        "epochs": epochs,
        "train_seconds": seconds,
        "inference_seconds": None,
        "best_val_loss": summary.get("best_val_loss"),
    }


def _baseline_row(fit_s: float, pred_s: float) -> dict[str, Any]:
    """The summary row of one baseline."""
    return {
        "kind": "baseline",
        "members": None,
        "parameters": None,
        "epochs": None,
        "train_seconds": fit_s,
        "inference_seconds": pred_s,
        "best_val_loss": None,
    }


def _joined_table(
    tables: list[pd.DataFrame], labels: list[str], say: Callable[[str], Any]
) -> pd.DataFrame:
    """Each model's rows then the baselines' (of the first table), with the skill against persistence."""
    first = tables[0]
    say(f"split      {first.attrs.get('split_source')}")  # the same for every model
    baseline_rows = first.loc[
        [m for m in first.index.get_level_values("model").unique() if m not in labels]
    ]
    table = pd.concat([t.loc[[n]] for t, n in zip(tables, labels)] + [baseline_rows])
    table.attrs.update(first.attrs)
    if "persistence" in baseline_rows.index.get_level_values("model"):
        # every model is scored on the same issue times: its skill against the one persistence row
        ref = baseline_rows.loc["persistence", "rmse"]
        table["skill_rmse"] = [skill(r, ref.loc[lead]) for (_, lead), r in table["rmse"].items()]
    return table


def _summary_frame(rows: dict[str, dict[str, Any]], table: pd.DataFrame) -> pd.DataFrame:
    """The summary rows as a typed frame indexed by model, with the mean RMSE and MAE over the leads."""
    means = table[["rmse", "mae"]].groupby(level="model", sort=False).mean()
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary["mean_rmse"] = means["rmse"].reindex(summary.index)
    summary["mean_mae"] = means["mae"].reindex(summary.index)
    summary.index.name = "model"
    whole = all(
        float(e).is_integer() for e in summary["epochs"].dropna()
    )  # a time limit may cut the last epoch
    return summary.astype(
        {
            "members": "Int64",
            "parameters": "Int64",
            "epochs": "Int64" if whole else "Float64",
            "best_val_loss": "float64",
        }
    )


def _lead_axis(steps: np.ndarray, cadence) -> tuple[np.ndarray, str]:
    """Lead steps as times (minutes, or hours from 3 h on) of ``cadence``, and the axis label."""
    if cadence is None or pd.isna(cadence):
        return np.asarray(steps), "lead (steps)"
    minutes = np.asarray(steps) * pd.Timedelta(cadence).total_seconds() / 60
    if minutes.max() >= 180:
        return minutes / 60, f"lead time (h; steps of {_duration(cadence)})"
    return minutes, f"lead time (min; steps of {_duration(cadence)})"


def _duration(step) -> str:
    minutes = pd.Timedelta(step).total_seconds() / 60
    return f"{minutes / 60:g} h" if minutes >= 60 and minutes % 60 == 0 else f"{minutes:g} min"


def plot_comparison(result: ComparisonResult, *, metric: str = "rmse"):
    """RMSE (or another metric) per lead, one line per model and baseline, beside a bar of train time.

    Leads are drawn in minutes (hours from 3 h on) of the models' cadence, the metric in the
    target's units (``%`` for MAPE).

    Parameters
    ----------
    result : ComparisonResult
    metric : str
        Column of ``result.table`` drawn per lead.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ConfigError
        If ``metric`` is not a column of the table.
    """
    import matplotlib.pyplot as plt

    wide = comparison_table(result.table, metric).drop(index="mean")
    kinds = result.summary["kind"].reindex(wide.columns).fillna("baseline")
    fitted = next(iter(result.models.values()), None)
    leads, lead_label = _lead_axis(wide.index.astype(int), getattr(fitted, "cadence_", None))
    units = {"mape": "%", "skill_rmse": "1 − RMSE / RMSE of persistence"}.get(
        metric, getattr(fitted, "units_", "")
    )
    fig, (ax, bar) = plt.subplots(
        1, 2, figsize=(10, 3.8), width_ratios=(3, 2), constrained_layout=True
    )
    for name in wide.columns:
        deep = kinds[name] == "model"
        ax.plot(
            leads,
            wide[name],
            marker="o" if deep else ".",
            lw=2 if deep else 1,
            ls="-" if deep else "--",
            label=name,
        )
    ax.set_xlabel(lead_label)
    ax.set_ylabel(
        f"{metric.upper()}"
        + (f" ({units})" if units else "")
        + f", {result.table.attrs.get('split', 'test')} split"
    )
    ax.set_xticks(leads)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    seconds = result.summary["train_seconds"]
    colors = ["tab:blue" if k == "model" else "tab:gray" for k in result.summary["kind"]]
    bars = bar.barh(list(seconds.index)[::-1], seconds.to_numpy()[::-1], color=colors[::-1])
    bar.bar_label(bars, fmt="%.2g s", fontsize=8, padding=2)
    bar.margins(x=0.2)
    bar.set_xlabel("train time (s)")
    bar.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{metric.upper()} per lead and training time", fontsize=11)
    return fig
