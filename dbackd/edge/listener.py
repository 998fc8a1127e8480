"""The listening sockets: bound before anything else starts, so a taken port fails at once and alone.

Binds every address a host name resolves to (as asyncio's create_server does), with
SO_REUSEADDR, and SO_REUSEPORT when asked (several processes sharing one port), and
serves them with a protocol factory (aiohttp's, behind the door, which also speaks TLS
when asked, so that a connection is counted before its handshake). With `listen.tls` the
certificate and key are loaded into a new context whenever the config is replaced and the
files changed (a renewal is picked up by the reload that follows their edit), and each new
connection is handed the newest context during its handshake; connections already open
keep theirs. It binds, listens and holds the TLS context; it knows nothing of HTTP.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Callable, Optional

import structlog

from dbackd.config import Tls
from dbackd.config.loader import tls_context
from dbackd.core.events import ConfigReplaced, Event
from dbackd.core.tasks import TaskSet
from dbackd.core.world import World

log = structlog.get_logger("dbackd.listener")

BACKLOG = 1024


def bind(host: Optional[str], port: int, reuse_port: bool = False, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening sockets for (host, port). Raises OSError (a taken port, an unknown host...)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = {info[0] for info in infos}
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and socket.AF_INET in families:
                # Both families are bound separately; the v6 socket must not claim v4 too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])  # the port the first one got
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve(sockets: list[socket.socket], factory: Callable[[], asyncio.BaseProtocol]) -> list[asyncio.AbstractServer]:
    """Start accepting on bound sockets; close the servers it returns to stop. TLS, when asked,
    is spoken by the protocol `factory` makes (the door's), so a connection is counted at accept."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    try:
        for sock in sockets:
            servers.append(await loop.create_server(factory, sock=sock, backlog=BACKLOG))
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers


class TlsContexts:
    """The TLS context the listening sockets speak, following the certificate files.

    The context given to the sockets hands each new connection the newest context from
    its SNI callback (called with or without a server name), so a renewed certificate
    needs no new listening socket. A service: it owns the task that reloads the files.
    """

    def __init__(self, world: World):
        self.world = world
        self.loaded: Optional[ssl.SSLContext] = None  # the newest context with the files' chain
        self._files: Optional[Tls] = None
        self._stamp: Optional[tuple] = None  # (device, inode, size, mtime) of the files last loaded
        self._front: Optional[ssl.SSLContext] = None
        self._tasks = TaskSet("tls")
        world.subscribe(self._on_event)

    def context(self) -> Optional[ssl.SSLContext]:
        """The context to listen with, or None without `listen.tls`. Blocking (reads the files): call before serving."""
        files = self.world.config.listen.tls
        if files is None:
            return None
        self._load(files)
        front = tls_context(files.cert, files.key)
        front.sni_callback = self._pick
        self._front = front
        return front

    def _pick(self, sock: ssl.SSLObject, _name: Optional[str], _front: ssl.SSLContext) -> None:
        if self.loaded is not None:
            sock.context = self.loaded
        return None

    def _load(self, files: Tls) -> bool:
        stamp = _stamp(files)
        if files == self._files and stamp == self._stamp:
            return False
        self.loaded = tls_context(files.cert, files.key)
        self._files, self._stamp = files, stamp
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self._tasks.cancel()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConfigReplaced) and self._front is not None:
            files = event.config.listen.tls
            if files is not None:
                self._tasks.spawn(self._reload(files), name="dbackd.tls.reload")

    async def _reload(self, files: Tls) -> None:
        try:
            if await asyncio.to_thread(self._load, files):
                log.info("tls.reloaded", cert=str(files.cert))
        except (OSError, ssl.SSLError) as exc:  # the loader checked them a moment ago: a file half written
            log.error("tls.reload_failed", cert=str(files.cert), error=type(exc).__name__)


def _stamp(files: Tls) -> tuple:
    try:
        # os.stat follows the links: a certbot renewal moves live/ to new files, a new inode.
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in (os.stat(files.cert), os.stat(files.key)))
    except OSError:
        return ()
