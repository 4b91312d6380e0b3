"""The ``trafficrnn`` command line: argument parsing only; every command calls the Python API.

A user mistake (any :class:`~trafficrnn.errors.TrafficRNNError`) prints one line and exits
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from trafficrnn._version import __version__
from trafficrnn.cli_options import (
    _FILE,
    MODEL_NAMES,
    STACK_ALIGN_HELP,
    TIME_PATTERN_HELP,
    _align_images,
    _check_outputs,
    _covariates,
    _data_kwargs,
    _ensemble_options,
    _load_model,
    _model_folder,
    _model_list,
    _model_run_options,
    _prepare_training,
    _read_vector,
    _scored_stack,
    _static,
    _table_json,
    _target,
    _training_options,
    _write_text,
)
from trafficrnn.errors import TrafficRNNError
from trafficrnn.params import DEFAULTS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: commands that live beside their own subsystem, imported when run (so that ``trafficrnn --help``
#: imports neither of them): name -> (module, attribute, the short help that ``--help`` lists)
LAZY_COMMANDS = {
    "datasets": (
        "trafficrnn.datasets.cli",
        "datasets_group",
        "Real datasets shipped with trafficrnn (list: nyc-bike).",
    ),
    "calibrate": (
        "trafficrnn.cli_quantiles",
        "calibrate_command",
        "Calibrate a saved MODEL (split conformal) on held-out frames of STACK before its test part.",
    ),
    "simulate": (
        "trafficrnn.synth.cli",
        "simulate_command",
        "Simulate a small city and write OUT_DIR/images, density, vehicles.gpkg, roads.gpkg, manifest.json.",
    ),
}


class _Group(click.Group):
    """A click group that turns TrafficRNNError and usage mistakes into one clear line (unless --debug),
    and imports the commands of ``LAZY_COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attribute, _ = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, without importing the lazy commands."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if (
                name in LAZY_COMMANDS and name not in self.commands
            ):  # a stand-in, to shorten the help alike
                rows.append(
                    (
                        name,
                        click.Command(name, help=LAZY_COMMANDS[name][2]).get_short_help_str(limit),
                    )
                )
            elif not (command := self.get_command(ctx, name)).hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (TrafficRNNError, click.UsageError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, click.UsageError):
                where = exc.ctx.command_path if exc.ctx else "trafficrnn"
                click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
            else:
                click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="trafficrnn")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Forecast traffic density over a map from time series of aerial images.

    \b
    Examples:
      trafficrnn demo                      # the whole pipeline on the shipped sample
      trafficrnn inspect data/sample/images
      trafficrnn train data/sample/images --target data/sample/density --out my-model
      trafficrnn forecast my-model data/sample/images --out forecast.tif
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command(context_settings=CONTEXT)
@click.argument("stack", type=click.Path(exists=True))
@click.option("--time-pattern", default=None, help=TIME_PATTERN_HELP)
@click.option(
    "--align",
    default="strict",
    show_default=True,
    type=click.Choice(["strict", "reproject"]),
    help=STACK_ALIGN_HELP,
)
@click.option("--allow-gaps", is_flag=True, help="Accept an irregular cadence and list the gaps.")
def inspect(stack: str, time_pattern: str | None, align: str, allow_gaps: bool) -> None:
    """Check a GeoTIFF stack and print what read_stack makes of it.

    STACK is a folder of GeoTIFFs (one per time step), a glob, or one multi-band GeoTIFF.

    \b
    Example:
      trafficrnn inspect data/sample/images
    """
    from trafficrnn.io import read_stack

    images = read_stack(stack, time=time_pattern, align=align, allow_gaps=allow_gaps, chunks={})
    t = images.rio.transform()
    epsg = images.rio.crs.to_epsg()
    times = images.time.values
    click.echo(f"frames     {images.sizes['time']}  ({str(times[0])[:19]} → {str(times[-1])[:19]})")
    click.echo(f"cadence    {images.attrs.get('cadence') or 'n/a (one frame)'}")
    click.echo(f"bands      {', '.join(map(str, images.band.values))}")
    click.echo(f"size       {images.sizes['y']} × {images.sizes['x']} px")
    click.echo(f"CRS        {f'EPSG:{epsg}' if epsg else images.rio.crs.to_wkt()[:60]}")
    click.echo(f"transform  ({t.a:g}, {t.b:g}, {t.c:.6f}, {t.d:g}, {t.e:g}, {t.f:.6f})")
    click.echo(f"bounds     {tuple(round(v, 6) for v in images.rio.bounds())}")
    gaps = images.attrs.get("gaps") or []
    click.echo(f"gaps       {len(gaps)}" + (f": {', '.join(gaps[:5])}" if gaps else ""))
    import pandas as pd

    from trafficrnn.splits import published_split

    published = published_split(images)
    if published is not None:
        parts = published.parts_in(pd.DatetimeIndex(times))
        click.echo(
            f"split      published: {published.describe()} (this stack holds its {', '.join(parts) or 'no'} "
            f"part{'s' if len(parts) > 1 else ''}; train / evaluate / compare use it unless --val / --test)"
        )


@main.command(context_settings=CONTEXT)
@click.option(
    "--out",
    "out_dir",
    default="trafficrnn-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (its demo files are replaced).",
)
@click.option(
    "--sample",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="A folder written by `trafficrnn simulate` (default: the shipped data/sample).",
)
@click.option(
    "--minutes", default=1.2, show_default=True, type=float, help="Training time limit per model."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir: str, sample: str | None, minutes: float, seed: int, quiet: bool) -> None:
    """Run the whole pipeline on the synthetic sample: ConvLSTM vs ConvGRU vs baselines.

    Trains both models on the shipped sample (or simulates one), prints a per-lead RMSE table
    against persistence, historical average and Ridge, and writes a COG, a NetCDF, a
    GeoPackage of cells, PNG maps and an animated GIF into the output folder.

    \b
    Example:
      trafficrnn demo --out trafficrnn-demo --minutes 1
    """
    from trafficrnn.demo import run_demo

    run_demo(
        out_dir, sample=sample, max_minutes=minutes, seed=seed, progress=not quiet, echo=click.echo
    )


# -- model commands -----------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("stack")
@click.option(
    "--model",
    "model_name",
    default=DEFAULTS["model"],
    show_default=True,
    type=click.Choice(MODEL_NAMES, case_sensitive=False),
)
@click.option(
    "--out", required=True, type=click.Path(), help="Model folder to write (weights + config.json)."
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(),
    default=None,
    help="Keep the training checkpoints here (per member with --members), to --resume after an interruption.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --checkpoint-dir (same settings and stack; --max-epochs / --max-minutes may "
    "grow); members that had finished are read back.",
)
@_ensemble_options
@_training_options
def train(
    stack: str,
    model_name: str,
    out: str,
    checkpoint_dir: str | None,
    resume: bool,
    members: int,
    jobs: int,
    **opts,
) -> None:
    """Train a ConvLSTM or ConvGRU on a GeoTIFF stack and save it.

    STACK holds aerial images (with --target or --vehicles and --tile-size), or density / flow
    grids that are their own target (no --target, no --tile-size). The defaults are those of
    TrafficForecaster: convgru, 8 frames in, 6 leads out, at most 5 minutes (--max-minutes 0: no
    limit). Options without a flag of their own (the estimator's model_kwargs and trainer_kwargs):
    --set KEY=VALUE. Static layers (--roads) are saved with the model: forecast and evaluate reuse them.

    \b
    Examples:
      trafficrnn train city/images --vehicles city/vehicles.gpkg --roads city/roads.gpkg \\
          --tile-size 64 --out my-model
      trafficrnn train grids/ --model convlstm --input-steps 12 --out flow-model
      trafficrnn train grids/ --set lr=0.001 --set kernel_size=5 --out flow-model   # any option
      trafficrnn train grids/ --model convgru --members 2 --jobs 2 --max-minutes 10 --out flow-ensemble
      trafficrnn train grids/ --max-minutes 60 --checkpoint-dir runs/flow --out flow-model
      trafficrnn train grids/ --max-minutes 60 --checkpoint-dir runs/flow --resume --out flow-model  # after a kill
    """
    from trafficrnn.errors import ConfigError
    from trafficrnn.estimator import TrafficForecaster

    if resume and checkpoint_dir is None:
        raise ConfigError("--resume needs --checkpoint-dir: the folder of the run to continue")
    _check_outputs([out], opts["overwrite"])
    images, target, static, params, points = _prepare_training(stack, opts)
    est = TrafficForecaster(model_name.lower(), progress=not opts["quiet"], **params)
    if members > 1:
        from trafficrnn.ensemble import ForecastEnsemble

        est = ForecastEnsemble(est, members=members, n_jobs=jobs)
    est.fit(
        images,
        target,
        vehicles=points,
        **_data_kwargs(static, opts["covariates"]),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    est.save(out, overwrite=opts["overwrite"])
    s = est.training_summary_
    runs = s.get("runs", [s])
    losses = [r["best_val_loss"] for r in runs if r.get("best_val_loss") is not None]
    best = (
        f"{', '.join(f'{v:.4g}' for v in losses)} (normalised MSE)"
        if losses
        else "n/a (no val split)"
    )
    first = runs[0]
    click.echo(
        f"trained    {est.model} on {first['frames']} frames ({first['period'][0][:16]} → "
        f"{first['period'][1][:16]}), grid {est.grid_.shape[0]}×{est.grid_.shape[1]} cells, "
        f"bands {', '.join(est.bands_)}"
    )
    epochs = ", ".join(str(r["epochs"]) for r in runs)
    wall = s.get(
        "wall_seconds"
    )  # all of fit: set-up, training, validation (a fraction of epochs: the last one cut)
    click.echo(
        f"epochs     {epochs}  ({s['train_seconds']:.1f} s training{' per member' if members > 1 else ''}"
        + (f", {wall:.1f} s in all)" if wall is not None else ")")
    )
    click.echo(f"best val   {best}")
    from trafficrnn.modelinfo import split_lines

    lines = split_lines(first.get("split") or {}, 0, first.get("split_source"))
    for key, value in [lines[0]] + [line for line in lines[1:] if line[1].startswith("split by")]:
        click.echo(
            f"{key:<10} {value}"
        )  # the ranges and which split (the overlap note is for `info`)
    click.echo(f"parameters {s['parameters']:,}" + (f" ({members} members)" if members > 1 else ""))
    click.echo(f"saved      {out}  (see `trafficrnn info {out}`)")


@main.command(context_settings=CONTEXT)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="forecast.tif (COG), forecast.nc (CF-NetCDF), forecast.zarr (CF Zarr store) or "
    "forecast.gpkg (one polygon per cell, or per road segment with --segments).",
)
@click.option(
    "--segments",
    default=None,
    type=_FILE,
    help="Road lines: write the .gpkg per road segment (length-weighted mean of its cells) instead "
    "of per cell.",
)
@click.option(
    "--horizon",
    default=None,
    type=click.IntRange(1),
    help="Lead steps (at most the trained horizon).",
)
@click.option(
    "--target",
    default=None,
    help="Observed targets of the input frames (models trained with --target-inputs).",
)
@click.option(
    "--vehicles",
    default=None,
    type=_FILE,
    help="Vehicle points of the input frames (--target-inputs models).",
)
@click.option(
    "--window",
    default=None,
    type=click.IntRange(1),
    help="Large areas: forecast windows of this many cells, streamed into the COG or Zarr store "
    "(.tif or .zarr only).",
)
@click.option(
    "--halo",
    default=None,
    type=click.IntRange(0),
    help="Cells read around each window (default: exact).",
)
@click.option(
    "--scheduler", default=None, help="dask scheduler address (tcp://host:8786) for --window runs."
)
@click.option(
    "--quantiles",
    default=None,
    help="Comma-separated levels, e.g. 0.1,0.5,0.9: quantiles of a calibrated model "
    "(`trafficrnn calibrate`) or of one trained with a quantile head (--set "
    "quantiles=[0.1,0.5,0.9]), one band / column per lead and quantile.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_model_run_options
def forecast(
    model: str,
    stack: str,
    out: str,
    segments: str | None,
    roads: str | None,
    horizon: int | None,
    target: str | None,
    vehicles: str | None,
    covariates: str | None,
    window: int | None,
    halo: int | None,
    scheduler: str | None,
    align: str,
    time_pattern: str | None,
    allow_gaps: bool,
    overwrite: bool,
    quantiles: str | None = None,
) -> None:
    """Forecast the frames after the end of STACK with a saved MODEL; the format follows the extension.

    \b
    Examples:
      trafficrnn forecast my-model city/images --out forecast.tif
      trafficrnn forecast my-model city/images --out cells.gpkg
      trafficrnn forecast my-model city/images --segments city/roads.gpkg --out segments.gpkg
      trafficrnn forecast my-model big/images --out big.tif --window 64 --scheduler tcp://host:8786
      trafficrnn forecast my-model city/density --out q.nc --quantiles 0.1,0.5,0.9
    """
    from pathlib import Path

    from trafficrnn.cli_quantiles import parse_quantiles
    from trafficrnn.errors import ConfigError

    levels = parse_quantiles(quantiles)
    from trafficrnn.io import WRITERS, get_writer

    _check_outputs([out], overwrite, tuple(WRITERS))
    writer, output = get_writer(out), WRITERS.info(Path(out).suffix)
    if segments and not output.segments:
        raise ConfigError(
            f"--segments with --out {out}: road segments need a .gpkg output; use "
            "--out forecast.gpkg, or drop --segments"
        )
    est = _load_model(model)
    roads_gdf, segments_gdf = _forecast_layers(est, model, roads, segments)
    if window or scheduler:
        _check_streaming(est, out, output, quantiles, levels, align)
        path = _forecast_streamed(
            est,
            stack,
            out,
            roads_gdf,
            window=window,
            halo=halo,
            scheduler=scheduler,
            horizon=horizon,
            overwrite=overwrite,
            covariates=covariates,
            time_pattern=time_pattern,
            allow_gaps=allow_gaps,
        )
        click.echo(f"wrote {path} ({output.label}, windows of {window or 'default'} cells)")
        return
    recent, extra = _forecast_inputs(
        est,
        model,
        stack,
        roads_gdf,
        target=target,
        vehicles=vehicles,
        covariates=covariates,
        align=align,
        time_pattern=time_pattern,
        allow_gaps=allow_gaps,
    )
    if levels is not None:
        extra["quantiles"] = levels
    fc = est.predict(recent, horizon=horizon, align=align, **extra)
    writer(fc, out, overwrite=overwrite, **({"segments": segments_gdf} if output.segments else {}))
    click.echo(_forecast_written(fc, out, output, segments_gdf, levels))


def _forecast_layers(est, model: str, roads: str | None, segments: str | None):
    """Read the --roads and --segments layers (or None); refuse --roads for a model without static layers."""
    from trafficrnn.errors import ConfigError

    if roads and not est.static_bands_:
        raise ConfigError(
            f"--roads: {model} uses no static layer (it was trained without --roads); drop --roads "
            "(for a forecast per road segment: --segments ROADS.gpkg --out forecast.gpkg)"
        )
    roads_gdf = _read_vector(roads, "--roads") if roads else None
    segments_gdf = _read_vector(segments, "--segments") if segments else None
    return roads_gdf, segments_gdf


def _check_streaming(est, out: str, output, quantiles: str | None, levels, align: str) -> None:
    """Refuse what a --window/--scheduler forecast cannot do: quantiles, --align, a non-streaming format."""
    from trafficrnn.errors import ConfigError
    from trafficrnn.estimation.checks import gdalwarp_line

    if levels is not None:
        raise ConfigError(
            f"--quantiles {quantiles} is not available with --window/--scheduler: forecast "
            "quantiles of a stack that fits in memory, or drop --quantiles"
        )
    if align != "exact":
        raise ConfigError(
            f"--align {align} is not available with --window/--scheduler: warp the stack onto "
            f"the model's pixels first ({gdalwarp_line(est.grid_)}, per frame), or drop --window"
        )
    if not output.streams:
        raise ConfigError(
            "--window/--scheduler stream the forecast into a COG or a Zarr store: use --out "
            f"forecast.tif or --out forecast.zarr (got {out})"
        )


def _forecast_streamed(
    est,
    stack: str,
    out: str,
    roads_gdf,
    *,
    window: int | None,
    halo: int | None,
    scheduler: str | None,
    horizon: int | None,
    overwrite: bool,
    covariates: str | None,
    time_pattern: str | None,
    allow_gaps: bool,
):
    """Forecast a large STACK window by window (on a dask scheduler when given) into ``out``; return its path."""
    from trafficrnn.inference import connect, forecast_large
    from trafficrnn.io import read_stack

    client = connect(scheduler) if scheduler else None
    try:
        images = read_stack(stack, time=time_pattern, allow_gaps=allow_gaps, chunks={})
        static = _static(roads_gdf, images, est.grid_.tile_size) if roads_gdf is not None else None
        return forecast_large(
            est,
            images,
            out,
            window=window,
            halo=halo,
            client=client,
            horizon=horizon,
            overwrite=overwrite,
            covariates=_covariates(covariates),
            static=static,
        )
    finally:
        if client is not None:
            client.close()


def _forecast_inputs(
    est,
    model: str,
    stack: str,
    roads_gdf,
    *,
    target: str | None,
    vehicles: str | None,
    covariates: str | None,
    align: str,
    time_pattern: str | None,
    allow_gaps: bool,
):
    """The last frames of STACK the model reads, on its pixels, and the data keywords of its forecast."""
    from trafficrnn.errors import ConfigError
    from trafficrnn.io import read_stack

    images = read_stack(
        stack,
        time=time_pattern,
        align="reproject" if align == "reproject" else "strict",
        allow_gaps=allow_gaps,
        chunks={},
    )
    recent = _align_images(images.isel(time=slice(-est.history_needed, None)).load(), est, align)
    static = (
        _static(roads_gdf, recent, est.grid_.tile_size) if roads_gdf is not None else None
    )  # else: the model's
    extra = _data_kwargs(static, covariates)
    if est.target_inputs:
        if not (target or vehicles):
            raise ConfigError(
                f"{model} reads the observed targets of its input frames (trained with "
                "--target-inputs): pass --target STACK or --vehicles POINTS.gpkg for them"
            )
        tile = est.grid_.tile_size
        extra["target"] = _target(recent, target, vehicles, tile if tile > 1 else None, allow_gaps)[
            0
        ]
    return recent, extra


def _forecast_written(fc, out: str, output, segments_gdf, levels) -> str:
    """The line saying what a forecast wrote: format, leads, issue time and model."""
    leads = [f"+{int(v.astype('timedelta64[m]').astype(int))}min" for v in fc["lead"].values]
    kind = output.label + (
        (", road segments" if segments_gdf is not None else ", cells") if output.segments else ""
    )
    if levels is not None:
        kind += f", quantiles {','.join(f'{q:g}' for q in levels)}"
    return (
        f"wrote {out} ({kind}): {len(leads)} lead(s) "
        f"{leads[0]} … {leads[-1]}, issued {fc.attrs['issued']}, model {fc.attrs['model']}"
    )


@main.command(context_settings=CONTEXT)
@click.option(
    "--target", default=None, help="Target stack on the model's grid (vehicles per cell)."
)
@click.option(
    "--vehicles", default=None, type=_FILE, help="Vehicle points, counted per cell and frame."
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["test", "val", "all"]),
    help="Windows scored: the chronological test or val split, or every window of STACK.",
)
@click.option(
    "--csv",
    "csv_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the table as CSV.",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the table as JSON.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing --csv / --json files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--quantiles",
    default=None,
    help="Comma-separated levels, e.g. 0.1,0.5,0.9, of a calibrated model or one with a quantile "
    "head: also pinball loss, "
    "interval coverage and width, and CRPS, beside two probabilistic baselines.",
)
@_model_run_options
def evaluate(
    model: str,
    stack: str,
    target: str | None,
    vehicles: str | None,
    roads: str | None,
    covariates: str | None,
    split: str,
    align: str,
    time_pattern: str | None,
    csv_path: str | None,
    json_path: str | None,
    allow_gaps: bool,
    overwrite: bool,
    quiet: bool,
    quantiles: str | None = None,
) -> None:
    """Score a saved MODEL per lead beside persistence, historical average and Ridge.

    Prints MAE, RMSE, MAPE and skill vs persistence per lead for the model and every baseline.

    \b
    Example:
      trafficrnn evaluate my-model city/images --vehicles city/vehicles.gpkg --csv scores.csv
    """
    from trafficrnn.cli_quantiles import parse_quantiles
    from trafficrnn.estimation.evaluation import evaluate as score

    levels = parse_quantiles(quantiles)
    _check_outputs([csv_path], overwrite, (".csv",))
    _check_outputs([json_path], overwrite, (".json",))
    est = _load_model(model)
    images, truth, static = _scored_stack(
        est,
        model,
        stack,
        target=target,
        vehicles=vehicles,
        roads=roads,
        align=align,
        time_pattern=time_pattern,
        allow_gaps=allow_gaps,
    )  # static None: the model's own
    table = score(
        est,
        images,
        truth,
        split=None if split == "all" else split,
        align=align,
        progress=not quiet,
        quantiles=levels,
        **_data_kwargs(static, covariates),
    )
    click.echo(
        f"{est.model} vs baselines on the {split} split ({table.attrs['issues']} forecasts issued "
        f"{table.attrs['first_issue'][:16]} → {table.attrs['last_issue'][:16]}; {est.units_})"
    )
    if split != "all":
        click.echo(f"split by {table.attrs.get('split_source')}")
    click.echo(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if csv_path:
        _write_text(csv_path, table.to_csv(), overwrite)
    if json_path:
        _write_text(json_path, _table_json(table), overwrite)


@main.command("compare", context_settings=CONTEXT)
@click.argument("stack")
@click.option(
    "--models",
    default=",".join(MODEL_NAMES),
    show_default=True,
    callback=_model_list,
    help=f"Comma-separated model names ({', '.join(MODEL_NAMES)}).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for comparison.csv, comparison.json and comparison.png.",
)
@_ensemble_options
@_training_options
def compare_command(
    stack: str, models: list[str], out_dir: str, members: int, jobs: int, **opts
) -> None:
    """Train ConvLSTM and ConvGRU with the same settings and compare them with the baselines.

    Per-lead RMSE / MAE on the same test split, parameter count, train time and seconds per
    forecast; writes OUT/comparison.csv, comparison.json and comparison.png.

    \b
    Example:
      trafficrnn compare city/images --vehicles city/vehicles.gpkg --tile-size 64 \\
          --input-steps 8 --horizon 6 --max-minutes 2 --out comparison/
      trafficrnn compare grids/ --members 2 --jobs 2 --max-minutes 10 --out comparison/
    """
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trafficrnn.compare import compare, comparison_table, plot_comparison
    from trafficrnn.io.atomic import atomic_output

    out = Path(out_dir)
    files = {ext: out / f"comparison.{ext}" for ext in ("csv", "json", "png")}
    if out.exists():
        _check_outputs(files.values(), opts["overwrite"])
    images, target, static, params, points = _prepare_training(stack, opts)
    result = compare(
        images,
        target,
        models=models,
        static=static,
        progress=not opts["quiet"],
        echo=click.echo,
        covariates=_covariates(opts["covariates"]),
        members=members,
        n_jobs=jobs,
        vehicles=points,
        **params,
    )
    click.echo("\nRMSE per lead (lower is better)")
    click.echo(comparison_table(result.table).to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo("\n" + result.summary.to_string(float_format=lambda v: f"{v:.4g}"))
    fig = plot_comparison(result)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(files["csv"], result.table.to_csv(), opts["overwrite"])
    _write_text(files["json"], json.dumps(result.to_records(), indent=2), opts["overwrite"])
    with atomic_output(files["png"], overwrite=opts["overwrite"]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    click.echo(f"\nwrote {', '.join(str(p) for p in files.values())}")


@main.command("export", context_settings=CONTEXT)
@click.argument("model")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="ONNX file to write (.onnx); its sidecar JSON goes beside it as OUT.json.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file and its sidecar.")
def export_command(model: str, out: str, overwrite: bool) -> None:
    """Export a saved MODEL's network as ONNX for deployment, with a sidecar JSON (grid, CRS,
    normalisation, cadence, bands, the inputs' names, shapes and channels).

    Run it with trafficrnn.onnx.OnnxForecaster(OUT).predict(images) (needs the onnx extra). An
    ensemble is refused: export each member folder.

    \b
    Example:
      trafficrnn export my-model --out my-model.onnx
    """
    from trafficrnn.onnx import export_onnx, sidecar_path

    _check_outputs([out, sidecar_path(out)], overwrite)
    path = export_onnx(_load_model(model), out, overwrite=overwrite)
    click.echo(f"wrote {path} and {sidecar_path(path)}")


@main.command(context_settings=CONTEXT)
@click.argument("model")
def info(model: str) -> None:
    """Print what a saved MODEL expects: bands, grid, CRS, cadence, steps, training summary.

    Reads only the validated config.json (nothing is unpickled, no weights are loaded).

    \b
    Example:
      trafficrnn info my-model
    """
    from trafficrnn.modelinfo import describe

    _model_folder(model)
    for key, value in describe(model):
        click.echo(f"{key:<10} {value}")


@main.command("map", context_settings=CONTEXT)
@click.argument("forecast_file", metavar="FORECAST", type=_FILE)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="HTML page to write (.html)."
)
@click.option("--band", default=None, help="Band to show (default: the first).")
@click.option(
    "--basemap", is_flag=True, help="Show OpenStreetMap tiles at start (they need the internet)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def map_command(forecast_file: str, out: str, band: str | None, basemap: bool, overwrite: bool):
    """Write an interactive web map of a FORECAST (.tif or .nc): one self-contained HTML page.

    One layer per lead, a lead / valid-time slider, a colour bar in the units and the cell value
    under the mouse; Leaflet is inlined, so the page works offline (the OpenStreetMap background
    is optional).

    \b
    Example:
      trafficrnn map forecast.tif --out map.html
    """
    from trafficrnn.webmap import write_map

    path = write_map(forecast_file, out, overwrite=overwrite, band=band, basemap=basemap)
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
