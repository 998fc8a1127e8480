"""The daemon's lifecycle moments, for parts that must act on them.

A Listener registered with `daemon.listen()` hears when the daemon is ready, when it
starts to stop, and when a config reload starts and ends (the reloader reports those
through `daemon.reload_started()` / `daemon.reload_finished()`). Each method runs on the
event loop and must return at once: no awaiting, no blocking.
"""
from __future__ import annotations

from typing import Optional


class Listener:
    """Override the moments you need; the others do nothing."""

    def on_ready(self) -> None:
        """The daemon listens and every service has started."""

    def on_stopping(self) -> None:
        """Shutdown has begun; sockets are about to close."""

    def on_reload_started(self) -> None:
        """A config reload began: the config is being read and checked."""

    def on_reload_finished(self, ok: bool, error: Optional[str]) -> None:
        """The reload ended: applied (ok) or refused with the old config kept (error says why)."""
