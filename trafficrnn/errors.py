"""Exceptions raised by trafficrnn: one base class, one subclass per kind of user mistake.

Every message says what was found, what was expected and how to fix it, and names the
file or argument concerned.
"""

from __future__ import annotations


class TrafficRNNError(Exception):
    """Base class of every error trafficrnn raises on purpose."""


class InputFileError(TrafficRNNError, ValueError):
    """A file is missing, unreadable, or not the kind of file expected."""


class MissingCRSError(InputFileError):
    """A raster or vector layer carries no coordinate reference system."""


class StackMismatchError(TrafficRNNError, ValueError):
    """The frames of a stack disagree on CRS, transform, shape, band count or dtype."""


class TimestampError(TrafficRNNError, ValueError):
    """Timestamps are missing, unparseable or duplicated."""


class CadenceError(TimestampError):
    """The time steps of a stack are not regularly spaced."""


class GridError(TrafficRNNError, ValueError):
    """A grid, tile size or window does not fit the data."""


class VectorError(TrafficRNNError, ValueError):
    """A vector layer (points, lines) cannot be used as given."""


class ExportError(TrafficRNNError, ValueError):
    """An array cannot be written to the requested format."""


class OutputExistsError(TrafficRNNError, FileExistsError):
    """An output path exists and ``overwrite`` was not given."""


class ModelFileError(TrafficRNNError, ValueError):
    """A saved model is missing, tampered with, truncated or incompatible."""


class ModelMismatchError(TrafficRNNError, ValueError):
    """A stack does not match what a fitted model expects (bands, tile size, cadence...)."""


class NotFittedError(TrafficRNNError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``."""


class ConfigError(TrafficRNNError, ValueError):
    """A parameter or configuration value is out of range or of the wrong type."""


class SplitError(ConfigError):
    """A stack cannot be split for training as its data asks: it holds only the held-out (validation /
    test) parts of its dataset's published split."""


class CalibrationError(ConfigError):
    """Probabilistic forecasts cannot be made or calibrated as asked: quantiles asked of a model without
    calibration, or calibration frames that reach the test part (see
    :mod:`trafficrnn.estimation.calibration`)."""


class UnknownNameError(ConfigError):
    """A name is not registered in its family (model, cell, baseline, metric, dataset...); the message
    lists the valid names (see :class:`trafficrnn.registry.Registry`)."""


class UnknownFormatError(UnknownNameError, ExportError):
    """An output file's extension names no writer (see :func:`trafficrnn.io.get_writer`)."""


class SchedulerError(TrafficRNNError, ConnectionError):
    """A dask scheduler cannot be reached."""


__all__ = [
    "TrafficRNNError",
    "InputFileError",
    "MissingCRSError",
    "StackMismatchError",
    "TimestampError",
    "CadenceError",
    "GridError",
    "VectorError",
    "ExportError",
    "OutputExistsError",
    "ModelFileError",
    "ModelMismatchError",
    "NotFittedError",
    "ConfigError",
    "SplitError",
    "CalibrationError",
    "UnknownNameError",
    "UnknownFormatError",
    "SchedulerError",
]


class MissingDependencyError(TrafficRNNError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra."""
