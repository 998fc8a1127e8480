"""One client's session: what it asks over its socket (`connect`) and how each frame is answered.

A Session is made per socket by the socket endpoint (websocket.py). It parses the
client's frames (protocol.py), asks the world, the access rules and the host program's
callbacks (its hook before a join, its client id), and tells the hub what to send. It
never writes to a socket itself.
"""
from __future__ import annotations

import asyncio

import structlog
from aiohttp import WSMessage, WSMsgType

from . import protocol
from .access import Access, Verdict
from .callbacks import Callbacks
from .hub import Connection, Hub
from .metrics import Metrics
from .protocol import ClientError, Connect
from .world import World

log = structlog.get_logger("dbackd.session")

ENCODE_PER_TURN = 2000  # join fragments encoded between two yields before a big join

_REFUSALS = {
    Verdict.AUTH_FAILED: protocol.AUTH_FAILED,
    Verdict.AUTH_REQUIRED: protocol.AUTH_REQUIRED,
}


class Session:
    def __init__(self, conn: Connection, world: World, hub: Hub, access: Access, callbacks: Callbacks,
                 metrics: Metrics):
        self.conn = conn
        self.world = world
        self.hub = hub
        self.access = access
        self.callbacks = callbacks
        self.metrics = metrics

    async def receive(self, msg: WSMessage) -> bool:
        """Handle one frame from the client; False when the socket is done (a transport error)."""
        conn = self.conn
        self.hub.seen(conn)
        if msg.type == WSMsgType.TEXT:
            await self.handle_text(msg.data)
        elif msg.type == WSMsgType.BINARY:
            try:
                text = msg.data.decode("utf-8")  # valid UTF-8 binary frames are treated as text
            except UnicodeDecodeError:
                self._bad_frame(protocol.INVALID_BINARY)
                return True
            await self.handle_text(text)
        elif msg.type == WSMsgType.PING:
            self.hub.pong(conn, msg.data)
        elif msg.type == WSMsgType.ERROR:
            log.info("socket.error", conn=conn.id, error=str(msg.data))
            return False
        return True

    async def handle_text(self, text: str) -> None:
        try:
            kind, request = protocol.parse(text)
        except ClientError as exc:
            self._bad_frame(str(exc))
            return
        if kind == "connect":
            await self.connect(request)

    def _bad_frame(self, reason: str) -> None:
        log.info("socket.bad_frame", conn=self.conn.id, reason=reason)
        self.hub.error(self.conn, reason)

    async def connect(self, request: Connect) -> None:
        conn, world = self.conn, self.world
        await self.callbacks.before_join(request.server)  # the host program's hook may refresh the world first
        await world.current()  # a cluster node catching up answers with the current state, not a stale one
        state = world.resolve(request.server)
        if state is None:
            self._refuse(request, "unknown_server", protocol.UNKNOWN_SERVER)
            return
        # A second connect moves the socket once it is let in; refused, it stays where it is
        # (the d-zone frontend, showing a world, stays on it after an error).
        verdict = await self.access.check(state.info, request)
        if verdict is not Verdict.ALLOWED:
            self._refuse(request, verdict.value, _REFUSALS[verdict])
            return
        if self.callbacks.has("on_get_client_id"):
            await self.callbacks.ask_client_id(state)
        while state.encode_pending(ENCODE_PER_TURN):  # a big server's changed users, a slice per loop turn
            await asyncio.sleep(0)
        # The checks may have awaited: the server may have gone or changed meanwhile.
        current = world.resolve(request.server)
        if current is None:
            self._refuse(request, "unknown_server", protocol.UNKNOWN_SERVER)
            return
        if current.info.passworded and not state.info.passworded:
            self._refuse(request, Verdict.AUTH_REQUIRED.value, protocol.AUTH_REQUIRED)
            return
        self.hub.join(conn, current, request.server, authenticated=current.info.passworded)
        via = "auth" if current.info.passworded else "public"
        log.info("socket.joined", conn=conn.id, server=current.info.id, users=len(current.users), via=via)
        self.metrics.joined(current.info.id, via)

    def _refuse(self, request: Connect, reason: str, message: str) -> None:
        log.info("socket.refused", conn=self.conn.id, server=request.server, reason=reason)
        self.metrics.refused(reason)
        self.hub.error(self.conn, message)
