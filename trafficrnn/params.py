"""The parameters of :class:`~trafficrnn.estimator.TrafficForecaster` checked one by one, without torch.

``TrafficForecaster(...)`` and ``set_params`` run :func:`check_params` so that a misspelt model
name or precision is refused at once, not after the data are read; ``fit`` then checks what
depends on several parameters together (``linear_lags`` and ``bptt_steps`` with ``input_steps``,
``val`` + ``test`` < 1) and on the data (the ``context`` periods against the cadence).

The estimator takes the options most users set as parameters of their own (:data:`DEFAULTS`) and the
others in two dicts: ``model_kwargs`` (the architecture, :data:`MODEL_DEFAULTS`) and
``trainer_kwargs`` (training and hardware, :data:`TRAINER_DEFAULTS`); each key of a group is checked
as the parameter it was before.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trafficrnn.errors import ConfigError
from trafficrnn.models import (
    MODELS,
)  # the registry alone: no torch, so that parsing the command line stays light

#: the names of the model registry (:func:`trafficrnn.models.list_models`), in registration order
MODEL_NAMES = tuple(MODELS)
#: the parameters of :class:`~trafficrnn.estimator.TrafficForecaster` itself (what most users set)
#: with their defaults, shared with the CLI's ``train`` / ``compare`` options (written here, without
#: torch, so that parsing the command line stays light; a test keeps the estimator's signature and
#: the CLI's options equal to them). ``max_time`` is a laptop's budget in minutes: all of ``fit``
#: ends within it (``None`` / ``--max-minutes 0``: no limit).
DEFAULTS: dict[str, Any] = {
    "model": "convgru",
    "input_steps": 8,
    "horizon": 6,
    "tile_size": None,
    "max_time": 5.0,
    "val": None,
    "test": None,
    "timezone": None,
    "context": (),
    "seed": 0,
    "progress": True,
}
#: the architecture options (``model_kwargs``) and their defaults: the network and what it reads
MODEL_DEFAULTS: dict[str, Any] = {
    "hidden": (32, 32),
    "kernel_size": 3,
    "encoder_width": 16,
    "encoder_depth": 1,
    "residual": True,
    "feedback": True,
    "time_features": True,
    "cell_mean": False,
    "context_inputs": True,
    "count_head": True,
    "target_inputs": False,
    "linear_lags": 0,
    "counting": True,
    "log1p": False,
    "quantiles": None,
}
#: the training and hardware options (``trainer_kwargs``) and their defaults
TRAINER_DEFAULTS: dict[str, Any] = {
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "batch_size": 16,
    "max_epochs": 30,
    "patience": 6,
    "stride": 1,
    "nowcast_weight": 0.5,
    "count_share": None,
    "crop": None,
    "bptt_steps": None,
    "precision": "auto",
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
}
#: group parameter -> the options it holds, with their defaults
GROUPS: dict[str, dict[str, Any]] = {
    "model_kwargs": MODEL_DEFAULTS,
    "trainer_kwargs": TRAINER_DEFAULTS,
}
#: option name -> the group parameter that holds it (``"lr"`` -> ``"trainer_kwargs"``)
GROUP_OF: dict[str, str] = {name: group for group, names in GROUPS.items() for name in names}
#: every option of the estimator, top level and grouped alike, with its default
ALL_DEFAULTS: dict[str, Any] = {**DEFAULTS, **MODEL_DEFAULTS, **TRAINER_DEFAULTS}
#: ``precision`` values: "auto" (see :func:`trafficrnn.training.resolve_precision`) and Lightning's own
PRECISIONS = (
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "32",
    "16",
    "bf16",
    "64",
    32,
    16,
    64,
    "transformer-engine",
    "transformer-engine-float16",
)
_BOOLS = (
    "feedback",
    "residual",
    "time_features",
    "cell_mean",
    "context_inputs",
    "count_head",
    "target_inputs",
    "counting",
    "log1p",
    "progress",
)
#: a check: (parameter name, its value, all the parameters for the message) -> None, or raise ConfigError
Check = Callable[[str, Any, dict], None]


def _is_bool(value: Any) -> bool:
    np = sys.modules.get(
        "numpy"
    )  # no numpy value without numpy imported: the CLI's --help stays without it
    return isinstance(value, bool) or (np is not None and isinstance(value, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not _is_bool(value)  # numpy integers are Integral


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not _is_bool(value)


def _positive_int(name: str, value: Any, params: dict) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid: expected a positive integer")


def _model(name: str, value: Any, params: dict) -> None:
    if not isinstance(value, str) or value.lower() not in MODEL_NAMES:
        raise ConfigError(
            f"model={value!r} is not a model name: expected one of {', '.join(MODEL_NAMES)} "
            f"(case-insensitive), e.g. TrafficForecaster({MODEL_NAMES[0]!r})"
        )


def _kernel_size(name: str, value: Any, params: dict) -> None:
    _positive_int(name, value, params)
    if value % 2 == 0:
        raise ConfigError(f"kernel_size={value} is invalid: expected an odd integer such as 3")


def _optional_positive_int(what: str) -> Check:
    def check(name: str, value: Any, params: dict) -> None:
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError(
                f"{name}={value!r} is invalid: expected a positive integer, or None {what}"
            )

    return check


def _crop(name: str, value: Any, params: dict) -> None:
    sizes = value if isinstance(value, (tuple, list)) else (value,)
    if value is not None and (
        len(sizes) not in (1, 2) or not all(_is_int(v) and v >= 1 for v in sizes)
    ):
        raise ConfigError(
            f"crop={value!r} is invalid: expected a crop size in cells (an integer, or (rows, cols)), "
            "or None for whole grids"
        )


def _hidden(name: str, value: Any, params: dict) -> None:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) > 0
        and all(_is_int(h) and h >= 1 for h in value)
    )
    if not ok:
        raise ConfigError(
            f"hidden={value!r} is invalid: expected a list of positive channel counts, e.g. (32, 32)"
        )


def _split(name: str, value: Any, params: dict) -> None:
    if value is None:  # the data's published split, else 0.15 (trafficrnn.splits)
        return
    if _is_number(value):
        if not 0 <= value < 1:
            raise ConfigError(
                f"{name}={value!r} is invalid: expected a fraction in [0, 1), or the first time of "
                f"the {name} part such as '2016-10-12'"
            )
        return
    import pandas as pd

    try:
        pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={value!r} is invalid: expected a fraction in [0, 1), or the first time of the "
            f"{name} part such as '2016-10-12'"
        ) from None


def _bool(name: str, value: Any, params: dict) -> None:
    if not _is_bool(value):
        raise ConfigError(f"{name}={value!r} is invalid: expected True or False")


def _linear_lags(name: str, value: Any, params: dict) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(
            f"linear_lags={value!r} is invalid: expected an integer from 0 (no linear term) to "
            f"input_steps={params.get('input_steps')}, e.g. 2"
        )


def _bptt_steps(name: str, value: Any, params: dict) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise ConfigError(
            f"bptt_steps={value!r} is invalid: expected an integer from 1 to "
            f"input_steps={params.get('input_steps')} (the frames backpropagated through), or None "
            "for all"
        )


def _context(name: str, value: Any, params: dict) -> None:
    if not isinstance(value, (tuple, list)):
        raise ConfigError(
            f"context={value!r} is invalid: expected a tuple such as ('ha', '1D', '7D')"
        )
    import pandas as pd

    for entry in value:
        if str(entry).strip().lower() == "ha":
            continue
        try:
            pd.Timedelta(str(entry).strip())
        except ValueError:
            raise ConfigError(
                f"context entry {entry!r} is invalid: expected 'ha' or a duration such as '1D' or "
                "'7D'"
            ) from None


def known_zone(zone: Any) -> bool:
    """Whether ``zone`` names an IANA time zone (``"Europe/Vienna"``, ``"UTC"``)."""
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return False
    return True


def check_zone(zone: Any, name: str = "timezone") -> str:
    """``zone`` as a string where it names an IANA time zone; else a ConfigError naming ``name``."""
    if not known_zone(zone):
        raise ConfigError(
            f"{name}={zone!r} is not a known IANA zone: expected a name such as "
            "'America/New_York' or 'Europe/Berlin', or None for the UTC clock"
        )
    return str(zone)


def _timezone(name: str, value: Any, params: dict) -> None:
    if value is not None:
        check_zone(value)


def _precision(name: str, value: Any, params: dict) -> None:
    if isinstance(value, bool) or value not in PRECISIONS:
        raise ConfigError(
            f"precision={value!r} is invalid: expected 'auto', '32-true', 'bf16-mixed' or '16-mixed' "
            "(or another of Lightning's: 'bf16-true', '16-true', '64-true', ...)"
        )


def _positive_number(name: str, value: Any, params: dict) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} is invalid: expected a number > 0")


def _share(name: str, value: Any, params: dict) -> None:
    """``None`` (the default share), or a share of the time budget in (0, 1)."""
    if value is None:
        return
    if not _is_number(value) or not 0 < value < 1:  # NaN and inf fail the bounds
        raise ConfigError(
            f"{name}={value!r} is invalid: expected a share of max_time in (0, 1), or None for "
            "the default (half from scratch, three quarters from the packaged count front)"
        )


def _non_negative(name: str, value: Any, params: dict) -> None:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is invalid: expected a number >= 0")


def _max_time(name: str, value: Any, params: dict) -> None:
    if value is not None and (not _is_number(value) or not math.isfinite(value) or value <= 0):
        raise ConfigError(
            f"max_time={value!r} is invalid: expected minutes > 0, or None for no time limit"
        )


def _quantiles(name: str, value: Any, params: dict) -> None:
    """``None``, or probability levels in (0, 1), sorted and unique (those of a quantile head)."""
    if value is None:
        return
    from trafficrnn.estimation.calibration import check_quantiles  # numpy: only for a value

    try:
        check_quantiles(value)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (the levels of the quantile head; None for no head)") from None


def _patience(name: str, value: Any, params: dict) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(
            f"patience={value!r} is invalid: expected an integer >= 0 (epochs without improvement "
            "before stopping; 0: no early stopping)"
        )


#: parameter -> check of its value on its own (parameters not listed: checked where they are used)
CHECKS: dict[str, Check] = {
    "model": _model,
    **dict.fromkeys(
        ("input_steps", "horizon", "batch_size", "max_epochs", "stride", "num_nodes"), _positive_int
    ),
    "kernel_size": _kernel_size,
    "tile_size": _optional_positive_int("for density grids"),
    "crop": _crop,
    "bptt_steps": _bptt_steps,
    "hidden": _hidden,
    "val": _split,
    "test": _split,
    **dict.fromkeys(_BOOLS, _bool),
    "linear_lags": _linear_lags,
    "context": _context,
    "timezone": _timezone,
    "precision": _precision,
    "lr": _positive_number,
    "weight_decay": _non_negative,
    "nowcast_weight": _non_negative,
    "count_share": _share,
    "max_time": _max_time,
    "patience": _patience,
    "quantiles": _quantiles,
}


def misplaced(name: str, value: Any) -> ConfigError:
    """The error for the option ``name`` of a group (``lr``) given as a parameter of its own: it names
    the group and shows the fix, e.g. ``lr is a trainer_kwargs option: pass trainer_kwargs={'lr': 0.001}``."""
    group = GROUP_OF[name]
    return ConfigError(
        f"{name} is a {group} option, not a TrafficForecaster parameter: pass "
        f"{group}={{{name!r}: {value!r}}}"
    )


def _check_group(group: str, options: Any, every: dict[str, Any]) -> None:
    """Check the dict of the group parameter ``group`` (None: the defaults): its keys, then each value."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"{group}={options!r} is invalid: expected a dict of options such as "
            f"{group}={{{next(iter(GROUPS[group]))!r}: {next(iter(GROUPS[group].values()))!r}}}, "
            "or None for the defaults"
        )
    for key in options:
        if key in GROUPS[group]:
            continue
        if key in GROUP_OF:
            other = GROUP_OF[key]
            raise ConfigError(
                f"{key} is a {other} option, not a {group} one: pass "
                f"{other}={{{key!r}: {options[key]!r}}}"
            )
        if key in DEFAULTS:
            raise ConfigError(
                f"{key} is a TrafficForecaster parameter, not a {group} option: pass "
                f"{key}={options[key]!r}"
            )
        raise ConfigError(
            f"unknown {group} key {key!r}: expected one of {', '.join(GROUPS[group])}"
        )
    for key, value in options.items():
        check = CHECKS.get(key)
        if check is None:
            continue
        try:
            check(key, value, every)
        except ConfigError as exc:
            raise ConfigError(f"{group}: {exc}") from None


def resolve(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every option, flat, from TrafficForecaster parameters (``get_params()``): the top-level ones as
    given, each group's options as its dict gives them, else their defaults (``MODEL_DEFAULTS``,
    ``TRAINER_DEFAULTS``). Top-level parameters missing from ``params`` are left out."""
    flat = {name: value for name, value in params.items() if name not in GROUPS}
    for group, defaults in GROUPS.items():
        given = params.get(group)
        flat.update(defaults)
        flat.update(given if isinstance(given, Mapping) else {})
    return flat


def grouped(*settings: Mapping[str, Any]) -> dict[str, Any]:
    """TrafficForecaster parameters from ``settings`` that may name options flat (``lr=1e-3``), in
    their group (``trainer_kwargs={"lr": 1e-3}``) or both; later ones win, option by option inside a
    group. A group none of them sets is left out (the defaults). Names that are neither parameters
    nor options are kept at the top level, for the estimator to refuse.

    >>> grouped({"horizon": 3, "lr": 1e-3}, {"trainer_kwargs": {"patience": 0}})
    {'horizon': 3, 'trainer_kwargs': {'lr': 0.001, 'patience': 0}}
    """
    out: dict[str, Any] = {}
    for setting in settings:
        for name, value in setting.items():
            if name in GROUPS:
                if value is None and name not in out:
                    out[name] = None
                elif isinstance(value, Mapping):
                    out[name] = {**(out.get(name) or {}), **value}
                else:
                    out[name] = value  # not a dict: refused by the estimator's check
            elif name in GROUP_OF:
                group = GROUP_OF[name]
                current = out.get(group)
                out[group] = {**(current if isinstance(current, Mapping) else {}), name: value}
            else:
                out[name] = value
    return out


def check_params(params: dict[str, Any], current: dict[str, Any] | None = None) -> None:
    """Check each value of ``params`` (TrafficForecaster parameters) on its own.

    Every value a parameter may take passes (so ``sklearn.base.clone`` and ``set_params`` work);
    what depends on several parameters, or on the data, is checked by ``fit``.

    Parameters
    ----------
    params : dict
        Parameter name -> value; names without a check here are left to ``fit``. The group
        parameters (``model_kwargs``, ``trainer_kwargs``: a dict or None) are checked key by key:
        an unknown key, or one of the other group, is refused naming the group it belongs to.
    current : dict, optional
        The estimator's other parameters (``set_params``), quoted in messages such as
        ``bptt_steps=0 is invalid: expected an integer from 1 to input_steps=6``.

    Raises
    ------
    ConfigError
        Naming the parameter, the value found and what is expected (for ``model``: the valid names);
        for an option of a group given flat (``lr=...``), naming its group (:func:`misplaced`).
    """
    every = {**(current or {}), **params}
    for name, value in params.items():
        if name in GROUP_OF:
            raise misplaced(name, value)
    for group in GROUPS:  # the shape of each group first: resolve reads their dicts
        if group in params and params[group] is not None and not isinstance(params[group], Mapping):
            _check_group(group, params[group], every)
    flat = resolve(every)
    for name, value in params.items():
        if name in GROUPS:
            _check_group(name, value, flat)
            continue
        check = CHECKS.get(name)
        if check is not None:
            check(name, value, flat)
