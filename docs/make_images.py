"""Regenerate the README pictures in docs/img from the outputs of a demo run.

    make demo                                   # writes trafficrnn-demo/
    .venv/bin/python docs/make_images.py        # or: docs/make_images.py OTHER-DEMO-FOLDER

docs/img/forecast_leads.png   the demo's forecast (forecast.nc), one panel per lead
docs/img/sample_frame.png     a frame of the sample the demo trained on, at the sample's busiest time
docs/img/sample_density.png   the vehicles per cell at that time (the target), road lines over it

It prints the README captions that match the pictures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trafficrnn.demo import find_sample  # noqa: E402
from trafficrnn.io import read_netcdf, read_stack  # noqa: E402
from trafficrnn.io.atomic import atomic_output  # noqa: E402
from trafficrnn.plot import plot_leads, plot_map  # noqa: E402

DOCS_IMG = Path(__file__).resolve().parent / "img"


def save(fig, path: Path) -> Path:
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def sample_pictures(sample: Path, out: Path) -> tuple[str, str]:
    """The sample's frame and target at its busiest time; returns the two README captions."""
    images = read_stack(sample / "images", allow_gaps=True)
    target = read_stack(sample / "density", allow_gaps=True)
    busiest = pd.Timestamp(
        target["time"].values[int(np.nanargmax(target.sum(("band", "y", "x")).values))]
    )
    gsd = abs(images.rio.transform().a)
    cell = abs(target.rio.transform().a)
    epsg = images.rio.crs.to_epsg()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    plot_map(
        images.sel(time=busiest),
        ax=ax,
        title=f"rendered frame {busiest:%Y-%m-%d %H:%M} ({gsd:g} m/px)",
    )
    save(fig, out / "sample_frame.png")
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    plot_map(
        target.sel(time=busiest),
        ax=ax,
        label=f"vehicles per {cell:g} m cell",
        title=f"vehicles per cell {busiest:%Y-%m-%d %H:%M}",
    )
    if (sample / "roads.gpkg").is_file():
        from trafficrnn.io import read_vectors

        roads = read_vectors(sample / "roads.gpkg", geometry="line").to_crs(target.rio.crs)
        left, right = ax.get_xlim()
        bottom, top = ax.get_ylim()
        roads.plot(ax=ax, color="white", linewidth=0.5, alpha=0.6)
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
    save(fig, out / "sample_density.png")
    place = ""
    if (sample / "manifest.json").is_file():
        place = (
            json.loads((sample / "manifest.json").read_text()).get("parameters", {}).get("place")
            or ""
        )
    where = f"{gsd:g} m/px, {place.title() + ', ' if place else ''}EPSG:{epsg}"
    return (
        f"a rendered frame of the synthetic sample ({where}) at its busiest time, {busiest:%H:%M}",
        f"vehicles per {cell:g} m cell at that time (the target)",
    )


def forecast_picture(demo: Path, out: Path) -> str:
    """The demo's forecast, one panel per lead; returns the README caption."""
    forecast = read_netcdf(demo / "forecast.nc")
    save(plot_leads(forecast), out / "forecast_leads.png")
    leads = pd.to_timedelta(forecast["lead"].values)
    step = leads[0].total_seconds() / 60
    model = {"convlstm": "ConvLSTM", "convgru": "ConvGRU"}.get(
        forecast.attrs.get("model"), forecast.attrs.get("model")
    )
    return (
        f"The forecast `make demo` wrote on a fresh clone ({model}, "
        f"{len(leads)} leads of {step:g} minutes; the same maps are in `{demo.name}/forecast.tif`, one band "
        "per lead):"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "demo",
        nargs="?",
        default="trafficrnn-demo",
        type=Path,
        help="folder a demo run wrote (default: trafficrnn-demo)",
    )
    parser.add_argument(
        "--sample",
        type=Path,
        default=None,
        help="the sample the demo used (default: the shipped data/sample, or the one the demo "
        "simulated into DEMO/.cache)",
    )
    parser.add_argument(
        "--out", type=Path, default=DOCS_IMG, help="where the pictures go (default: docs/img)"
    )
    args = parser.parse_args(argv)
    if not (args.demo / "forecast.nc").is_file():
        parser.error(
            f"{args.demo}/forecast.nc not found: run `make demo` first (or name the demo's folder)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    sample = args.sample or find_sample(args.demo / ".cache", progress=False)
    captions = sample_pictures(sample, args.out)
    forecast = forecast_picture(args.demo, args.out)
    print("\nREADME captions:")
    print(f"| {captions[0]} | {captions[1]} |")
    print(forecast)


if __name__ == "__main__":
    main()
