"""The listening sockets (bound by binding.py before anything else starts, so a taken port fails
at once and alone), served with a protocol factory (aiohttp's, behind the door, which also
speaks TLS when asked, so that a connection is counted before its handshake). With
`listen.tls` the certificate and key are loaded into a new context whenever the config is
replaced and the files changed (a renewal is picked up by the reload that follows their
edit), and each new connection is handed the newest context during its handshake;
connections already open keep theirs. It serves and holds the TLS context; it knows
nothing of HTTP.
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
from dbackd.edge.binding import BACKLOG

log = structlog.get_logger("dbackd.listener")


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
