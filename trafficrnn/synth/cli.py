"""The ``trafficrnn simulate`` command: write a synthetic city as GeoTIFF stacks and GeoPackages."""

from __future__ import annotations

import logging
import time

import click

from trafficrnn.errors import TrafficRNNError


@click.command("simulate")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--size", default=1024, show_default=True, type=int, help="Image side in pixels.")
@click.option("--days", default=2.0, show_default=True, type=float, help="Simulated days.")
@click.option("--step", default="5min", show_default=True, help="Frame cadence, e.g. 5min, 15min.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the city and its traffic."
)
@click.option(
    "--tile-size", default=64, show_default=True, type=int, help="Image pixels per grid cell side."
)
@click.option(
    "--gsd",
    default=1.0,
    show_default=True,
    type=float,
    help="Ground sampling distance, m per pixel.",
)
@click.option(
    "--start", default="2024-06-03", show_default=True, help="UTC time of the first frame."
)
@click.option(
    "--clouds/--no-clouds",
    default=False,
    show_default=True,
    help="Add clouds (nodata + cloud masks).",
)
@click.option(
    "--cloud-cover",
    default=0.15,
    show_default=True,
    type=float,
    help="Mean share of the scene under clouds.",
)
@click.option(
    "--missing",
    "missing_frames",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of time steps without an image.",
)
@click.option(
    "--compress",
    "image_compress",
    default="jpeg",
    show_default=True,
    type=click.Choice(["jpeg", "deflate"]),
    help="Compression of the RGB images.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def simulate_command(
    out_dir,
    size,
    days,
    step,
    seed,
    tile_size,
    gsd,
    start,
    clouds,
    cloud_cover,
    missing_frames,
    image_compress,
    overwrite,
    quiet,
):
    """Simulate a small city and write OUT_DIR/images, density, vehicles.gpkg, roads.gpkg, manifest.json."""
    from trafficrnn.synth.simulate import simulate, write_simulation

    logging.getLogger("trafficrnn").setLevel(logging.WARNING)
    began = time.perf_counter()
    try:
        result = simulate(
            size,
            days=days,
            step=step,
            seed=seed,
            tile_size=tile_size,
            gsd=gsd,
            start=start,
            clouds=clouds,
            cloud_cover=cloud_cover,
            missing_frames=missing_frames,
            progress=not quiet,
        )
        manifest = write_simulation(
            result, out_dir, overwrite=overwrite, image_compress=image_compress, progress=not quiet
        )
    except TrafficRNNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {manifest['time']['count']} time steps ({result.images.sizes['time']} images, "
        f"{manifest['counts']['vehicles']} vehicle points) to {out_dir} "
        f"in {time.perf_counter() - began:.1f} s"
    )
