"""The CLI's probabilistic pieces: ``--quantiles`` parsing (``forecast``, ``evaluate``) and the
``trafficrnn calibrate`` command, which calibrates a saved model on held-out frames and saves it
with its calibration."""

from __future__ import annotations

import click

from trafficrnn.cli_options import (
    _check_outputs,
    _data_kwargs,
    _load_model,
    _model_folder,
    _model_run_options,
    _scored_stack,
)

QUANTILES_HELP = (
    "Comma-separated probability levels, e.g. 0.1,0.5,0.9: a quantile forecast of a calibrated "
    "model (see `trafficrnn calibrate`) or of one trained with a quantile head (--set "
    "quantiles=[0.1,0.5,0.9])."
)


def parse_quantiles(text: str | None) -> tuple[float, ...] | None:
    """``"0.1,0.5,0.9"`` -> ``(0.1, 0.5, 0.9)``, checked; None for None.

    Raises
    ------
    ConfigError
        A level that is not a number, outside (0, 1), unsorted or repeated.
    """
    from trafficrnn.errors import ConfigError
    from trafficrnn.estimation.calibration import check_quantiles

    if text is None:
        return None
    levels = []
    for item in text.split(","):
        try:
            levels.append(float(item))
        except ValueError:
            raise ConfigError(
                f"--quantiles {text}: {item.strip()!r} is not a number; expected comma-separated "
                "levels in (0, 1), e.g. --quantiles 0.1,0.5,0.9"
            ) from None
    return check_quantiles(levels)


def parse_frames(text: str | None):
    """``"2016-09-28,2016-10-11T23:30"`` -> the two times; ``None`` -> ``"val"``.

    Raises
    ------
    ConfigError
        Not two comma-separated times.
    """
    from trafficrnn.errors import ConfigError

    if text is None:
        return "val"
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"--frames {text}: expected two comma-separated times FIRST,LAST (valid times of the "
            "calibration windows, before the test part), e.g. --frames 2016-09-28,2016-10-11T23:30"
        )
    return tuple(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--target", default=None, help="Target stack on the model's grid.")
@click.option("--vehicles", default=None, help="Vehicle points, counted per cell and frame.")
@click.option(
    "--frames",
    default=None,
    help="FIRST,LAST: calibrate on the windows whose valid times lie between these times (before "
    "the test part); default: the validation part of STACK.",
)
@click.option(
    "--adaptive",
    default=None,
    type=click.Choice(["spread", "level", "head"]),
    help="Scale the intervals: 'level' by the square root of the forecast (wider where traffic is "
    "heavy); 'spread' (ensembles) by the members' spread (wider where they disagree); 'head' "
    "(a model with a quantile head): shift the head's own quantiles (conformalised quantile "
    "regression).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of the calibrated model (default: MODEL itself, updated in place, atomically); an "
    "existing folder is refused without --overwrite.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@_model_run_options
def calibrate_command(
    model: str,
    stack: str,
    target: str | None,
    vehicles: str | None,
    frames: str | None,
    adaptive: str | None,
    out: str | None,
    overwrite: bool,
    roads: str | None,
    covariates: str | None,
    align: str,
    time_pattern: str | None,
    allow_gaps: bool,
) -> None:
    """Calibrate a saved MODEL (split conformal) on held-out frames of STACK before its test part.

    The calibration is saved with the model; `trafficrnn forecast --quantiles` then uses it.

    \b
    Example:
      trafficrnn calibrate my-model city/density
      trafficrnn forecast my-model city/density --out q.tif --quantiles 0.1,0.5,0.9
    """

    chosen = parse_frames(frames)
    if out is not None:
        _check_outputs([out], overwrite)  # before any reading and calibrating
    folder = _model_folder(model)
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
    )
    est.calibrate(
        images,
        truth,
        frames=chosen,
        align=align,
        adaptive=adaptive,
        **_data_kwargs(static, covariates),
    )
    cal = est.calibration_
    path = est.save(out, overwrite=overwrite) if out else est.save(folder, overwrite=True)
    if cal.scale == "head":
        shifts = "; ".join(
            f"{q:g}: " + ", ".join(f"{v:+.3g}" for v in cal.shifts[i, :, 0])
            for i, q in enumerate(cal.levels)
        )
        click.echo(
            f"calibrated the quantile head of {est.model} on {cal.windows} windows "
            f"({cal.frames[0][:16]} → {cal.frames[1][:16]}); shifts per lead ({cal.bands[0]}) "
            f"by level: {shifts}; saved {path}"
        )
        return
    radius = ", ".join(f"{r:.3g}" for r in cal.radii[:, 0, cal.levels.index(0.8)])
    unit = {"spread": " (× spread + floor)", "level": " (× √(forecast + floor))"}.get(cal.scale, "")
    click.echo(
        f"calibrated {est.model} on {cal.windows} windows ({cal.frames[0][:16]} → "
        f"{cal.frames[1][:16]}); 80 % half-widths per lead ({cal.bands[0]}){unit}: {radius}; "
        f"saved {path}"
    )
