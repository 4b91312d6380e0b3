"""Neural network models: TileEncoder, ConvLSTM/ConvGRU cells and the EncoderForecaster, with a
name registry (``get_model``) whose entries all share the ``EncoderForecaster`` interface.

The registry :data:`MODELS` and :func:`list_models` import no torch (the CLI and ``read_config``
read the names from it); the networks are imported on first use.
"""

from __future__ import annotations

from trafficrnn.errors import ConfigError
from trafficrnn.registry import Registry

#: model name -> the EncoderForecaster it builds; attribute ``cell``: the recurrent cell it sets
MODELS: Registry = Registry("model", defaults={"cell": None})
MODELS.register_lazy("convlstm", "trafficrnn.models.forecaster:EncoderForecaster", cell="lstm")
MODELS.register_lazy("convgru", "trafficrnn.models.forecaster:EncoderForecaster", cell="gru")

_LAZY = {
    **dict.fromkeys(
        ["ConvGRUCell", "ConvLSTMCell", "get_cell", "list_cells"], "trafficrnn.models.cells"
    ),
    **dict.fromkeys(["TileEncoder", "valid_fraction"], "trafficrnn.models.encoder"),
    "EncoderForecaster": "trafficrnn.models.forecaster",
}


def __getattr__(name: str):
    """Import the networks (and submodules) on first use (``from trafficrnn.models import get_cell``)."""
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'trafficrnn.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return MODELS.names()


def get_model(name: str, **kwargs: object):
    """Build a registered model by name (case-insensitive).

    Parameters
    ----------
    name : {"convlstm", "convgru"}
    **kwargs
        :class:`EncoderForecaster` arguments except ``cell`` (set by the name), e.g.
        ``in_channels=1, hidden_channels=[64, 64]``.

    Returns
    -------
    EncoderForecaster

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (a ``ConfigError``, hence a ``ValueError``); the message lists
        the valid names.
    ConfigError
        If ``cell`` is passed (the name decides it) or another argument is invalid.
    TypeError
        If an argument is not one of :class:`EncoderForecaster`'s (the message lists them).
    """
    import inspect

    factory = MODELS.get(name)
    if "cell" in kwargs:
        raise ConfigError(
            f"get_model({name!r}) sets the cell itself, got cell={kwargs['cell']!r}; drop the "
            "cell argument or call EncoderForecaster(cell=...) directly"
        )
    valid = [p for p in inspect.signature(factory).parameters if p != "cell"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"get_model({name!r}) got unexpected argument(s) {', '.join(map(repr, unknown))}; valid "
            f"arguments: {', '.join(valid)}"
        )
    return factory(cell=MODELS.info(name).cell, **kwargs)


__all__ = [
    "TileEncoder",
    "ConvLSTMCell",
    "ConvGRUCell",
    "EncoderForecaster",
    "get_model",
    "get_cell",
    "list_models",
    "list_cells",
    "valid_fraction",
    "MODELS",
]
