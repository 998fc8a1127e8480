"""The daemon: assembles the parts and runs their lifecycle. The parts do the work.

Data flows one way: the config source → the declaration → the world (the one current
config, servers, users) ← the other sources of change (reloader, HTTP API, Python API,
and the live sources of sources/catalogue.py: the simulation, the Discord gateway; in a
cluster, the backplane hands back every node's changes) → world events → the hub, the
only part that decides what a socket is sent, through its wire. The live sources are one
list: their lifecycle (on the cluster's leader), /healthz and metrics loop over it. Each part is built here with the few collaborators it needs;
none is given the daemon. Start and stop it inside any asyncio loop (the command line
does, and so can a host program, which uses the Python API offered on the daemon).
"""
from __future__ import annotations

import asyncio
import functools
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import structlog
from aiohttp import web

from dbackd.version import __version__
from dbackd.edge.access import Access
from dbackd.sources.api import HttpApi
from dbackd.sources.callbacks import Callbacks
from dbackd.config import Config
from dbackd.core.declaration import ConfigSource, Declaration, Overrides, load
from dbackd.cluster.leadership import Leadership
from dbackd.edge.door import Door
from dbackd.ops import fdlimit
from dbackd.fanout.heartbeat import Heartbeat
from dbackd.sources.host import HostApi
from dbackd.fanout.hub import Hub
from dbackd.core.lifecycle import Listener, Moments, Service, Services
from dbackd.edge.binding import bind
from dbackd.edge.listener import TlsContexts, serve
from dbackd.ops.metrics import Metrics
from dbackd.edge.oauth import OAuthService
from dbackd.edge.peers import Peers
from dbackd.sources.reload import Reloader
from dbackd.sources import catalogue
from dbackd.sources.base import Needs, Source
from dbackd.sources.simulation import Clock
from dbackd.edge.web import Site
from dbackd.edge.websocket import SocketEndpoint
from dbackd.core.world import World

if TYPE_CHECKING:
    from dbackd.cluster.backplane import Backplane
    from dbackd.sources.discord.source import DiscordSource
    from dbackd.sources.simulation import SimulationService

log = structlog.get_logger("dbackd")

F = TypeVar("F", bound=Callable[..., Any])


def _python_api(method: F) -> F:
    """The Python API's method, offered on the daemon as the original backend offered it."""
    @functools.wraps(method)
    def call(self: "Daemon", *args: Any, **kwargs: Any) -> Any:
        return method(self.host_api, *args, **kwargs)

    return call  # type: ignore[return-value]


class Daemon:
    """The dbackd daemon. Its Python API (broadcasts, snapshots, callbacks) is host.HostApi's."""

    def __init__(self, config: ConfigSource = None, *, host: Optional[str] = None, port: Optional[int] = None,
                 static_dir: Optional[str] = None, watch: bool = True, clock: Optional[Clock] = None,
                 reuse_port: bool = False, node: Optional[str] = None,
                 sockets: Optional[list[socket.socket]] = None):
        """`config`: a model, a file path, plain data, or None for the embedded default.

        host/port/static_dir override the config (and keep doing so across reloads);
        `watch` follows edits of the config file; `clock` is the simulation's time (default
        the system clock; tests pass a ManualClock); `reuse_port` shares the port with other
        processes (SO_REUSEPORT, for `workers: N`); `node` names this node of a cluster;
        `sockets` are listening sockets already bound to the config's address (edge/binding.py;
        the command line binds before it loads the rest), which the first start() serves.
        """
        self.reuse_port = reuse_port
        self._prebound = sockets
        overrides = Overrides(host, port, static_dir, node)
        self.world = World(overrides.apply(load(config)))
        self.declaration = Declaration(self.world, overrides)
        self.moments = Moments()
        self.hub = Hub(self.world)
        self.metrics = Metrics(self.world, self.hub, self.moments, lambda: self.uptime,
                               self.declaration.loaded_at.timestamp())
        self.oauth = OAuthService(self.world, on_verified=self.metrics.oauth_verification,
                                  on_guard=self.metrics.oauth_guarded)
        self.callbacks = Callbacks(self.world)
        self.peers = Peers(self.world)
        self.door = Door(self.world, self.peers, self.metrics.connection_refused)
        self.tls = TlsContexts(self.world)
        self.access = Access(self.callbacks.login_verifier(self.oauth.verify), self.peers)
        self.sockets = SocketEndpoint(self.world, self.hub, self.access, self.callbacks, self.metrics, self.peers)
        # The sources of world change.
        self.host_api = HostApi(self.world, self.hub.count, self.callbacks, self.declaration)
        self.http_api = HttpApi(self.world, self.hub.count)
        self.reloader = Reloader(self.declaration, self.moments, watch=watch)
        self.sources: list[Source] = catalogue.build(Needs(self.world, self.declaration, clock))
        for source in self.sources:
            self.metrics.register(source)
        # In a cluster the world's live changes go through Redis, and the producers run on one node.
        self.backplane: Optional[Backplane] = None
        if self.config.cluster is not None:
            from dbackd.cluster.backplane import Backplane  # the Redis client, for a cluster only

            self.backplane = Backplane(self.world, self.declaration, self.config.cluster,
                                       layers=tuple(source.name for source in self.sources))
            self.metrics.register(self.backplane)
        self.leadership = Leadership(list(self.sources), self.backplane)
        self.site = Site(self.world, self.hub, self.sockets, self.http_api, self.metrics, self.callbacks,
                         self.health, face=self._face, activities=self._activities)
        self.app = self.site.app
        # Started in this order, stopped in reverse: the Python API last, so callbacks still
        # running are cancelled before the sockets close.
        self.services = Services()
        if self.backplane is not None:
            self.services.add(self.backplane)  # first: the others start from the cluster's state
        for service in (self.host_api, self.oauth, self.http_api, self.tls, self.reloader, Heartbeat(self.hub),
                        self.leadership):
            self.services.add(service)
        self._runner: Optional[web.AppRunner] = None
        self._servers: list[asyncio.AbstractServer] = []
        self._bound: list[tuple] = []  # the listening sockets' addresses
        self._started_at: Optional[float] = None  # time.monotonic() when listening began

    async def _face(self, server: str, uid: str) -> Union[bytes, None, bool]:
        """A member's avatar for the built-in page from the source that has the server's faces; None:
        none yet; False: no source has faces for this server."""
        answer: Union[bytes, None, bool] = False
        for source in self.sources:
            face = getattr(source, "face", None)
            if face is not None:
                answer = await face(server, uid)
                if answer is not False:
                    return answer
        return answer

    def _activities(self, server: str) -> Union[dict, bool]:
        """What a server's members are doing, from the source that knows; False: none does."""
        for source in self.sources:
            doing = getattr(source, "activities", None)
            if doing is not None:
                answer = doing(server)
                if answer is not False:
                    return answer
        return False

    # -- lifecycle -----------------------------------------------------------------
    def add_service(self, service: Service) -> None:
        """Run another part with the daemon (before start): started after the others, stopped first."""
        self.services.add(service)

    def listen(self, listener: Listener) -> None:
        """Hear the daemon's lifecycle moments (see lifecycle.Listener)."""
        self.moments.listen(listener)

    async def start(self) -> None:
        """Bind the port, start every part (the data providers are asked first), then serve.

        Returns once the port is served. A port that cannot be bound raises OSError before
        anything has started.
        """
        config = self.config
        listen, limits = config.listen, config.limits
        sockets, self._prebound = self._prebound or bind(listen.host, listen.port, reuse_port=self.reuse_port), None
        file_limit = self._file_limit(limits.max_connections)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        try:
            tls = await asyncio.to_thread(self.tls.context)
            await self.services.start()
            await runner.setup()
            server = runner.server
            assert server is not None
            site = self.site
            self._servers = await serve(sockets, self.door.wrap(lambda: site.protocol(server), tls,
                                                                limits.handshake_timeout))
        except BaseException:  # nothing was served: stop what started, leave nothing to stop
            await runner.cleanup()
            await self.services.stop()
            for sock in sockets:
                sock.close()
            raise
        self._bound = [sock.getsockname() for sock in sockets]
        self._runner = runner
        self._started_at = time.monotonic()
        log.info("daemon.started", url=self.url, config=self.config_name, servers=len(self.config.servers),
                 version=__version__, file_limit=file_limit)
        self.moments.ready()

    async def stop(self) -> None:
        """Stop every part, stop listening, close every socket (1001) and release everything.

        Each part gets a bounded time; one that fails or hangs is logged and the rest
        still stop. Ends with one `daemon.stopped` summary line.
        """
        if self._runner is None and not self.services.running:
            return
        self.moments.stopping()
        await self.services.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            for server in self._servers:
                server.close()  # accept no more; the open connections are closed below
            self._servers = []
            connections = len(self.hub.connections)
            # aiohttp stops accepting, runs on_shutdown (close every socket with 1001), then
            # waits up to shutdown_timeout for handlers and cancels those still running.
            await runner.cleanup()
            log.info("daemon.stopped", uptime_seconds=round(self.uptime, 3), closed_connections=connections,
                     frames_sent=self.hub.frames_sent, slow_dropped=self.hub.slow_dropped)

    def _file_limit(self, connections: int) -> Optional[int]:
        """Raise the file-descriptor limit for `limits.max_connections`; the soft limit it got."""
        soft, hard, room = fdlimit.raise_for(connections)
        self.peers.capacity = room
        if room is not None and room < connections:
            log.warning("daemon.file_limit", soft=soft, hard=hard, max_connections=connections, usable=room)
        return soft

    async def __aenter__(self) -> "Daemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def reload(self) -> bool:
        """Re-read the config file now and apply it; False if it was not usable."""
        return await self.reloader.reload()

    # -- the Python API --------------------------------------------------------------
    broadcast_presence = _python_api(HostApi.broadcast_presence)
    broadcast_message = _python_api(HostApi.broadcast_message)
    broadcast_client_id_update = _python_api(HostApi.broadcast_client_id_update)
    servers = _python_api(HostApi.servers)
    users = _python_api(HostApi.users)
    refresh = _python_api(HostApi.refresh)
    on_get_server_data = _python_api(HostApi.on_get_server_data)
    on_get_user_data = _python_api(HostApi.on_get_user_data)
    on_validate_discord_user = _python_api(HostApi.on_validate_discord_user)
    on_get_client_id = _python_api(HostApi.on_get_client_id)
    on_static_request = _python_api(HostApi.on_static_request)
    before_server_list = _python_api(HostApi.before_server_list)
    before_join = _python_api(HostApi.before_join)

    # -- facts ---------------------------------------------------------------------
    def source(self, name: str) -> Source:
        """The live source of that name (KeyError if there is none)."""
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)

    @property
    def simulation(self) -> "SimulationService":
        return self.source("simulation")  # type: ignore[return-value]

    @property
    def discord(self) -> "DiscordSource":
        return self.source("discord")  # type: ignore[return-value]

    @property
    def config(self) -> Config:
        """The effective config now in force (the world holds it)."""
        return self.world.config

    @property
    def loaded_at(self):
        return self.declaration.loaded_at

    @property
    def config_path(self) -> Optional[Path]:
        return self.declaration.path

    def config_sources(self) -> tuple[Path, ...]:
        return self.declaration.sources()

    @property
    def serving(self) -> bool:
        """True from the moment the port is served until stop()."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The bound port (useful when the config asks for port 0)."""
        for address in self._bound:
            return int(address[1])
        return self.config.listen.port

    @property
    def url(self) -> str:
        host = self.config.listen.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.config.listen.tls else "http"
        return f"{scheme}://{host}:{self.port}/"

    @property
    def uptime(self) -> float:
        """Seconds since the daemon started listening (0 before)."""
        return time.monotonic() - self._started_at if self._started_at is not None else 0.0

    @property
    def config_name(self) -> str:
        return self.config.file or "<python data>"  # the embedded default names itself; a dict or model does not

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "config": self.config_name,
            "loaded_at": self.loaded_at.isoformat(),
            "servers": len(self.world.servers),
            "connections": len(self.hub.connections),
            "tasks": len(asyncio.all_tasks()),
            "frames_sent": self.hub.frames_sent,
            "dropped_slow": self.hub.slow_dropped,
            "reload": self.reloader.status(),
            "restart_required": list(self.declaration.restart_required),
            "oauth": self.oauth.status(),
            **{source.name: entry for source in self.sources if (entry := source.health()) is not None},
            **({"cluster": self.backplane.status()} if self.backplane is not None else {}),
        }
