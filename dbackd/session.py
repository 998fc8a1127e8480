"""What a client may ask over its socket, and how each request is answered.

Parses client frames (protocol.py), asks the world and access rules, and tells the
hub what to send. It holds no per-socket state beyond the hub's Connection and never
writes to a socket itself.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Optional

import structlog

from . import protocol
from .access import Access, Verdict
from .hub import Connection, Hub
from .metrics import Metrics
from .protocol import ClientError, Connect
from .world import ServerState, World

log = structlog.get_logger("dbackd.session")

_REFUSALS = {
    Verdict.AUTH_FAILED: protocol.AUTH_FAILED,
    Verdict.AUTH_REQUIRED: protocol.AUTH_REQUIRED,
}


class Session:
    def __init__(self, world: World, hub: Hub, access: Access, metrics: Metrics):
        self.world = world
        self.hub = hub
        self.access = access
        self.metrics = metrics
        # Consulted after access is granted and before server-join (the client-id provider).
        self.before_join: Optional[Callable[[ServerState], Awaitable[None]]] = None

    async def handle_text(self, conn: Connection, text: str) -> None:
        try:
            kind, request = protocol.parse(text)
        except ClientError as exc:
            log.info("socket.bad_frame", conn=conn.id, reason=str(exc))
            self.hub.error(conn, str(exc))
            return
        if kind == "connect":
            await self.connect(conn, request)

    def handle_binary(self, data: bytes) -> str:
        """Binary frames that are valid UTF-8 are treated as text."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError(protocol.INVALID_BINARY) from None

    async def connect(self, conn: Connection, request: Connect) -> None:
        state = self.world.resolve(request.server)
        if state is None:
            self._refuse(conn, request, "unknown_server", protocol.UNKNOWN_SERVER)
            return
        # A second connect moves the socket: it leaves the old server (and its grant) first.
        self.hub.leave(conn)
        verdict = await self.access.check(state.info, request)
        if verdict is not Verdict.ALLOWED:
            self._refuse(conn, request, verdict.value, _REFUSALS[verdict])
            return
        if self.before_join is not None:
            await self.before_join(state)
        # The checks may have awaited: the server may have gone or changed meanwhile.
        current = self.world.resolve(request.server)
        if current is None:
            self._refuse(conn, request, "unknown_server", protocol.UNKNOWN_SERVER)
            return
        if current.info.passworded and not state.info.passworded:
            self._refuse(conn, request, Verdict.AUTH_REQUIRED.value, protocol.AUTH_REQUIRED)
            return
        state = current
        self.hub.join(conn, state, request.server, authenticated=state.info.passworded)
        via = "auth" if state.info.passworded else "public"
        log.info("socket.joined", conn=conn.id, server=state.info.id, users=len(state.users), via=via)
        self.metrics.joined(state.info.id, via)

    def _refuse(self, conn: Connection, request: Connect, reason: str, message: str) -> None:
        log.info("socket.refused", conn=conn.id, server=request.server, reason=reason)
        self.metrics.refused(reason)
        self.hub.error(conn, message)
