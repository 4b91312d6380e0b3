"""What a saved model expects and how it was trained, read from its validated ``config.json`` only
(nothing is unpickled, no weights are loaded, torch is not imported): :func:`describe` serves
``trafficrnn info`` and notebooks."""

from __future__ import annotations

__all__ = ["describe", "split_lines"]


def describe(model) -> list[tuple[str, str]]:
    """``(label, text)`` lines about the saved model (or ensemble) folder ``model``: model and cell,
    input and target bands, static layers, covariates, tile size, cadence, steps, CRS, grid,
    transform, bounds, training period, split, training summary, and the version that saved it.

    Raises
    ------
    ModelFileError
        If the folder does not exist or its config is missing, corrupt or crafted.
    """
    from pathlib import Path

    import pandas as pd
    from pandas.tseries.frequencies import to_offset
    from rasterio.crs import CRS

    from trafficrnn._version import __version__ as ours
    from trafficrnn.ensemble import is_ensemble, read_manifest
    from trafficrnn.estimation.persist import check_model_folder, read_config, saved_params
    from trafficrnn.params import resolve

    check_model_folder(model)
    members = read_manifest(model)["members"] if is_ensemble(model) else None
    config = read_config(Path(model) / members[0] if members else model)
    params, grid, summary = config["params"], config["grid"], config.get("training_summary") or {}
    hidden = list(resolve(saved_params(params))["hidden"])  # either layout of the saved parameters
    crs = CRS.from_user_input(grid["crs"])
    t = grid["transform"]
    rows, cols = grid["shape"]
    bounds = (t[2], t[5] + t[4] * rows, t[2] + t[0] * cols, t[5])
    split = summary.get("split") or {}
    best = summary.get("best_val_loss")
    lines = [
        (
            "model",
            f"{config['model']} (cell {config['model_config'].get('cell')}, hidden {hidden})",
        ),
        (
            "input",
            f"{', '.join(config['input_bands'])}"
            + (" (density-only: the stack is its own target)" if config["density_only"] else ""),
        ),
        ("target", f"{', '.join(config['bands'])} ({config['units']})"),
        (
            "static",
            (", ".join(config.get("static_bands") or []) or "none")
            + (" (saved with the model: static.tif)" if config.get("static_sha256") else ""),
        ),
        ("covariates", ", ".join((config.get("covariates") or {}).get("columns") or []) or "none"),
        ("tile size", f"{grid['tile_size']} px per cell"),
        ("cadence", f"{to_offset(pd.Timedelta(config['cadence'])).freqstr} ({config['cadence']})"),
        ("steps", f"input_steps {params['input_steps']}, horizon {params['horizon']}"),
        ("CRS", f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_wkt()[:60]),
        ("grid", f"{rows} × {cols} cells"),
        ("transform", f"({t[0]:g}, {t[1]:g}, {t[2]:.6f}, {t[3]:g}, {t[4]:g}, {t[5]:.6f})"),
        ("bounds", f"({', '.join(f'{v:.6f}' for v in bounds)})"),
        ("period", " → ".join(summary.get("period") or ["?", "?"])),
        *split_lines(split, params["input_steps"], summary.get("split_source")),
        (
            "training",
            f"{summary.get('epochs', '?')} epochs in {summary.get('train_seconds', '?')} s, best val loss "
            f"{'n/a' if best is None else f'{best:.4g}'}, {summary.get('parameters', 0):,} parameters",
        ),
        (
            "saved by",
            f"trafficrnn {config['trafficrnn_version']}"
            + (f" (this is {ours})" if config["trafficrnn_version"] != ours else ""),
        ),
    ]
    levels = config["model_config"].get("quantiles")
    if levels:  # only for a model with a quantile head: other models' lines are as they were
        shown = ", ".join(f"{q:g}" for q in levels)
        lines.insert(8, ("quantiles", f"quantile head, levels {shown} (pinball loss)"))
    if members:
        # member-0's config is read above already
        runs = [summary] + [
            read_config(Path(model) / name).get("training_summary") or {} for name in members[1:]
        ]
        lines.insert(
            0,
            (
                "ensemble",
                f"{len(members)} members ({', '.join(members)}), forecasts are their mean; "
                f"epochs {', '.join(str(r.get('epochs', '?')) for r in runs)}; the rest "
                "describes member-0",
            ),
        )
    return lines


def split_lines(split: dict, input_steps: int, source: str | None = None) -> list[tuple[str, str]]:
    """The ``split`` line of ``info`` and ``train``, why neighbouring parts overlap where they do, and which
    split it is (``source``: the training summary's ``split_source``, e.g. the data's published split)."""
    parts = [(name, span) for name, span in split.items() if span]
    lines = [("split", ", ".join(f"{k} {v[0][:16]} → {v[1][:16]}" for k, v in parts) or "n/a")]
    later = [b for (_, a), (b, c) in zip(parts, parts[1:]) if c[0] <= a[1]]
    if later:
        lines.append(
            (
                "",
                f"({' and '.join(later)} start{'s' if len(later) == 1 else ''} input_steps = {input_steps} "
                "frames before their first target: their first windows read the end of the part before "
                "as inputs, so the ranges overlap, but no frame is a target in two parts)",
            )
        )
    if source:
        lines.append(("", f"split by {source}"))
    return lines
