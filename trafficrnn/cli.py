"""The ``trafficrnn`` command line: argument parsing only; every command calls the Python API.

A user mistake (any :class:`~trafficrnn.errors.TrafficRNNError`) prints one line and exits
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

import click

from trafficrnn._version import __version__
from trafficrnn.errors import TrafficRNNError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """A click group that turns TrafficRNNError into one clear line (unless --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TrafficRNNError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
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
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command(context_settings=CONTEXT)
@click.argument("stack", type=click.Path(exists=True))
@click.option("--time-pattern", default=None, help="strptime pattern of the file names, e.g. 'frame_%Y%m%d_%H%M'.")
@click.option("--allow-gaps", is_flag=True, help="Accept an irregular cadence and list the gaps.")
def inspect(stack: str, time_pattern: str | None, allow_gaps: bool) -> None:
    """Check a GeoTIFF stack and print what read_stack makes of it.

    STACK is a folder of GeoTIFFs (one per time step), a glob, or one multi-band GeoTIFF.

    \b
    Example:
      trafficrnn inspect data/sample/images
    """
    from trafficrnn.io import read_stack

    images = read_stack(stack, time=time_pattern, allow_gaps=allow_gaps, chunks={})
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


@main.command(context_settings=CONTEXT)
@click.option("--out", "out_dir", default="trafficrnn-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (its demo files are replaced).")
@click.option("--sample", default=None, type=click.Path(exists=True, file_okay=False),
              help="A folder written by `trafficrnn simulate` (default: the shipped data/sample).")
@click.option("--minutes", default=1.2, show_default=True, type=float, help="Training time limit per model.")
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

    run_demo(out_dir, sample=sample, max_minutes=minutes, seed=seed, progress=not quiet, echo=click.echo)


def _register() -> None:
    """Attach the commands that live beside their own subsystem."""
    from trafficrnn.synth.cli import simulate_command

    main.add_command(simulate_command, "simulate")


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
