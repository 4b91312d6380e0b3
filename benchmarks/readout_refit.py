"""A closed-form refit of the fine-tuned forecaster's point readout, scored with and without it on
the same fit: tried, rejected (``benchmarks/README.md``).

The packaged models decode directly (no feedback) with a residual, so that the forecast of lead
``h`` before the residual is ``head(hidden_h) + linear_h(inputs_h)``: linear in the weights of the
head (shared by the leads) and of the lead's group of the linear term. After stage B, this script
refits those weights by ridge regression on the training windows' residuals (target less the last
target), shrunk towards the trained weights (strength times the diagonal of the normal equations),
chooses the strength on the validation windows (keeping the trained weights unless a refit scores
better there), and scores the test part with the trained readout and with the refit one.

Run: ``python benchmarks/readout_refit.py --folders CITY ... [--models convgru convlstm] [--seed 0]``:
each CITY a folder written by ``trafficrnn simulate`` (as ``benchmarks/demo_transfer.py
--score-on cities`` makes them); writes ``benchmarks/results/readout_refit.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine  # benchmarks/_machine.py
from _scores import fit_scored, settings_from  # benchmarks/_scores.py

ROOT = Path(__file__).resolve().parent.parent
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
BASELINES = ("persistence", "historical_average", "ridge")


class Readout:
    """Hooks that keep what the readout of ``model`` reads at each forward call."""

    def __init__(self, model) -> None:
        self.model, self.kept = model, {}
        self.hook = model.head.register_forward_hook(lambda m, i, o: self._keep("hidden", i[0]))
        residual, inputs = model._residual, model._linear_inputs

        def kept_residual(last, delta):
            self._keep("last", last)
            return residual(last, delta)

        def kept_inputs(*args):
            out = inputs(*args)
            self._keep("linear", out)
            return out

        model._residual, model._linear_inputs = kept_residual, kept_inputs

    def _keep(self, name, value):
        self.kept[name] = value.detach()

    def close(self) -> None:
        self.hook.remove()
        del self.model._residual, self.model._linear_inputs


def design(module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (observed cell x lead; one band) and residual targets of the windows of ``loader``."""
    model, horizon = module.model, module.horizon
    hooks, xs, ys = Readout(model), [], []
    module.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                module(batch)
                n = batch["x"].shape[0]
                hidden = hooks.kept["hidden"].unflatten(0, (n, horizon))
                # the residual adds the last target to every lead: (N, 1, C, Hc, Wc)
                linear, last = hooks.kept["linear"], hooks.kept["last"][:, 0]
                heads, inputs = hidden.shape[2], linear.shape[2]
                for h in range(horizon):
                    ok = batch["mask"][:, h, 0].bool()
                    row = torch.zeros(int(ok.sum()), heads + horizon * inputs + horizon)
                    row[:, :heads] = hidden[:, h].permute(0, 2, 3, 1)[ok]
                    row[:, heads + h * inputs : heads + (h + 1) * inputs] = linear[:, h].permute(
                        0, 2, 3, 1
                    )[ok]
                    row[:, heads + horizon * inputs + h] = 1.0
                    xs.append(row.double())
                    ys.append((batch["y"][:, h, 0] - last[:, 0])[ok].double())
    finally:
        hooks.close()
    return torch.cat(xs), torch.cat(ys)


def weights(model, horizon: int) -> torch.Tensor:
    """Head weights, each lead's linear weights, each lead's bias (head's plus lead's)."""
    head_b = float(model.head.bias.detach())
    return torch.cat(
        [
            model.head.weight.detach().flatten().double(),
            model.linear.weight.detach().view(horizon, -1).flatten().double(),
            model.linear.bias.detach().double() + head_b,
        ]
    )


def install(model, w: torch.Tensor, horizon: int) -> None:
    heads, inputs = model.head.weight.numel(), model.linear.weight.shape[1]
    with torch.no_grad():
        model.head.weight.copy_(w[:heads].view_as(model.head.weight))
        model.linear.weight.copy_(w[heads : heads + horizon * inputs].view_as(model.linear.weight))
        model.linear.bias.copy_(w[heads + horizon * inputs :] - float(model.head.bias.detach()))


def refit(module, loaders, found: dict) -> None:
    """Choose the strength on the validation windows; ``found`` gets the scores and the weights."""
    began = time.perf_counter()
    xt, yt = design(module, loaders["train"])
    xv, yv = design(module, loaders["val"])
    w0 = weights(module.model, module.horizon)
    a, b = xt.T @ xt, xt.T @ yt
    scale = torch.diag(torch.diag(a).clamp(min=1e-9))
    scores = {"trained": float(((xv @ w0 - yv) ** 2).mean())}
    best, chosen = scores["trained"], None
    for alpha in ALPHAS:
        w = torch.linalg.solve(a + alpha * scale, b + alpha * scale @ w0)
        scores[str(alpha)] = float(((xv @ w - yv) ** 2).mean())
        if scores[str(alpha)] < best:
            best, chosen = scores[str(alpha)], w
    found.update(val_mse=scores, train_rows=len(yt), seconds=round(time.perf_counter() - began, 2))
    found["weights"] = chosen


def run(folder: Path, name: str, seed: int) -> dict:
    import trafficrnn as tr
    from trafficrnn.estimation import fitting
    from trafficrnn.params import grouped

    found: dict = {}
    stage_b = fitting.stage_b

    def refitted(est, data, module, loaders, validate, **kwargs):
        outcome = stage_b(est, data, module, loaders, validate, **kwargs)
        refit(module, loaders, found)
        return outcome

    fitting.stage_b = refitted
    try:
        images = tr.read_stack(folder / "images", allow_gaps=True)
        target = tr.read_stack(folder / "density", allow_gaps=True)
        points = tr.read_vectors(folder / "vehicles.gpkg")
        init = tr.pretrained(name)
        est = tr.TrafficForecaster(name, **grouped(settings_from(init.get_params(), seed, {})))
        rmse: dict = {}
        fit_scored(est, images, target, points, init, name, rmse, BASELINES)
    finally:
        fitting.stage_b = stage_b
    if found["weights"] is not None:
        install(est.model_, found["weights"], est.horizon)
        table = est.evaluate(images, target, baselines=())
        rmse[f"{name}+refit"] = [round(float(v), 4) for v in table["rmse"].values]
    found.pop("weights")
    return {
        "folder": str(folder),
        "model": name,
        "seed": seed,
        "epochs": est.training_summary_["epochs"],
        **found,
        "rmse": rmse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", required=True)
    parser.add_argument("--models", nargs="+", default=["convgru", "convlstm"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "readout_refit.json")
    )
    args = parser.parse_args()
    runs = []
    for folder in args.folders:
        for name in args.models:
            runs.append(run(Path(folder), name, args.seed))
            print(json.dumps(runs[-1]), flush=True)
    refit_runs = [r for r in runs if f"{r['model']}+refit" in r["rmse"]]
    change = [
        float(np.mean(r["rmse"][f"{r['model']}+refit"]) - np.mean(r["rmse"][r["model"]]))
        for r in refit_runs
    ]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "runs": runs,
        "refit_chosen": f"{len(refit_runs)} of {len(runs)}",
        "mean_rmse_change_where_chosen": [round(c, 4) for c in change],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
