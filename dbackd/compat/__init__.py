"""A drop-in for d-back 0.0.18's Python API, on dbackd.

A program written for d-back runs by changing one import:

    from dbackd.compat import WebSocketServer      # was: from d_back.server import WebSocketServer

`MockDataProvider` is d-back's too. The layer wraps a `dbackd.Daemon` and only uses its
Python API; docs/migration.md says what behaves the same and what deliberately does
not. This package only re-exports; it is never imported by the rest of dbackd.
"""
from dbackd.compat.mock import MockDataProvider
from dbackd.compat.server import WebSocketServer

__all__ = ["WebSocketServer", "MockDataProvider"]
