"""Where the demo's fine-tuned model loses to persistence: its errors on the sample's test part split by
cloud cover of the issue frame and by the true count of the cell.

Run: ``python benchmarks/demo_errors.py [--model convgru] [--seed 0]``; writes
``benchmarks/results/demo_errors.json``. The model is fine-tuned as in the demo (the packaged
pretrained model, ``fit(images, vehicles=points, init=...)``, its 1.2 minutes); every origin whose
targets lie in the test part is forecast; RMSE and bias (forecast − truth, vehicles per 64 m cell) per
lead are given for all cells, for cells clear / partly clouded in the issue frame (``clouds/``), and
for cells whose true count is above 10 or at most 10, beside persistence of the true counts; and the
model's own counts of the frames (its nowcast) against the true counts, on the training frames and on
the test part, for cells above 10 and at most 10 vehicles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _demo_fit import fine_tuned  # benchmarks/_demo_fit.py
from _machine import machine  # benchmarks/_machine.py
from counting import nowcast  # benchmarks/counting.py

ROOT = Path(__file__).resolve().parent.parent


def scores(fc: np.ndarray, pers: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """Share of the cells in ``mask`` and, per lead, the RMSE and bias of ``fc`` and of ``pers``."""
    out = {"share": round(float(mask.mean()), 4)}
    for name, pred in (("model", fc), ("persistence", pers)):
        err = [(pred[:, h] - truth[:, h])[mask[:, h]] for h in range(truth.shape[1])]
        out[f"rmse_{name}"] = [round(float(np.sqrt(np.mean(e**2))), 3) for e in err]
        out[f"bias_{name}"] = [round(float(e.mean()), 3) for e in err]
    # each group's share of the model's squared error, per lead
    total = ((fc - truth) ** 2).reshape(truth.shape[0], truth.shape[1], -1).sum((0, 2))
    part = [((fc[:, h] - truth[:, h]) ** 2)[mask[:, h]].sum() for h in range(truth.shape[1])]
    out["share_of_model_squared_error"] = [round(float(p / t), 3) for p, t in zip(part, total)]
    return out


def main() -> None:
    import trafficrnn as tr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    parser.add_argument("--model", default="convgru")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_errors.json")
    args = parser.parse_args()

    fit = fine_tuned(args.sample, args.model, args.seed)
    images, est, target, issues = fit.images, fit.est, fit.target, fit.issues
    clouds = tr.read_stack(args.sample / "clouds")
    times, horizon = images.indexes["time"], est.horizon
    first = fit.first_test
    fc = np.asarray(est.predict_many(images, issues).values, dtype=float)[:, :, 0]
    y = np.asarray(target.values, dtype=float)[:, 0]
    truth = np.stack([y[i + 1 : i + 1 + horizon] for i in issues])  # (issue, lead, y, x)
    pers = np.stack([np.repeat(y[i][None], horizon, 0) for i in issues])
    tile = est.grid_.tile_size
    cover = np.asarray(clouds.values, dtype=float)[:, 0]
    t, rows, cols = cover.shape
    frac = cover.reshape(t, rows // tile, tile, cols // tile, tile).mean((2, 4))[issues]
    clouded = np.repeat((frac > 0)[:, None], horizon, 1)
    groups = {
        "all": np.ones_like(truth, dtype=bool),
        "clear_in_issue_frame": ~clouded,
        "partly_clouded_in_issue_frame": clouded,
        "true_count_above_10": truth > 10,
        "true_count_at_most_10": truth <= 10,
    }
    counts = nowcast(est, images)[:, 0]  # the model's count of every frame, (time, y, x)
    train_end = int(times.searchsorted(np.datetime64(est.training_summary_["split"]["train"][1])))
    parts = {"train": slice(0, train_end + 1), "test": slice(first, len(times))}
    counted = {
        f"{part}_frames_true_{label}": {
            "rmse": round(float(np.sqrt(np.mean((counts[s] - y[s])[m(y[s])] ** 2))), 3),
            "bias": round(float(np.mean((counts[s] - y[s])[m(y[s])])), 3),
            "share": round(float(m(y[s]).mean()), 4),
        }
        for part, s in parts.items()
        for label, m in (("above_10", lambda v: v > 10), ("at_most_10", lambda v: v <= 10))
    }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "model": args.model,
        "seed": args.seed,
        "training": {k: est.training_summary_[k] for k in ("epochs", "train_seconds")},
        "test_origins": int(len(issues)),
        "groups": {name: scores(fc, pers, truth, m) for name, m in groups.items()},
        "nowcast_counts": counted,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["nowcast_counts"], indent=1))


if __name__ == "__main__":
    main()
