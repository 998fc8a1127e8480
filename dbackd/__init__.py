"""dbackd: a declarative, config-driven backend for the d-zone frontend.

One YAML file declares the servers, their users and how they behave; the daemon
serves the d-zone WebSocket protocol and the frontend's files from it. A program can
also embed it: `from dbackd import Daemon` (see dbackd/host.py for the Python API).
The names below are imported on first use, so `import dbackd` stays light.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

try:
    __version__ = _version("dbackd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_LAZY = {
    "Daemon": "dbackd.daemon",
    "ConfigError": "dbackd.config",
    "InvalidRequest": "dbackd.apischema",
    "UnknownServer": "dbackd.world",
    "UnknownUser": "dbackd.world",
    "DeclaredUser": "dbackd.world",
    "Unavailable": "dbackd.world",
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from .apischema import InvalidRequest
    from .config import ConfigError
    from .daemon import Daemon
    from .world import DeclaredUser, Unavailable, UnknownServer, UnknownUser


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dbackd' has no attribute {name!r}")
