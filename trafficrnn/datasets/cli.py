"""The ``trafficrnn datasets`` command group: write a shipped dataset as a GeoTIFF stack for the CLI path."""

from __future__ import annotations

import click
import pandas as pd

from trafficrnn.datasets import COVARIATES, DATASETS

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
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="Only one part of the dataset's published split (default: all of it). Every file records "
    "the split, which train / evaluate / compare use by default; train refuses a val or test "
    "part alone.",
)
@click.option(
    "--start", default=None, help="First slot or day to write, e.g. 2016-10-01 or 2016-10-01T08:00."
)
@click.option(
    "--end", default=None, help="Last slot or day to write (a day alone: up to its last slot)."
)
@click.option(
    "--covariates",
    "covariates_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the dataset's daily covariates (weather, holidays) to this CSV, for --covariates.",
)
@click.option("--overwrite", is_flag=True, help="Replace files that exist already in DIRECTORY.")
def export_command(
    name: str,
    directory: str,
    split: str | None,
    start: str | None,
    end: str | None,
    covariates_path: str | None,
    overwrite: bool,
) -> None:
    """Write dataset NAME into DIRECTORY as one GeoTIFF per time slot (readable by read_stack).

    Each file holds the dataset's bands (nyc-bike: inflow, outflow) as float32 with the CRS,
    the transform, TIFFTAG_DATETIME (naive local time), the units and the published split (tag
    'split': first times of its val and test parts); the file names are the slot times. The
    whole nyc-bike series is 4320 files (about 11 MB). `trafficrnn train DIRECTORY` then holds
    out the published val and test days (unless --val / --test are given), so that its scores
    compare with published ones.

    \b
    Examples:
      trafficrnn datasets export nyc-bike nyc-bike/
      trafficrnn datasets export nyc-bike week/ --start 2016-10-10 --end 2016-10-16
      trafficrnn datasets export nyc-bike nyc-bike/ --covariates nyc-weather.csv
      trafficrnn datasets export nyc-bike nyc-test/ --split test   # to evaluate on, not to train on
    """
    from trafficrnn.datasets import get_dataset
    from trafficrnn.errors import ConfigError
    from trafficrnn.io import write_stack
    from trafficrnn.io.atomic import atomic_output, check_output
    from trafficrnn.splits import published_split

    key = name.lower()
    if covariates_path is not None:
        if key not in COVARIATES:
            raise ConfigError(
                f"dataset {name!r} has no covariates (datasets with some: {sorted(COVARIATES)}); "
                "drop --covariates"
            )
        check_output(covariates_path, overwrite=overwrite, suffixes=(".csv",))
    da = get_dataset(key)(split=split, start=start, end=end)
    paths = write_stack(da, directory, overwrite=overwrite)
    if covariates_path is not None:
        table = COVARIATES[key]()
        with atomic_output(covariates_path, overwrite=overwrite) as tmp:
            table.rename_axis("date").to_csv(tmp, date_format="%Y-%m-%d", float_format="%g")
        click.echo(f"wrote {covariates_path} ({len(table)} days: {', '.join(table.columns)})")
    times = da["time"].values
    click.echo(
        f"wrote {len(paths)} GeoTIFFs to {directory} ({str(times[0])[:16]} → {str(times[-1])[:16]}, "
        f"bands {', '.join(map(str, da['band'].values))}, {da.attrs.get('units', '')})"
    )
    published = published_split(da)
    if published is not None:
        parts = published.parts_in(pd.DatetimeIndex(times))
        note = (
            ""
            if "train" in parts
            else (
                f"; it holds only the {' and '.join(parts)} part{'s' if len(parts) > 1 else ''}: evaluate on it, "
                f"train on an export with the train days (e.g. without --split)"
            )
        )
        click.echo(
            f"published split {published.describe()} (tag 'split' of each file, used by train / "
            f"evaluate / compare unless --val / --test are given){note}"
        )
