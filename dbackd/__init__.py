"""dbackd: a declarative, config-driven backend for the d-zone frontend.

One YAML file declares the servers, their users and how they behave; the daemon
serves the d-zone WebSocket protocol and the frontend's files from it.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("dbackd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
