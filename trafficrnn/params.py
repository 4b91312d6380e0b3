"""The parameters of :class:`~trafficrnn.estimator.TrafficForecaster` checked one by one, without torch.

``TrafficForecaster(...)`` and ``set_params`` run :func:`check_params` so that a misspelt model
name or precision is refused at once, not after the data are read; ``fit`` then checks what
depends on several parameters together (``linear_lags`` and ``bptt_steps`` with ``input_steps``,
``val`` + ``test`` < 1) and on the data (the ``context`` periods against the cadence).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trafficrnn.errors import ConfigError
from trafficrnn.models import (
    MODELS,
)  # the registry alone: no torch, so that parsing the command line stays light

#: the names of the model registry (:func:`trafficrnn.models.list_models`), in registration order
MODEL_NAMES = tuple(MODELS)
#: the defaults shared by :class:`~trafficrnn.estimator.TrafficForecaster` and the CLI's ``train`` /
#: ``compare`` options (written here, without torch, so that parsing the command line stays light;
#: a test keeps the estimator's signature and the CLI's options equal to them). ``max_time`` is a
#: laptop's budget in minutes: all of ``fit`` ends within it (``None`` / ``--max-minutes 0``: no limit).
DEFAULTS: dict[str, Any] = {
    "model": "convgru",
    "input_steps": 8,
    "horizon": 6,
    "max_time": 5.0,
    "max_epochs": 30,
    "batch_size": 16,
    "hidden": (32, 32),
    "seed": 0,
    "precision": "auto",
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "linear_lags": 0,
}
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


def _non_negative(name: str, value: Any, params: dict) -> None:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is invalid: expected a number >= 0")


def _max_time(name: str, value: Any, params: dict) -> None:
    if value is not None and (not _is_number(value) or not math.isfinite(value) or value <= 0):
        raise ConfigError(
            f"max_time={value!r} is invalid: expected minutes > 0, or None for no time limit"
        )


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
    "max_time": _max_time,
    "patience": _patience,
}


def check_params(params: dict[str, Any], current: dict[str, Any] | None = None) -> None:
    """Check each value of ``params`` (TrafficForecaster parameters) on its own.

    Every value a parameter may take passes (so ``sklearn.base.clone`` and ``set_params`` work);
    what depends on several parameters, or on the data, is checked by ``fit``.

    Parameters
    ----------
    params : dict
        Parameter name -> value; names without a check here are left to ``fit``.
    current : dict, optional
        The estimator's other parameters (``set_params``), quoted in messages such as
        ``bptt_steps=0 is invalid: expected an integer from 1 to input_steps=6``.

    Raises
    ------
    ConfigError
        Naming the parameter, the value found and what is expected (for ``model``: the valid names).
    """
    every = {**(current or {}), **params}
    for name, value in params.items():
        check = CHECKS.get(name)
        if check is not None:
            check(name, value, every)
