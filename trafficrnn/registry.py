"""The one registry of every pluggable family: models, cells, baselines, metrics, datasets, writers.

A :class:`Registry` maps names to objects (a class, a function) and per-entry attributes that
callers read instead of testing names (a model's ``cell``, a writer's ``label``). An entry may be
registered lazily as ``"module:attribute"``, imported on first :meth:`Registry.get`, so that the
names are known without importing torch or rasterio (``trafficrnn --help`` stays light). An
unknown name raises the family's error (an :class:`~trafficrnn.errors.UnknownNameError`, a
``ConfigError``) listing the valid names, with a did-you-mean where one is close::

    >>> from trafficrnn.registry import Registry
    >>> SIDES = Registry("shape", {"square": 4, "hexagon": 6})
    >>> SIDES.get("Square"), SIDES.names()
    (4, ['hexagon', 'square'])
    >>> SIDES.get("sqare")
    Traceback (most recent call last):
    ...
    trafficrnn.errors.UnknownNameError: unknown shape 'sqare': expected one of ['hexagon', 'square']; did you mean 'square'?

Imports only the standard library and :mod:`trafficrnn.errors`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

from trafficrnn.errors import UnknownNameError

__all__ = ["Registry", "lookup"]

T = TypeVar("T")


def _lower(name: Any) -> str:
    return str(name).lower()


class Registry(Generic[T]):
    """Names → objects of one family, looked up case-insensitively (or as ``normalize`` says).

    Parameters
    ----------
    kind : str
        What an entry is, for the messages: ``"model"`` gives "unknown model 'unet': expected one of ...".
    entries : mapping, optional
        Initial ``name -> object`` entries (no attributes; use :meth:`register` for those).
    normalize : callable, default ``str(name).lower()``
        Maps a name as given to its registered key (e.g. ``_`` → ``-`` for datasets).
    error : type, default :class:`~trafficrnn.errors.UnknownNameError`
        Raised for an unknown name (a subclass of it, e.g. ``UnknownFormatError`` for writers).
    defaults : mapping, optional
        Attributes every entry has unless :meth:`register` sets them (see :meth:`info`).

    Iterating gives the names in registration order; ``name in registry`` accepts any spelling
    that ``normalize`` maps to a name; ``registry[name]`` is :meth:`get`.
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T] | None = None,
        *,
        normalize: Callable[[Any], str] = _lower,
        error: type[UnknownNameError] = UnknownNameError,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.normalize = normalize
        self.error = error
        self.defaults = dict(defaults or {})
        self._objects: dict[
            str, Any
        ] = {}  # name -> object, or "module:attribute" until first get()
        self._lazy: set[str] = set()
        self._attrs: dict[str, dict[str, Any]] = {}
        for name, obj in (entries or {}).items():
            self.register(name, obj)

    # -- registering -------------------------------------------------------------------------------

    def register(self, name: str, obj: Any = None, /, **attrs: Any) -> Any:
        """Register ``obj`` as ``name`` with attributes ``attrs``; without ``obj``, a decorator.

        Raises
        ------
        ValueError
            If ``name`` is registered already.
        """
        if obj is None:

            def decorate(target: Any) -> Any:
                self.register(name, target, **attrs)
                return target

            return decorate
        key = self._new_key(name)
        self._objects[key] = obj
        self._attrs[key] = {**self.defaults, **attrs}
        return obj

    def register_lazy(self, name: str, target: str, /, **attrs: Any) -> None:
        """Register ``"package.module:attribute"`` as ``name``, imported on its first :meth:`get`."""
        module, sep, attribute = target.partition(":")
        if not sep or not module or not attribute:
            raise ValueError(
                f"lazy target {target!r} is invalid: expected 'package.module:attribute'"
            )
        key = self._new_key(name)
        self._objects[key] = target
        self._lazy.add(key)
        self._attrs[key] = {**self.defaults, **attrs}

    def _new_key(self, name: str) -> str:
        key = self.normalize(name)
        if key in self._objects:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        return key

    # -- looking up --------------------------------------------------------------------------------

    def key(self, name: Any) -> str:
        """The registered name that ``name`` stands for.

        Raises
        ------
        UnknownNameError
            (``self.error``) If ``name`` is not registered; the message lists the valid names.
        """
        key = self.normalize(name)
        if key not in self._objects:
            raise self.unknown(name)
        return key

    def get(self, name: Any) -> T:
        """The object registered as ``name`` (imported now if it was registered lazily).

        Raises
        ------
        UnknownNameError
            (``self.error``) If ``name`` is not registered; the message lists the valid names.
        """
        key = self.key(name)
        if key in self._lazy:
            module, _, attribute = self._objects[key].partition(":")
            self._objects[key] = getattr(importlib.import_module(module), attribute)
            self._lazy.discard(key)
        return self._objects[key]

    def info(self, name: Any) -> SimpleNamespace:
        """The attributes of the entry ``name`` (the registry's ``defaults`` updated by those given to
        :meth:`register`) and its ``name``; imports nothing.

        Raises
        ------
        UnknownNameError
            (``self.error``) If ``name`` is not registered.
        """
        key = self.key(name)
        return SimpleNamespace(name=key, **self._attrs[key])

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._objects)

    def unknown(self, name: Any) -> UnknownNameError:
        """The error for an unknown ``name``: the valid names and the closest one, if any."""
        names = self.names()
        close = difflib.get_close_matches(self.normalize(name), names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return self.error(f"unknown {self.kind} {name!r}: expected one of {names}{hint}")

    # -- a read-only mapping -----------------------------------------------------------------------

    def __getitem__(self, name: Any) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        try:
            return self.normalize(name) in self._objects
        except (TypeError, AttributeError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def lookup(registry: Mapping[str, Any] | Registry, name: str, kind: str) -> Any:
    """The entry of ``registry`` registered as ``name`` (case-insensitive); a plain mapping is read
    as a :class:`Registry` of ``kind``.

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (a ``ConfigError``, hence a ``ValueError``); the message lists
        the valid names.
    """
    return (registry if isinstance(registry, Registry) else Registry(kind, registry)).get(name)
