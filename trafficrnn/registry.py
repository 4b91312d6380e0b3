"""The one registry pattern of pluggable families (metrics, baselines, ...): a dict and a case-insensitive lookup."""

from __future__ import annotations

from typing import Any, Mapping


def lookup(registry: Mapping[str, Any], name: str, kind: str) -> Any:
    """The entry of ``registry`` registered as ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    key = str(name).lower()
    if key not in registry:
        raise ValueError(f"unknown {kind} {name!r}: expected one of {sorted(registry)}")
    return registry[key]
