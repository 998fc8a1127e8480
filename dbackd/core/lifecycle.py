"""The uniform lifecycle of the daemon's parts, and the moments some parts act on.

Every long-running part (each source of world changes, the heartbeat, the notifier...)
is a Service: `start()` returns once it runs, `stop()` ends every task it owns.
`Services` starts them in order and stops them in reverse, each within a time limit, so
one broken part never keeps the others running. `Moments` tells listeners when the
daemon is ready, when it starts to stop, and when a config reload starts and ends; a
change of the config itself is not a moment: it reaches everyone as a world event.
Listener methods run on the event loop and must return at once.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Protocol

import structlog

log = structlog.get_logger("dbackd")

SERVICE_STOP_TIMEOUT = 5.0  # seconds one service may take to stop before it is abandoned


class Service(Protocol):
    """A part with an owned lifecycle."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Services:
    """Parts started in the order they were added and stopped in reverse."""

    def __init__(self, stop_timeout: float = SERVICE_STOP_TIMEOUT):
        self.stop_timeout = stop_timeout
        self._all: list[Service] = []
        self._started: list[Service] = []

    def add(self, service: Service) -> None:
        self._all.append(service)

    def __iter__(self):
        return iter(list(self._all))

    @property
    def running(self) -> bool:
        return bool(self._started)

    async def start(self) -> None:
        """Start each part; if one fails, the ones already started are stopped and the error is raised."""
        for service in self._all:
            try:
                await service.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(service)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await asyncio.wait_for(service.stop(), self.stop_timeout)
            except Exception as exc:  # a broken part must not keep the others running
                log.error("daemon.service_stop_failed", service=type(service).__name__, error=repr(exc))


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


class Moments:
    """Who hears the lifecycle moments, and the one place they are told."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def ready(self) -> None:
        self._tell("on_ready")

    def stopping(self) -> None:
        self._tell("on_stopping")

    def reload_started(self) -> None:
        self._tell("on_reload_started")

    def reload_finished(self, ok: bool, error: Optional[str] = None) -> None:
        self._tell("on_reload_finished", ok, error)

    def _tell(self, moment: str, *args: Any) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, moment)(*args)
            except Exception as exc:  # one broken listener must not break a reload or a shutdown
                log.error("daemon.listener_failed", listener=type(listener).__name__, moment=moment, error=repr(exc))
