"""The installed package version (``0.0.0+unknown`` from an uninstalled source tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trafficrnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
