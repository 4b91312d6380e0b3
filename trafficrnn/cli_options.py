"""Helpers of the ``trafficrnn`` model commands: the shared training options, and the reading of targets, vectors
and static layers from command-line arguments (argument handling only; the work is done by the Python API).
"""

from __future__ import annotations

import click

from trafficrnn.params import (  # the model registry's names and the defaults: no torch imported
    ALL_DEFAULTS,
    GROUP_OF,
    GROUPS,
    MODEL_NAMES,
    grouped,
)

_FILE = click.Path(exists=True, dir_okay=False)
COVARIATES_HELP = (
    "CSV of known-in-advance covariates (first column ISO dates, then numbers: daily weather, "
    "holidays); models trained with it need it in forecast and evaluate too."
)
TIME_PATTERN_HELP = (
    "strptime pattern of the frame file names, e.g. 'frame_%Y%m%d_%H%M' (default: the "
    "TIFFTAG_DATETIME tag, else an ISO-like date-time in the name)."
)
STACK_ALIGN_HELP = (
    "strict: refuse frames that disagree on CRS, transform or shape; reproject: warp every frame "
    "onto the first frame's grid (bilinear; each frame must cover at least half of it)."
)
ALIGN_HELP = (
    "exact: refuse images whose pixel size (GSD) differs from the model's; resample: average them "
    "onto the model's GSD first (same CRS and origin); reproject: warp the frames, in any CRS and on any "
    "grid, onto the model's grid (bilinear; they must cover at least half of it)."
)


def _hidden(ctx, param, value: str) -> tuple[int, ...]:
    try:
        hidden = tuple(int(v) for v in value.split(","))
    except ValueError:
        hidden = ()
    if not hidden or min(hidden) < 1:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of positive channel counts such as 32,32"
        )
    return hidden


def _set_values(ctx, param, values: tuple[str, ...]) -> dict:
    """The ``--set KEY=VALUE`` options: a model_kwargs / trainer_kwargs option -> its value, VALUE read
    as JSON (``3``, ``true``, ``[16,16]``, ``null``) or else as a string (``bf16-mixed``); checked by the
    estimator. An unknown KEY, or one with a flag of its own, is a usage error naming the valid keys."""
    import json

    options = {}
    for item in values:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE, e.g. --set lr=0.001")
        if key not in GROUP_OF:
            top = f"; {key} has an option of its own" if key in ALL_DEFAULTS else ""
            raise click.BadParameter(
                f"unknown option {key!r} in {item!r}{top}: --set takes the model_kwargs options "
                f"({', '.join(GROUPS['model_kwargs'])}) and the trainer_kwargs options "
                f"({', '.join(GROUPS['trainer_kwargs'])})"
            )
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def _split_value(ctx, param, value: str | None) -> float | str | None:
    """A split boundary: a fraction in [0, 1), or a time string left for the estimator to parse; None when
    left out (the stack's published split, else 0.15)."""
    if value is None:
        return None
    try:
        fraction = float(value)
    except ValueError:
        return value
    if not 0 <= fraction < 1:
        raise click.BadParameter(
            f"{value!r} is neither a fraction in [0, 1) nor a time such as 2016-09-28"
        )
    return fraction


def _read_vector(path: str, what: str):
    """A vehicles (points) or roads (lines) layer, with one-line errors from ``read_vectors``."""
    from trafficrnn.io import read_vectors

    return read_vectors(path, geometry="point" if what == "--vehicles" else "line")


def _grid(images, tile_size: int):
    from trafficrnn.grid import Grid

    return Grid.from_image(images, tile_size)  # tile 1: the stack's own grid


def _target(
    images, target: str | None, vehicles: str | None, tile_size: int | None, allow_gaps: bool
):
    """The target stack (from --target or --vehicles) and the tile size; (None, None) for the density-only path."""
    import pandas as pd

    from trafficrnn.errors import ConfigError
    from trafficrnn.io import read_stack

    if target and vehicles:
        raise ConfigError(
            f"--target {target} and --vehicles {vehicles} are both given: pass one of them"
        )
    if vehicles:
        if not tile_size:
            raise ConfigError(
                "--vehicles needs --tile-size (image pixels per grid cell, e.g. 16) to build the grid"
            )
        cadence = images.attrs.get("cadence") or None
        from trafficrnn.counting import count_vehicles

        return count_vehicles(
            _read_vector(vehicles, "--vehicles"),
            _grid(images, tile_size),
            images.time.values,
            what=vehicles,
            freq=pd.Timedelta(cadence) if cadence else None,
        ), tile_size
    if target:
        da = read_stack(target, allow_gaps=allow_gaps)
        if not tile_size:
            ratio = images.sizes["y"] // max(da.sizes["y"], 1)
            if ratio < 1 or images.sizes["x"] // max(da.sizes["x"], 1) != ratio:
                raise ConfigError(
                    f"cannot infer the tile size from images {images.sizes['y']}×{images.sizes['x']} px "
                    f"and target {da.sizes['y']}×{da.sizes['x']} cells: pass --tile-size"
                )
            tile_size = ratio
        return da, tile_size
    if tile_size and tile_size > 1:
        raise ConfigError(
            f"--tile-size {tile_size} needs a target: pass --target or --vehicles, or drop "
            "--tile-size to forecast the stack's own grids"
        )
    return None, None


def _static(roads_gdf, images, tile_size: int | None):
    """The road mask ``(band=road, y, x)`` on the grid, or None."""
    from trafficrnn.io import rasterize_lines

    return (
        None
        if roads_gdf is None
        else rasterize_lines(roads_gdf, _grid(images, tile_size or 1), attr=None)
    )


def _check_outputs(paths, overwrite: bool, suffixes: tuple[str, ...] = ()) -> None:
    from trafficrnn.io import check_outputs

    check_outputs(paths, overwrite=overwrite, suffixes=suffixes)


def _write_text(path, text: str, overwrite: bool) -> None:
    from trafficrnn.io.atomic import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)


def _table_json(table) -> str:
    import json

    rows = table.reset_index().astype(object)
    rows = rows.where(rows.notna(), None).to_dict(orient="records")
    return json.dumps({**{k: v for k, v in table.attrs.items()}, "per_lead": rows}, indent=2)


def _model_folder(model: str) -> str:
    """``model`` where it exists; else a ModelFileError that says so (see :func:`trafficrnn.estimation.persist.check_model_folder`)."""
    from trafficrnn.estimation.persist import check_model_folder

    return check_model_folder(model)


def _load_model(model: str):
    from trafficrnn.ensemble import load

    return load(_model_folder(model))


def _model_list(ctx, param, value: str) -> list[str]:
    """``"convlstm,convgru"`` → ``["convlstm", "convgru"]``; unknown names: a usage error listing the valid ones."""
    names = [m.strip().lower() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_NAMES]
    if not names or unknown:
        verb = "is not a model name" if len(unknown) == 1 else "are not model names"
        found = f"{', '.join(map(repr, unknown))} {verb}" if unknown else "no model name given"
        raise click.BadParameter(
            f"{found}: expected a comma-separated list of {', '.join(MODEL_NAMES)}, "
            f"e.g. --models {','.join(MODEL_NAMES)}"
        )
    return names


def _model_run_options(func):
    """MODEL STACK and the options of reading a stack for a saved model, shared by `forecast` and
    `evaluate`: --roads, --covariates, --align, --time-pattern, --allow-gaps."""
    options = [
        click.argument("model"),
        click.argument("stack"),
        click.option(
            "--roads",
            default=None,
            type=_FILE,
            help="Road lines rasterised as the static layer of a model trained with --roads "
            "(default: the layer saved with the model, on its training grid).",
        ),
        click.option("--covariates", default=None, type=_FILE, help=COVARIATES_HELP),
        click.option(
            "--align",
            default="exact",
            show_default=True,
            type=click.Choice(["exact", "resample", "reproject"]),
            help=ALIGN_HELP,
        ),
        click.option("--time-pattern", default=None, help=TIME_PATTERN_HELP),
        click.option("--allow-gaps", is_flag=True, help="Accept missing frames in the stack."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _ensemble_options(f):
    """--members / --jobs, shared by train and compare."""
    f = click.option(
        "--jobs",
        default=1,
        show_default=True,
        type=click.IntRange(1),
        help="Ensemble members trained at once, each in its own process with its share of the cores.",
    )(f)
    return click.option(
        "--members",
        default=1,
        show_default=True,
        type=click.IntRange(1, 64),
        help="Train an ensemble of this many models (seeds --seed, --seed + 1, ...); "
        "forecasts are their mean.",
    )(f)


def _training_options(func):
    """Options shared by `train` and `compare`."""
    options = [
        *_input_options(),
        *_series_options(),
        *_fit_options(),
        *_model_options(),
        *_trainer_options(),
        *_stack_options(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _input_options() -> list:
    """Options naming the inputs: target, vehicles, roads, covariates and the cell size."""
    return [
        click.option(
            "--target",
            default=None,
            help="Target stack on the grid (vehicles per cell), e.g. city/density.",
        ),
        click.option(
            "--vehicles",
            default=None,
            type=_FILE,
            help="Vehicle points (GeoPackage with a time column).",
        ),
        click.option(
            "--roads", default=None, type=_FILE, help="Road lines: a road-mask static channel."
        ),
        click.option("--covariates", default=None, type=_FILE, help=COVARIATES_HELP),
        click.option(
            "--tile-size",
            default=None,
            type=click.IntRange(1),
            help="Image pixels per grid cell side.",
        ),
    ]


def _series_options() -> list:
    """Options of the frames read and forecast, and of the validation and test parts."""
    return [
        click.option(
            "--input-steps",
            default=ALL_DEFAULTS["input_steps"],
            show_default=True,
            type=click.IntRange(1),
            help="Frames read.",
        ),
        click.option(
            "--horizon",
            default=ALL_DEFAULTS["horizon"],
            show_default=True,
            type=click.IntRange(1),
            help="Lead steps forecast.",
        ),
        click.option(
            "--val",
            default=None,
            callback=_split_value,
            help="Validation part (early stopping, best epoch): a fraction of the series before the test "
            "part, or its first time (e.g. 2016-09-28); 0: none, train on those frames too. Default: "
            "the published split the stack records (`datasets export`), else 0.15.",
        ),
        click.option(
            "--test",
            default=None,
            callback=_split_value,
            help="Test part held out at the end: a fraction of the series, or its first time; 0: none. "
            "Default: the stack's published split, else 0.15 (each one given replaces that boundary).",
        ),
    ]


def _fit_options() -> list:
    """Options bounding the training: epochs, minutes and batch size."""
    return [
        click.option(
            "--max-epochs",
            default=ALL_DEFAULTS["max_epochs"],
            show_default=True,
            type=click.IntRange(1),
        ),
        click.option(
            "--max-minutes",
            "max_time",
            default=ALL_DEFAULTS["max_time"],
            show_default=True,
            type=click.FloatRange(0),
            callback=lambda ctx, param, value: value or None,
            help="Time limit of all of training, in minutes (per model, per ensemble member); 0: none.",
        ),
        click.option(
            "--batch-size",
            default=ALL_DEFAULTS["batch_size"],
            show_default=True,
            type=click.IntRange(1),
        ),
    ]


def _model_options() -> list:
    """Options of the model's channels, context, heads, lags and truncated BPTT."""
    return [
        click.option(
            "--hidden",
            default=",".join(map(str, ALL_DEFAULTS["hidden"])),
            show_default=True,
            callback=_hidden,
            help="Channels per layer.",
        ),
        click.option(
            "--context",
            default="",
            callback=lambda ctx, param, value: tuple(
                c.strip() for c in value.split(",") if c.strip()
            ),
            help="Known-in-advance inputs of each target time, comma-separated: "
            "ha (historical average of the slot), 1D, 7D (the value a day / week before; grids only).",
        ),
        click.option(
            "--cell-mean", is_flag=True, help="Add each cell's training mean as a static channel."
        ),
        click.option(
            "--context-inputs/--no-context-inputs",
            default=None,
            help="Also feed the --context maps of the input frames to the encoder.",
        ),
        click.option(
            "--feedback/--no-feedback",
            default=None,
            help="Feed each lead's prediction back as the next lead's input (default: on).",
        ),
        click.option(
            "--count-head/--no-count-head",
            default=None,
            help="Images: count vehicles as the sum of a finer density map per cell.",
        ),
        click.option(
            "--target-inputs",
            is_flag=True,
            help="Images: the model also reads the target (detections) of its input frames; forecast "
            "and evaluate then need --target or --vehicles too.",
        ),
        click.option(
            "--linear-lags",
            default=ALL_DEFAULTS["linear_lags"],
            show_default=True,
            type=click.IntRange(0),
            help="Add a per-lead linear term over the last K observed frames, the known-in-advance "
            "inputs and the static layers (LSTNet's autoregressive part); 0: none.",
        ),
        click.option(
            "--bptt-steps",
            default=None,
            type=click.IntRange(1),
            help="Backpropagate through the last N input frames only (truncated BPTT: faster epochs).",
        ),
    ]


def _trainer_options() -> list:
    """Options of the clock, seed and hardware, and --set of any other option."""
    return [
        click.option(
            "--timezone",
            default=None,
            help="IANA zone of the place, e.g. Europe/Vienna: the calendar channels and the slots of "
            "--context ha and of the baselines read its local clock (DST-aware). Naive times are UTC "
            "unless the stack records its zone (NYC: America/New_York); default: the UTC clock.",
        ),
        click.option("--seed", default=ALL_DEFAULTS["seed"], show_default=True, type=int),
        click.option(
            "--precision",
            default=ALL_DEFAULTS["precision"],
            show_default=True,
            help="auto, 32-true, bf16-mixed, 16-mixed.",
        ),
        click.option(
            "--accelerator",
            default=ALL_DEFAULTS["accelerator"],
            show_default=True,
            help="auto, cpu, gpu, ...",
        ),
        click.option(
            "--devices",
            default=str(ALL_DEFAULTS["devices"]),
            show_default=True,
            callback=lambda ctx, param, value: int(value) if value.isdigit() else value,
            help="Device count, list (0,1) or auto.",
        ),
        click.option(
            "--strategy", default=ALL_DEFAULTS["strategy"], show_default=True, help="auto, ddp, ..."
        ),
        click.option(
            "--num-nodes",
            default=ALL_DEFAULTS["num_nodes"],
            show_default=True,
            type=click.IntRange(1),
        ),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            callback=_set_values,
            help="Set any model_kwargs or trainer_kwargs option of TrafficForecaster, e.g. --set "
            "lr=0.001 --set kernel_size=5 --set crop=[32,32] (VALUE as JSON, else a string); "
            "repeatable, wins over the option's own flag.",
        ),
    ]


def _stack_options() -> list:
    """Options of reading the stack and of the outputs (gaps, overwrite, quiet)."""
    return [
        click.option("--time-pattern", default=None, help=TIME_PATTERN_HELP),
        click.option(
            "--align",
            default="strict",
            show_default=True,
            type=click.Choice(["strict", "reproject"]),
            help=STACK_ALIGN_HELP,
        ),
        click.option("--allow-gaps", is_flag=True, help="Accept missing frames in the stack."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]


def _covariates(path: str | None):
    """The covariate table of --covariates, or None."""
    from trafficrnn.estimation.covariates import read_covariates

    return None if path is None else read_covariates(path)


def _data_kwargs(static, covariates_path: str | None) -> dict:
    """``static=`` / ``covariates=`` (read from --covariates) for fit, predict and evaluate, those given."""
    from trafficrnn.estimation.inputs import data_kwargs

    return data_kwargs(static, _covariates(covariates_path))


def _prepare_training(stack: str, opts: dict) -> tuple:
    """Images, target, static, the TrafficForecaster parameters (the options of the flags and of
    ``--set`` in their groups, ``model_kwargs`` and ``trainer_kwargs``) and the vehicle points (image
    path with --vehicles, for the counting supervision; else None) from the shared options."""
    from trafficrnn.io import read_stack

    images = read_stack(
        stack, time=opts["time_pattern"], align=opts["align"], allow_gaps=opts["allow_gaps"]
    )
    _check_split(stack, images, opts["val"], opts["test"])
    roads = _read_vector(opts["roads"], "--roads") if opts["roads"] else None
    target, tile = _target(
        images, opts["target"], opts["vehicles"], opts["tile_size"], opts["allow_gaps"]
    )
    params = grouped(estimator_options(opts), {"tile_size": tile}, opts["settings"])
    points = (
        _read_vector(opts["vehicles"], "--vehicles")
        if opts["vehicles"] and tile and tile > 1
        else None
    )
    return images, target, _static(roads, images, tile), params, points


def estimator_options(opts: dict) -> dict:
    """The TrafficForecaster parameters among the parsed options: every option whose name is a
    parameter's (the flags carry the parameters' names, the callbacks their types), less the on/off
    flags left out (None), which keep the estimator's default."""
    return {
        name: value
        for name, value in opts.items()
        if name in ALL_DEFAULTS
        and name not in ("model", "progress")
        and not (value is None and isinstance(ALL_DEFAULTS[name], bool))
    }


def _check_split(stack: str, images, val, test) -> None:
    """Refuse, naming the folder, a STACK that holds only the held-out parts of its published split (as fit would)."""
    from trafficrnn.errors import SplitError
    from trafficrnn.splits import choose_split, held_out_message

    choice = choose_split(val, test, images.time.values, images)
    if choice.source == "published" and "train" not in choice.parts:
        raise SplitError(held_out_message(choice, images.time.values, f"STACK {stack}"))


def _scored_stack(
    est, model: str, stack: str, *, target, vehicles, roads, align, time_pattern, allow_gaps
):
    """The STACK read and aligned to a saved model, its target (``--target`` / ``--vehicles``) and the
    ``--roads`` static layers (None: the model's own), as ``evaluate`` and ``calibrate`` score them."""
    from trafficrnn.errors import ConfigError
    from trafficrnn.io import read_stack

    if roads and not est.static_bands_:
        raise ConfigError(
            f"--roads: {model} uses no static layer (it was trained without --roads); drop --roads"
        )
    images = _align_images(
        read_stack(
            stack,
            time=time_pattern,
            align="reproject" if align == "reproject" else "strict",
            allow_gaps=allow_gaps,
        ),
        est,
        align,
    )
    tile = est.grid_.tile_size
    truth, _ = _target(images, target, vehicles, tile if tile > 1 else None, allow_gaps)
    static = _static(_read_vector(roads, "--roads"), images, tile) if roads else None
    return images, truth, static


def _align_images(images, est, align: str):
    """``images`` resampled onto the model's GSD with ``--align resample``, warped onto the model's grid with
    ``--align reproject`` (where they differ), so that targets and static layers are built on that grid too."""
    from trafficrnn.estimation.checks import reproject_to_grid, resample_to_gsd

    if align == "reproject":
        return reproject_to_grid(images, est.grid_)
    return resample_to_gsd(images, est.gsd_) if align == "resample" else images
