"""The daemon: one object that owns the config, the world, the hub and the web server.

Start and stop it inside any asyncio loop (the CLI does, and so can a host program).
It wires the parts together and keeps their lifecycle; the parts do the work.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Union

import structlog
from aiohttp import web

from . import __version__
from .access import Access
from .config import EMBEDDED_NAME, Config, load_data, load_embedded, load_file
from .hub import Hub
from .session import Session
from .simulation import Clock, SimulationService
from .web import create_app
from .world import World

log = structlog.get_logger("dbackd")

ConfigSource = Union[Config, str, "os.PathLike[str]", Mapping[str, Any], None]


def load(source: ConfigSource) -> Config:
    """A config from a model, a file path, plain data, or (None) the embedded default."""
    if isinstance(source, Config):
        return source
    if source is None:
        return load_embedded()
    if isinstance(source, (str, Path, os.PathLike)):
        return load_file(source)
    return load_data(source)


class Service(Protocol):
    """A long-running part of the daemon (simulation, file watcher, ...) with an owned lifecycle."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Daemon:
    def __init__(self, config: ConfigSource = None, clock: Optional[Clock] = None):
        """clock: the simulation's time (default the system clock; tests pass a ManualClock)."""
        self.config = load(config)
        self.loaded_at = datetime.now(timezone.utc)
        self.world = World(self.config)
        self.hub = Hub(self.world, self.config.limits)
        self.access = Access()
        self.session = Session(self.world, self.hub, self.access)
        self.app = create_app(self)
        self._runner: Optional[web.AppRunner] = None
        self._site: Optional[web.TCPSite] = None
        self.services: list[Service] = []
        self._started: list[Service] = []
        self.simulation = SimulationService(self.world, clock)
        self.services.append(self.simulation)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Listen on the configured address; returns once the port is open."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.listen.host, self.config.listen.port)
        await self._site.start()
        for service in self.services:
            await service.start()
            self._started.append(service)
        log.info("daemon.started", url=self.url, config=self.config_name, servers=len(self.config.servers),
                 version=__version__)

    async def stop(self) -> None:
        """Close every socket (1001), stop listening and release everything."""
        while self._started:
            await self._started.pop().stop()
        if self._runner is not None:
            connections = len(self.hub.connections)
            await self._runner.cleanup()
            self._runner = None
            log.info("daemon.stopped", closed_connections=connections, frames_sent=self.hub.frames_sent)

    async def __aenter__(self) -> "Daemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- facts ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (useful when the config asks for port 0)."""
        if self._runner is not None:
            for addr in self._runner.addresses:
                return int(addr[1])
        return self.config.listen.port

    @property
    def url(self) -> str:
        host = self.config.listen.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def config_name(self) -> str:
        return self.config.file or EMBEDDED_NAME

    def socket_paths(self) -> set[str]:
        return {"/", "/ws"} | {m.ws_path for m in self.config.static}

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "config": self.config_name,
            "loaded_at": self.loaded_at.isoformat(),
            "servers": len(self.world.servers),
            "connections": len(self.hub.connections),
        }
