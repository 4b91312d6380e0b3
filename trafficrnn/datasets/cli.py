"""The ``trafficrnn datasets`` command group: write a shipped dataset as a GeoTIFF stack for the CLI path."""

from __future__ import annotations

import click

from trafficrnn.datasets import DATASETS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group("datasets", context_settings=CONTEXT)
def datasets_group() -> None:
    """Real datasets shipped with trafficrnn (list: nyc-bike).

    \b
    Example:
      trafficrnn datasets export nyc-bike nyc-bike-stack/
      trafficrnn inspect nyc-bike-stack/
    """


@datasets_group.command("export", context_settings=CONTEXT)
@click.argument("name", type=click.Choice(sorted(DATASETS), case_sensitive=False))
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Only one part of the dataset's published split (default: all of it).")
@click.option("--start", default=None, help="First slot or day to write, e.g. 2016-10-01 or 2016-10-01T08:00.")
@click.option("--end", default=None, help="Last slot or day to write (a day alone: up to its last slot).")
@click.option("--overwrite", is_flag=True, help="Replace files that exist already in DIRECTORY.")
def export_command(name: str, directory: str, split: str | None, start: str | None, end: str | None,
                   overwrite: bool) -> None:
    """Write dataset NAME into DIRECTORY as one GeoTIFF per time slot (readable by read_stack).

    Each file holds the dataset's bands (nyc-bike: inflow, outflow) as float32 with the CRS,
    the transform, TIFFTAG_DATETIME (naive local time) and the units; the file names are the
    slot times. The whole nyc-bike series is 4320 files (about 11 MB).

    \b
    Examples:
      trafficrnn datasets export nyc-bike nyc-bike/
      trafficrnn datasets export nyc-bike week/ --start 2016-10-10 --end 2016-10-16
    """
    from trafficrnn.datasets import get_dataset
    from trafficrnn.io import write_stack

    da = get_dataset(name)(split=split, start=start, end=end)
    paths = write_stack(da, directory, overwrite=overwrite)
    times = da["time"].values
    click.echo(f"wrote {len(paths)} GeoTIFFs to {directory} ({str(times[0])[:16]} → {str(times[-1])[:16]}, "
               f"bands {', '.join(map(str, da['band'].values))}, {da.attrs.get('units', '')})")
