"""The installed package's version, read from its metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sendai-async")
except PackageNotFoundError:  # pragma: no cover -- running from a source tree, uninstalled
    __version__ = "0.0.0+unknown"
