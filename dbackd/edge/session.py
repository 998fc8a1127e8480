"""One client's session: what it asks over its socket (`connect`) and how each frame is answered.

A Session is made per socket by the socket endpoint (websocket.py), which gives it two
functions into the fan-out side: `send` (one message to this socket) and `join` (make
this socket a member of a server, its join frame first). It parses the client's frames
(protocol.py), asks the world, the access rules and the host program's callbacks (its
hook before a join, its client id), and decides what to send and whom to let in. It
never writes to a socket itself, and knows nothing of the other sockets.

What one client sends costs that client only: its frames and its joins each pass a token
bucket (`limits.frames_per_second`, `limits.joins_per_second`); past the frame rate it
gets one error and its socket is closed (1008), a join past the join rate is answered
with an error and not carried out. Repeated bad input is logged once a minute with a
count. A join is decided under the config in force when it happens: if the config
changed while the access check awaited (a reload took the user off the rules, or gave
the id to another server), the check runs again under the new one.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Optional, Protocol

import structlog
from aiohttp import WSMessage, WSMsgType

from dbackd.fanout import protocol
from dbackd.edge.access import Access, Verdict
from dbackd.sources.callbacks import Callbacks
from dbackd.config import Server
from dbackd.ops.logs import PerAddress
from dbackd.ops.metrics import Metrics
from dbackd.fanout.protocol import ClientError, Connect, Outgoing
from dbackd.core.rates import Bucket, Tally
from dbackd.core.world import ServerState, World

log = structlog.get_logger("dbackd.session")

CLOSE_POLICY = 1008
LOG_WINDOW = 60.0  # seconds between two log lines about one socket's repeated bad input
MAX_CHECKS = 3  # access checks for one join when the config keeps changing under them
LOGGED_CHARS = 64  # of a client's free text (the server it asked for) in a log line

_REFUSALS = {
    Verdict.AUTH_FAILED: protocol.AUTH_FAILED,
    Verdict.AUTH_REQUIRED: protocol.AUTH_REQUIRED,
    Verdict.THROTTLED: protocol.AUTH_FAILED,
}


class Socket(Protocol):
    """What a session knows of its socket (the hub's Connection): which one, and whether it is open."""

    @property
    def id(self) -> int: ...

    @property
    def open(self) -> bool: ...


Send = Callable[[Outgoing], None]
"""One message to this socket, after everything it was sent before."""

Join = Callable[[ServerState, str, Callable[[], Optional[ServerState]]], Awaitable[Optional[ServerState]]]
"""Join this socket to a server: `join(state, request_server, decide)` gets `state`'s join ready
(awaiting, a slice per loop turn), then asks `decide()` which server to join now (None: none),
joins it (a passworded one as authenticated) and returns it, or None."""


class Session:
    def __init__(self, conn: Socket, world: World, send: Send, join: Join, access: Access,
                 callbacks: Callbacks, metrics: Metrics, address: Optional[str] = None,
                 lines: Optional[PerAddress] = None):
        self.conn = conn  # its id and whether it is open; written to only through `send` and `join`
        self.world = world
        self.send = send
        self.join = join
        self.access = access
        self.callbacks = callbacks
        self.metrics = metrics
        self.address = address  # the client's (forwarded, behind a trusted proxy)
        self.lines = lines or PerAddress(log)  # the endpoint's, shared by an address's sockets
        self.loop = asyncio.get_running_loop()
        now, limits = self.loop.time(), world.config.limits
        self._frames = Bucket(limits.frames_burst, now)
        self._joins = Bucket(limits.joins_burst, now)
        self._bad = Tally(LOG_WINDOW)
        self._refused = Tally(LOG_WINDOW)
        self.bad_frames = 0  # frames answered with an error, over the socket's life
        self.joined = False  # joined a server at least once
        self.flooded = False  # sent too fast: to be closed (1008), nothing more it sends is worth reading

    async def receive(self, msg: WSMessage) -> bool:
        """Handle one frame from the client; False when the socket is done (a transport error, a flood:
        then `flooded`, and the endpoint closes it)."""
        conn = self.conn
        limits = self.world.config.limits
        if self._frames.take(self.loop.time(), limits.frames_per_second, limits.frames_burst):
            log.warning("socket.flooded", conn=conn.id, peer=self.address, limit=limits.frames_per_second)
            self.error(protocol.TOO_FAST)
            self.flooded = True
            return False
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
            self.send(Outgoing.pong(msg.data))
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
            limits = self.world.config.limits
            if self._joins.take(self.loop.time(), limits.joins_per_second, limits.joins_burst):
                self._refuse(request, "too_many_joins", protocol.TOO_MANY_JOINS)
                return
            await self.connect(request)

    def _bad_frame(self, reason: str) -> None:
        self.bad_frames += 1
        count = self._bad.note(self.loop.time())
        if count:
            log.info("socket.bad_frame", conn=self.conn.id, reason=reason, count=count)
        self.error(reason)

    def error(self, message: str) -> None:
        self.send(Outgoing.of(protocol.error(message)))

    async def connect(self, request: Connect) -> None:
        world = self.world
        await self.callbacks.before_join(request.server)  # the host program's hook may refresh the world first
        await world.current()  # a cluster node catching up answers with the current state, not a stale one
        state = world.resolve(request.server)
        if state is None:
            self._refuse(request, "unknown_server", protocol.UNKNOWN_SERVER)
            return
        # A second connect moves the socket once it is let in; refused, it stays where it is
        # (the d-zone frontend, showing a world, stays on it after an error).
        for _ in range(MAX_CHECKS):
            checked = state.info  # ServerState.info is replaced in place by a reload: keep what was checked
            verdict = await self.access.check(checked, request, self.address)
            if verdict is not Verdict.ALLOWED:
                self._refuse(request, verdict.value, _REFUSALS[verdict])
                return
            if self.callbacks.has("on_get_client_id"):
                await self.callbacks.ask_client_id(state)
            joined = await self.join(state, request.server, lambda: self._still(request.server, checked))
            if joined is not None:
                self.joined = True
                via = "auth" if joined.info.passworded else "public"
                self.lines.info("socket.joined", self.address, conn=self.conn.id, server=joined.info.id,
                                users=len(joined.users), via=via)
                self.metrics.joined(joined.info.id, via)
                return
            if not self.conn.open:
                return
            current = world.resolve(request.server)
            if current is None:
                self._refuse(request, "unknown_server", protocol.UNKNOWN_SERVER)
                return
            state = current
        self._refuse(request, "config_changing", protocol.AUTH_REQUIRED)

    def _still(self, request_server: str, checked: Server) -> Optional[ServerState]:
        """The server to join now, if the id still names the one checked under the same rules: the checks
        and the join's preparation awaited, and a reload may have moved the id or changed who gets in."""
        if not self.conn.open:
            return None
        current = self.world.resolve(request_server)
        if current is not None and current.snowflake == checked.snowflake and current.info.gate == checked.gate:
            return current
        return None

    def _refuse(self, request: Connect, reason: str, message: str) -> None:
        count = self._refused.note(self.loop.time())
        if count:
            log.info("socket.refused", conn=self.conn.id, server=request.server[:LOGGED_CHARS], reason=reason,
                     count=count)
        self.metrics.refused(reason)
        self.error(message)
