"""The demo: the whole pipeline on the shipped synthetic sample, ConvLSTM vs ConvGRU vs baselines, GIS layers out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trafficrnn.compare import comparison_table
from trafficrnn.errors import InputFileError
from trafficrnn.params import MODEL_NAMES, grouped

log = logging.getLogger(__name__)

#: the sample shipped in the source tree (absent from an installed wheel: then one is simulated)
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
#: the sample's city as ``data/README.md`` regenerates it (seed 0), less its seed
SAMPLE_CITY = dict(
    size=512,
    days=2,
    step="15min",
    tile_size=64,
    gsd=1.0,
    start="2024-06-03",
    clouds=True,
    cloud_cover=0.05,
)
#: the settings of a model trained from scratch on the sample (where no pretrained model fits it)
SCRATCH = dict(
    input_steps=8,
    horizon=6,
    context=("ha",),
    max_time=1.2,
    model_kwargs=dict(hidden=(32, 32), encoder_width=16, cell_mean=True, residual=True),
    trainer_kwargs=dict(max_epochs=40, batch_size=8, lr=3e-3, patience=8),
)


def starting_points(images, tile: int) -> tuple[dict, str]:
    """The packaged pretrained model of each deep model where they fit the sample's images (RGB at
    the same GSD, the same tile size), with a line saying where training starts."""
    import numpy as np

    from trafficrnn.estimation.checks import gsd_of
    from trafficrnn.zoo import list_pretrained, pretrained

    if not set(MODEL_NAMES) <= set(list_pretrained()):
        return {}, "from scratch (the pretrained weights are not installed)"
    found = {name: pretrained(name) for name in MODEL_NAMES}
    first = next(iter(found.values()))
    fits = (
        first.grid_.tile_size == tile
        and len(first.input_bands_) == images.sizes["band"]
        and np.allclose(gsd_of(images), first.gsd_, rtol=0.05)
    )
    if not fits:
        return {}, (
            f"from scratch (the pretrained models read {len(first.input_bands_)}-band images of "
            f"{first.gsd_[0]:g} m pixels in tiles of {first.grid_.tile_size} px)"
        )
    return found, "from the packaged pretrained weights (trained on other synthetic cities)"


@dataclass
class DemoResult:
    """What the demo made: the comparison table, the fitted models and the files written."""

    table: pd.DataFrame
    models: dict = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def find_sample(cache: Path, *, progress: bool = True) -> Path:
    """The shipped sample folder, or a small one simulated into ``cache`` when it is absent."""
    if (SAMPLE / "images").is_dir() and (SAMPLE / "density").is_dir():
        return SAMPLE
    target = cache / "sample"
    if not (target / "manifest.json").exists():
        from trafficrnn.synth.simulate import simulate, write_simulation

        log.info("no shipped sample found; simulating one into %s", target)
        result = simulate(**SAMPLE_CITY, seed=0, progress=progress)
        write_simulation(result, target, overwrite=True, progress=progress)
    return target


def run_demo(
    out_dir: str | Path = "trafficrnn-demo",
    *,
    sample: str | Path | None = None,
    max_minutes: float = 1.2,
    max_epochs: int = 40,
    seed: int = 0,
    progress: bool = True,
    echo=print,
) -> DemoResult:
    """Train a ConvLSTM and a ConvGRU on the sample, compare them with the baselines, write the layers.

    Parameters
    ----------
    out_dir : path
        Output folder (created; files in it are replaced).
    sample : path, optional
        A folder written by ``trafficrnn simulate`` (default: the shipped ``data/sample``).
    max_minutes : float
        Training time limit per model.
    max_epochs, seed, progress : training settings.
    echo : callable
        Where progress lines go (``print`` for the CLI).

    Raises
    ------
    InputFileError
        If ``sample`` lacks ``images/`` or ``density/``.
    """
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = _sample_folder(sample, out, progress)
    started = time.perf_counter()
    images, target, tile, points = _read_sample(folder, echo)
    init, settings = _demo_settings(images, tile, max_minutes, max_epochs, seed, echo)
    result = _compare_models(images, target, points, init, settings, progress, echo)
    best = _report(result.table, echo)
    est = result.models[best]
    forecast = est.predict(images)
    _write_forecast(forecast, result, out)
    _write_maps(est, forecast, images, target, out, result.files)
    result.timings["total"] = time.perf_counter() - started
    echo("\nwritten:")
    for key, path in result.files.items():
        echo(f"  {key:<16} {path}")
    echo(
        f"\ndone in {result.timings['total']:.0f} s; open forecast.tif or forecast.gpkg in QGIS "
        "(Layer ▸ Add Layer ▸ Add Raster/Vector Layer)"
    )
    return result


def _sample_folder(sample: str | Path | None, out: Path, progress: bool) -> Path:
    """The sample folder (``sample`` or the shipped / simulated one), refused without images/ or density/."""
    folder = Path(sample) if sample else find_sample(out / ".cache", progress=progress)
    for part in ("images", "density"):
        if not (folder / part).is_dir():
            raise InputFileError(
                f"{folder} has no {part}/ folder: expected the output of `trafficrnn simulate`"
            )
    return folder


def _read_sample(folder: Path, echo):
    """Read the sample's images, density, tile size and vehicle points (or None), echoing a line on them."""
    from trafficrnn.io import read_stack, read_vectors

    images = read_stack(folder / "images", allow_gaps=True)
    target = read_stack(folder / "density", allow_gaps=True)
    tile = images.sizes["y"] // target.sizes["y"]
    echo(
        f"sample     {folder}  ({images.sizes['time']} frames of {images.sizes['y']}×{images.sizes['x']} px, "
        f"grid {target.sizes['y']}×{target.sizes['x']} cells of {tile} px, cadence {images.attrs['cadence']})"
    )
    # with the vehicle points, each model's tile encoder first learns to count them (point supervision)
    points = (
        read_vectors(folder / "vehicles.gpkg") if (folder / "vehicles.gpkg").is_file() else None
    )
    return images, target, tile, points


def _demo_settings(
    images, tile: int, max_minutes: float, max_epochs: int, seed: int, echo
) -> tuple[dict, dict]:
    """The models to start from and the shared training settings, with a line saying where training starts."""
    # each model starts from its packaged pretrained weights where they fit, and is fine-tuned here
    init, where = starting_points(images, tile)
    echo(f"start      {where}")
    if init:
        settings = next(iter(init.values())).get_params()  # the fine-tuning settings
        for key in ("model", "progress"):
            settings.pop(key)
    else:
        settings = {**SCRATCH, "tile_size": tile}
    settings = grouped(
        settings,
        {"max_time": max_minutes, "seed": seed, "trainer_kwargs": {"max_epochs": max_epochs}},
    )
    return init, settings


def _compare_models(images, target, points, init, settings, progress: bool, echo) -> DemoResult:
    """Train and score the deep models beside the baselines: the result with their training times."""
    from trafficrnn.compare import compare

    comparison = compare(
        images,
        target,
        models=MODEL_NAMES,
        progress=progress,
        echo=echo,
        vehicles=points,
        init=init,
        **settings,
    )
    result = DemoResult(table=comparison.table, models=comparison.models)
    for name in comparison.models:
        result.timings[f"train_{name}"] = float(comparison.summary.loc[name, "train_seconds"])
    return result


def _report(table: pd.DataFrame, echo) -> str:
    """Echo the RMSE per lead, the better deep model and the verdict on the baselines; return the better model."""
    wide = comparison_table(table)
    echo("\nRMSE per lead on the test split (vehicles per cell; lower is better)")
    echo(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    best, runner_up = sorted(MODEL_NAMES, key=lambda m: wide.loc["mean", m])[:2]
    echo(
        f"\nbetter deep model here: {best} (mean RMSE {wide.loc['mean', best]:.3f} vs "
        f"{wide.loc['mean', runner_up]:.3f})"
    )
    for line in verdict(wide, MODEL_NAMES):
        echo(line)
    return best


def _write_forecast(forecast, result: DemoResult, out: Path) -> None:
    """Write the forecast (COG, NetCDF, GeoPackage) and the comparison table into ``out``."""
    from trafficrnn.io import to_geopackage, to_geotiff, to_netcdf

    files = result.files
    files["forecast_cog"] = to_geotiff(forecast, out / "forecast.tif", overwrite=True)
    files["forecast_netcdf"] = to_netcdf(forecast, out / "forecast.nc", overwrite=True)
    files["forecast_cells"] = to_geopackage(forecast, out / "forecast.gpkg", overwrite=True)
    files["comparison_csv"] = out / "comparison.csv"
    result.table.to_csv(files["comparison_csv"])


def _write_maps(est, forecast, images, target, out: Path, files: dict[str, Path]) -> None:
    """Draw the last observed frame, the forecast per lead, the error of a past forecast and an animation."""
    import matplotlib.pyplot as plt

    from trafficrnn.plot import animate, plot_compare, plot_leads, plot_map

    # maps: the last observed frame, the forecast per lead, and the error of a past forecast
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    plot_map(
        images.isel(time=-1),
        ax=axes[0],
        title=f"last observed frame {pd.Timestamp(images.time.values[-1]):%Y-%m-%d %H:%M}",
    )
    plot_map(target.isel(time=-1), ax=axes[1], title="vehicles per cell (ground truth)")
    files["last_frame_png"] = _save(fig, out / "last_observed.png")
    files["forecast_png"] = _save(plot_leads(forecast), out / "forecast_leads.png")
    past = est.predict(images.isel(time=slice(0, images.sizes["time"] - est.horizon)))
    files["error_png"] = _save(plot_compare(past, target, lead=est.horizon), out / "error_map.png")
    files["animation_gif"] = animate(forecast, out / "forecast.gif", overwrite=True)


def verdict(wide: pd.DataFrame, models) -> list[str]:
    """One line per deep model: does it beat every baseline at every lead of ``wide`` (leads as
    rows plus ``mean``, models and baselines as columns, lower is better)? Where it does not, the
    leads and the baseline that beat it are named."""
    leads = [i for i in wide.index if i != "mean"]
    baselines = [c for c in wide.columns if c not in models]
    lines = []
    for model in models:
        lost = []
        for lead in leads:
            rival = min(baselines, key=lambda b: wide.loc[lead, b])
            if not wide.loc[lead, model] < wide.loc[lead, rival]:
                lost.append(
                    f"lead {lead}: {rival} {wide.loc[lead, rival]:.3f} vs {wide.loc[lead, model]:.3f}"
                )
        lines.append(
            f"{model}: beats every baseline at every lead"
            if not lost
            else f"{model}: does NOT beat every baseline on this run ({'; '.join(lost)})"
        )
    return lines


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from trafficrnn.io.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
