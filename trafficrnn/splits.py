"""A dataset's published train / validation / test split, carried in ``attrs["split"]``, and which split
``fit``, ``evaluate`` and ``compare`` use.

A dataset with an agreed split (the NYC bike flows: validation from 2016-09-28, test from 2016-10-12)
records it as ``attrs["split"] = "val 2016-09-28T00:00:00; test 2016-10-12T00:00:00"``: the first
time of the validation and of the test part (naive times, as the stack's), a plain string that
survives NetCDF attributes and GeoTIFF tags. ``trafficrnn datasets export`` writes it as the
``split`` tag of every file and :func:`~trafficrnn.io.read_stack` restores it when every file carries
the same one. The longer form ``"train 2016-08-01..2016-09-27; val 2016-09-28..2016-10-11; test
2016-10-12..2016-10-29"`` (first and last day of each part) is read too; a mapping
``{"val": ..., "test": ...}`` as well.

The split describes the dataset, not the stack: a stack that holds only some of the days keeps it,
and :func:`choose_split` uses the parts that the stack reaches:

* ``val`` / ``test`` given (not ``None``): that boundary, a fraction or a first time, whatever the
  data carries (``val=0`` keeps the published test part and trains on the validation days too).
* left ``None`` and the data carries a split: its boundary. A part that lies after the end of the
  stack is empty (a stack of the train and validation days has no test part); a stack that holds
  no frame of the train part (only validation and / or test days, e.g. ``datasets export nyc-bike
  DIR --split test``) is refused by ``fit`` with :class:`~trafficrnn.errors.SplitError`, since
  training on it would learn from the held-out days (unless both ``val`` and ``test`` are given).
  ``evaluate`` scores a part the stack holds even without the parts before it.
* left ``None`` otherwise: the fraction :data:`DEFAULT_FRACTION` (the test part last).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trafficrnn.errors import ConfigError, SplitError

log = logging.getLogger(__name__)

__all__ = [
    "SPLIT_ATTR",
    "DEFAULT_FRACTION",
    "PublishedSplit",
    "SplitChoice",
    "parse_split",
    "published_split",
    "choose_split",
    "fit_split",
    "evaluation_split",
]

#: the attribute (and GeoTIFF tag) that carries a dataset's published split
SPLIT_ATTR = "split"
#: ``val`` and ``test`` left ``None`` on data without a published split: the last 15 % of the series is
#: the test part, the 15 % before it the validation part
DEFAULT_FRACTION = 0.15
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class PublishedSplit:
    """First times of the validation and the test part; the train part is everything before ``val``."""

    val: pd.Timestamp
    test: pd.Timestamp

    @property
    def text(self) -> str:
        """The canonical ``attrs["split"]`` form: ``"val 2016-09-28T00:00:00; test 2016-10-12T00:00:00"``."""
        return f"val {self.val.isoformat()}; test {self.test.isoformat()}"

    def describe(self) -> str:
        return f"val from {_short(self.val)}, test from {_short(self.test)}"

    def parts_in(self, times: pd.DatetimeIndex) -> list[str]:
        """The parts that hold at least one of ``times``, in order."""
        if len(times) == 0:
            return []
        first, last = times.min(), times.max()
        found = ["train"] if first < self.val else []
        if bool(((times >= self.val) & (times < self.test)).any()):
            found.append("val")
        if last >= self.test:
            found.append("test")
        return found


def _short(t: pd.Timestamp) -> str:
    return str(t)[:16] if (t.second or t.microsecond) == 0 else str(t)


def parse_split(value: Any) -> PublishedSplit | None:
    """The split of an ``attrs["split"]`` value, or ``None`` where it is not one (absent, or unreadable)."""
    if value is None:
        return None
    firsts: dict[str, Any] = {}
    if isinstance(value, Mapping):
        firsts = {str(k): v for k, v in value.items()}
    elif isinstance(value, str):
        for item in value.split(";"):
            name, _, rest = item.strip().partition(" ")
            if name in PARTS and rest.strip():
                firsts[name] = rest.strip().split("..")[0].strip()
    try:
        val, test = pd.Timestamp(firsts["val"]), pd.Timestamp(firsts["test"])
    except (KeyError, TypeError, ValueError):
        return None
    if (
        pd.isna(val)
        or pd.isna(test)
        or val.tzinfo is not None
        or test.tzinfo is not None
        or val > test
    ):
        return None
    return PublishedSplit(val, test)


def published_split(*arrays: Any) -> PublishedSplit | None:
    """The published split carried by the first of ``arrays`` (DataArrays, or attrs mappings) that has one."""
    for array in arrays:
        attrs = array if isinstance(array, Mapping) else getattr(array, "attrs", None)
        if not attrs or attrs.get(SPLIT_ATTR) is None:
            continue
        found = parse_split(attrs[SPLIT_ATTR])
        if found is None:
            log.warning(
                "attrs[%r] = %r is not a published split ('val TIME; test TIME'): ignored",
                SPLIT_ATTR,
                attrs[SPLIT_ATTR],
            )
            continue
        return found
    return None


@dataclass(frozen=True)
class SplitChoice:
    """The split used on one stack: what :func:`~trafficrnn.timeaxis.chronological_split` gets, and why.

    ``val`` / ``test``: the boundaries for ``fit`` (a published part that the stack does not
    hold is a fraction of 0: empty, not asked for); ``given``: the names the user set;
    ``published``: the data's split where a boundary comes from it, and ``parts``: the parts of
    it that the stack holds.
    """

    val: Any
    test: Any
    given: tuple[str, ...] = ()
    published: PublishedSplit | None = None
    parts: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """``"published"`` (a boundary from the data's split), ``"given"`` or ``"default"`` (the fractions)."""
        return "published" if self.published is not None else ("given" if self.given else "default")

    def boundary(self, name: str) -> Any:
        """The given value of ``name``, else the published first time (for evaluate), else the fraction."""
        if name in self.given or self.published is None:
            return getattr(self, name)
        return getattr(self.published, name)

    def describe(self) -> str:
        own = {"val": self.val, "test": self.test}
        if self.published is None:
            if not self.given:
                return f"the fractions val={self.val:g}, test={self.test:g} (the data records no published split)"
            return ", ".join(
                f"{n}={own[n]!r}" + (" as given" if n in self.given else " (default)") for n in own
            )
        held = "" if self.parts == PARTS else f"; this stack holds only its {_parts(self.parts)}"
        if not self.given:
            return f"the data's published split ({self.published.describe()}{held})"
        bits = [
            f"{n}={own[n]!r} as given"
            if n in self.given
            else f"{n} from {_short(getattr(self.published, n))}"
            for n in own
        ]
        return f"{', '.join(bits)} (the data's published split{held})"


def _and(names) -> str:
    names = list(names)
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _parts(names) -> str:
    """``"train and val parts"``, ``"test part"``, ``"no part"``."""
    return f"{_and(names) or 'no'} part{'s' if len(names) > 1 else ''}"


def choose_split(val: Any, test: Any, times: Any, *arrays: Any) -> SplitChoice:
    """Which split applies to a stack of ``times`` whose data (``arrays``: DataArrays or attrs) may carry one.

    ``val`` / ``test``: the estimator's parameters; each one left ``None`` is the data's published
    boundary where it carries a split (for a part after the end of the stack: a fraction of 0, an
    empty part), else :data:`DEFAULT_FRACTION`.
    """
    given = tuple(name for name, value in (("val", val), ("test", test)) if value is not None)
    found = published_split(*arrays) if len(given) < 2 else None
    if found is None:
        return SplitChoice(
            DEFAULT_FRACTION if val is None else val,
            DEFAULT_FRACTION if test is None else test,
            given,
        )
    idx = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    parts = tuple(found.parts_in(idx))
    val_b = val if val is not None else (found.val if "val" in parts else 0.0)
    test_b = test if test is not None else (found.test if "test" in parts else 0.0)
    return SplitChoice(val_b, test_b, given, found, parts)


def fit_split(
    est, times: pd.DatetimeIndex, *arrays: Any, where: str = "the stack"
) -> tuple[dict[str, slice], SplitChoice]:
    """``fit``'s train / val / test index ranges and the choice behind them; logs which split is used.

    Raises
    ------
    SplitError
        The data's published split applies and the stack holds none of its training frames.
    ConfigError
        As :func:`~trafficrnn.timeaxis.chronological_split`.
    """
    from trafficrnn.timeaxis import chronological_split

    choice = choose_split(est.val, est.test, times, *arrays)
    if choice.published is not None and "train" not in choice.parts:
        raise SplitError(held_out_message(choice, times, where))
    log.info("split: %s", choice.describe())
    split = chronological_split(
        times, val=choice.val, test=choice.test, input_steps=est.input_steps, horizon=est.horizon
    )
    return split, choice


def held_out_message(choice: SplitChoice, times: Any, where: str) -> str:
    """Why ``fit`` refuses a stack of held-out days only, and what to train on instead."""
    idx = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    span = f"{_short(idx.min())} → {_short(idx.max())}" if len(idx) else "no frame"
    found = choice.published
    return (
        f"{where} ({span}) holds only the {_parts(choice.parts)} "
        f"of its dataset's published split ({found.describe()}), no training day: training on it would learn "
        f"from the held-out days. Train on the whole dataset (CLI: `trafficrnn datasets export NAME DIR` "
        f"without --split; Python: the loader without split=), or on its train and val parts (the frames "
        f"before {_short(found.test)}), and keep the test part for evaluate; to split this stack anyway, pass "
        "both val= and test= (CLI: --val and --test)"
    )


def evaluation_split(
    est, times: pd.DatetimeIndex, part: str, *arrays: Any
) -> tuple[dict[str, slice], SplitChoice]:
    """The index ranges ``evaluate`` scores ``part`` of, and the choice behind them.

    With the data's published split, parts the stack does not hold are empty rather than refused (a
    stack of the test days only is scored on all of them, its first frames serving as inputs only).

    Raises
    ------
    ConfigError
        The published split applies and the stack holds no frame of ``part``; as
        :func:`~trafficrnn.timeaxis.chronological_split` otherwise.
    """
    from trafficrnn.timeaxis import chronological_split

    choice = choose_split(est.val, est.test, times, *arrays)
    if choice.published is None:
        return chronological_split(
            times,
            val=choice.val,
            test=choice.test,
            input_steps=est.input_steps,
            horizon=est.horizon,
        ), choice
    from_published = part == "train" or part not in choice.given
    if from_published and part not in choice.parts:
        raise ConfigError(
            f"the stack holds no frame of the {part} part of its dataset's published split "
            f"({choice.published.describe()}; the stack holds its {_parts(choice.parts)}"
            f"): pass a stack that covers it, or split=None "
            "(CLI: --split all) to score every window of this one"
        )
    log.info("split: %s", choice.describe())
    return chronological_split(
        times,
        val=choice.boundary("val"),
        test=choice.boundary("test"),
        input_steps=est.input_steps,
        horizon=est.horizon,
        check_lengths=False,
    ), choice
