"""The daemon: one object that owns the config, the world, the hub and the web server.

Start and stop it inside any asyncio loop (the CLI does, and so can a host program,
which drives it through the Python API in host.py, mixed in here). It wires the parts
together and keeps their lifecycle; the parts do the work.
"""
from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Union

import structlog
from aiohttp import web

from . import __version__
from .access import Access
from .callbacks import Callbacks
from .config import EMBEDDED_NAME, Config, ConfigError, load_data, load_embedded, load_file, with_overrides
from .config.diff import describe
from .host import HostApi
from .hub import Heartbeat, Hub
from .lifecycle import Listener
from .metrics import Metrics
from .oauth import OAuthService
from .providers import Provided, overlay
from .reload import Reloader
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


SERVICE_STOP_TIMEOUT = 5.0  # seconds one service may take to stop before it is abandoned


class Daemon(HostApi):
    """The dbackd daemon. See host.py for what a host program can do with it."""

    def __init__(self, config: ConfigSource = None, *, host: Optional[str] = None, port: Optional[int] = None,
                 static_dir: Optional[str] = None, watch: bool = True, clock: Optional[Clock] = None):
        """`config`: a model, a file path, plain data, or None for the embedded default.

        host/port/static_dir override the config (and keep doing so across reloads);
        `watch` follows edits of the config file; `clock` is the simulation's time (default
        the system clock; tests pass a ManualClock).
        """
        self._overrides = {"host": host, "port": port, "static_dir": static_dir}
        self.config = with_overrides(load(config), **self._overrides)
        self._base = self.config  # the declaration from the config source, before the providers' overlay
        self._provided: Optional[Provided] = None
        self._refresh_lock = asyncio.Lock()
        self.loaded_at = datetime.now(timezone.utc)
        self.restart_required: tuple[str, ...] = ()
        self.world = World(self.config)
        self.hub = Hub(self.world, self.config.limits)
        self.listeners: list[Listener] = []
        self.metrics = Metrics(self)
        self.listen(self.metrics)
        self.oauth = OAuthService(self.config, on_verified=self.metrics.oauth_verification)
        self.access = Access(self.oauth.verify)
        self.session = Session(self.world, self.hub, self.access, self.metrics)
        self.callbacks = Callbacks(self.world)
        self.app = create_app(self)
        self._runner: Optional[web.AppRunner] = None
        self._site: Optional[web.TCPSite] = None
        self.reloader = Reloader(self, watch=watch)
        self.services: list[Service] = [self.reloader, self.oauth, Heartbeat(self.hub)]
        self._started: list[Service] = []
        self._started_at: Optional[float] = None  # time.monotonic() when listening began
        self.simulation = SimulationService(self.world, clock)
        self.services.append(self.simulation)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Ask the data providers (if any), then listen; returns once the port is open."""
        self.callbacks.open()
        await self.refresh()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.listen.host, self.config.listen.port)
        try:
            await self._site.start()
        except BaseException:  # nothing was served: release the runner, leave nothing to stop
            await self._runner.cleanup()
            self._runner = None
            raise
        self._started_at = time.monotonic()
        for service in self.services:
            await service.start()
            self._started.append(service)
        log.info("daemon.started", url=self.url, config=self.config_name, servers=len(self.config.servers),
                 version=__version__)
        self._tell("on_ready")

    async def stop(self) -> None:
        """Stop every service, stop listening, close every socket (1001) and release everything.

        Each service gets SERVICE_STOP_TIMEOUT seconds; one that fails or hangs is logged
        and the rest still stop. Ends with one `daemon.stopped` summary line.
        """
        if self._runner is None and not self._started:
            return
        self._tell("on_stopping")
        while self._started:
            service = self._started.pop()
            try:
                await asyncio.wait_for(service.stop(), SERVICE_STOP_TIMEOUT)
            except Exception as exc:  # a broken service must not keep the others running
                log.error("daemon.service_stop_failed", service=type(service).__name__, error=repr(exc))
        await self.callbacks.close()  # first: requests waiting on user code end now, not at the shutdown timeout
        if self._runner is not None:
            connections = len(self.hub.connections)
            # aiohttp stops accepting, runs on_shutdown (close every socket with 1001), then
            # waits up to shutdown_timeout for handlers and cancels those still running.
            await self._runner.cleanup()
            self._runner = None
            log.info("daemon.stopped", uptime_seconds=round(self.uptime, 3), closed_connections=connections,
                     frames_sent=self.hub.frames_sent, slow_dropped=self.hub.slow_dropped)

    # -- lifecycle moments -------------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        """Hear the daemon's lifecycle moments (see lifecycle.Listener)."""
        self.listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def reload_started(self) -> None:
        """The reloader calls this when it begins to read a new config."""
        self._tell("on_reload_started")

    def reload_finished(self, ok: bool, error: Optional[str] = None) -> None:
        """The reloader calls this when the new config is applied (ok) or refused."""
        self._tell("on_reload_finished", ok, error)

    def _tell(self, moment: str, *args: Any) -> None:
        for listener in list(self.listeners):
            try:
                getattr(listener, moment)(*args)
            except Exception as exc:  # one broken listener must not break a reload or a shutdown
                log.error("daemon.listener_failed", listener=type(listener).__name__, moment=moment, error=repr(exc))

    async def __aenter__(self) -> "Daemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- configuration ---------------------------------------------------------------
    def load_config(self) -> Config:
        """Read the running config's file again, with the same overrides. Blocking: run it in a thread."""
        if self.config_path is None:
            return self._base
        base = with_overrides(load_file(self.config_path), **self._overrides)
        overlay(base, self._provided)  # a file that conflicts with what the providers declare is refused
        return base

    @property
    def config_path(self) -> Optional[Path]:
        """The config's file, if it came from one (not a dict, a model or the embedded default)."""
        if self.config.file in (None, EMBEDDED_NAME):
            return None
        return Path(self.config.file).resolve()

    def config_sources(self) -> tuple[Path, ...]:
        """Every file the running config was read from (what a reload watches)."""
        path = self.config_path
        return () if path is None else (path,) + self.config.includes

    def apply_config(self, new: Config) -> list[str]:
        """Make `new` the running config: the world moves in one step and clients see the changes.

        `new` is the config source's declaration; the data providers' last answer is laid
        over it. Returns a line per change. Settings that cannot change live (listen,
        logging) are kept as they are and reported in restart_required.
        """
        self._base = new
        try:
            effective = overlay(new, self._provided)
        except ConfigError as exc:  # the providers answered in between: their answer waits for refresh()
            log.warning("provider.dropped", reason="conflicts with the new config",
                        errors=[p.message for p in exc.problems])
            self._provided = None
            effective = new
        return self._move(effective)

    def _move(self, new: Config) -> list[str]:
        """Move the world to the effective declaration `new` (config plus providers)."""
        old = self.config
        self.config = new
        changes = self.world.reconfigure(new)
        self.hub.limits = new.limits
        self.loaded_at = datetime.now(timezone.utc)
        self.restart_required = tuple(sorted(set(self.restart_required) | set(changes.restart_required)))
        if changes.restart_required:
            log.warning("reload.restart_required", keys=list(changes.restart_required))
        for service in self.services:
            on_config = getattr(service, "on_config", None)
            if on_config is not None:
                on_config(new)
        return describe(changes, old, new)

    async def reload(self) -> bool:
        """Re-read the config file now and apply it; False if it was not usable."""
        return await self.reloader.reload()

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
    def uptime(self) -> float:
        """Seconds since the daemon started listening (0 before)."""
        return time.monotonic() - self._started_at if self._started_at is not None else 0.0

    @property
    def config_name(self) -> str:
        return self.config.file or "<python data>"  # the embedded default names itself; a dict or model does not

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
            "frames_sent": self.hub.frames_sent,
            "dropped_slow": self.hub.slow_dropped,
            "reload": self.reloader.status(),
            "restart_required": list(self.restart_required),
        }
