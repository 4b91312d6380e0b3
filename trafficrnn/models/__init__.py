"""Neural network models: TileEncoder, ConvLSTM/ConvGRU cells and the EncoderForecaster, with a
name registry (``get_model``) whose entries all share the ``EncoderForecaster`` interface.
"""

from __future__ import annotations

from trafficrnn.errors import ConfigError
from trafficrnn.models.cells import ConvGRUCell, ConvLSTMCell, get_cell, list_cells
from trafficrnn.models.encoder import TileEncoder, valid_fraction
from trafficrnn.models.forecaster import EncoderForecaster

#: model name -> cell name of the EncoderForecaster it builds
MODELS: dict[str, str] = {"convlstm": "lstm", "convgru": "gru"}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return sorted(MODELS)


def get_model(name: str, **kwargs: object) -> EncoderForecaster:
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
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    ConfigError
        If ``cell`` is passed (the name decides it) or another argument is invalid.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    if "cell" in kwargs:
        raise ConfigError(
            f"get_model({name!r}) sets the cell itself, got cell={kwargs['cell']!r}; drop the "
            "cell argument or call EncoderForecaster(cell=...) directly"
        )
    return EncoderForecaster(cell=MODELS[key], **kwargs)


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
