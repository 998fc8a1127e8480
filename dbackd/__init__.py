"""dbackd: a declarative, config-driven backend for the d-zone frontend.

One YAML file declares the servers, their users and how they behave; the daemon
serves the d-zone WebSocket protocol and the frontend's files from it. A program can
also embed it: `from dbackd import Daemon` (see dbackd/sources/host.py for the Python API).
The names below are imported on first use, so `import dbackd` stays light.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from dbackd.version import __version__

_LAZY = {
    "Daemon": "dbackd.daemon",
    "ConfigError": "dbackd.config",
    "InvalidRequest": "dbackd.sources.apischema",
    "UnknownServer": "dbackd.core.world",
    "UnknownUser": "dbackd.core.world",
    "DeclaredUser": "dbackd.core.world",
    "Unavailable": "dbackd.core.world",
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from dbackd.sources.apischema import InvalidRequest
    from dbackd.config import ConfigError
    from dbackd.daemon import Daemon
    from dbackd.core.world import DeclaredUser, Unavailable, UnknownServer, UnknownUser


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dbackd' has no attribute {name!r}")
