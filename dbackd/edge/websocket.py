"""The socket endpoint: the upgrade, the reader loop of each client, and its end.

For each upgrade it prepares aiohttp's WebSocketResponse (as wire.py's contract asks,
within `limits.handshake_timeout`), gives the socket a Wire and a Connection in the hub
(which sends the server list first, once the host program's hook before the server
list, if any, has run), and hands every frame the client sends to that socket's Session,
yielding to the loop after each one: frames a client sent in one burst are buffered by
aiohttp and would otherwise be worked through without a pause, holding every other
client up. A socket through a trusted proxy is counted by the address it was forwarded
for (peers.py); one that has not joined a server within `limits.join_timeout` is closed
(1008). Only this handler task reads from the socket. It sends nothing itself.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Optional

import structlog
from aiohttp import web

from dbackd.edge.access import Access
from dbackd.edge.door import stop_reading
from dbackd.sources.callbacks import Callbacks
from dbackd.fanout.hub import Connection, Hub
from dbackd.ops.metrics import Metrics
from dbackd.edge.peers import Peers, client_address
from dbackd.edge.session import CLOSE_POLICY, Join, Send, Session
from dbackd.fanout.wire import Wire
from dbackd.ops.logs import PerAddress
from dbackd.core.world import ServerState, World

log = structlog.get_logger("dbackd.web")

CLOSE_INTERNAL_ERROR = 1011


class Refusal(web.Response):
    """A socket refused past a limit: logged as such already (web.py writes no `http.error` for it)."""


class SocketEndpoint:
    def __init__(self, world: World, hub: Hub, access: Access, callbacks: Callbacks, metrics: Metrics,
                 peers: Optional[Peers] = None):
        self.world = world
        self.hub = hub
        self.access = access
        self.callbacks = callbacks
        self.metrics = metrics
        self.peers = peers or Peers(world)
        self.lines = PerAddress(log)  # what one address's sockets do, once a minute with a count

    def paths(self) -> set[str]:
        """Where the upgrade is accepted: /ws, / and <mount>/ws of every static mount (they change on reload)."""
        return {"/", "/ws"} | {m.ws_path for m in self.world.config.static}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # One coroutine for the whole life of a socket: each frame of it is held while the socket lives.
        config = self.world.config
        listen, limits = config.listen, config.limits
        forwarded = listen.trusts(request.remote)
        address = client_address(listen, request.remote, request.headers.get("X-Forwarded-For"))
        if not self.peers.may_open_socket(address):
            self._refused(address, "socket_rate")
            return Refusal(status=429, text="Too many new sockets", headers={"Retry-After": "5"})
        if forwarded and self.peers.admit_forwarded(address) is not None:
            self._refused(address, "address_full")
            return Refusal(status=503, text="Too many connections", headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(
            autoping=False,  # pings, pongs and the heartbeat go through the hub (see wire.py)
            heartbeat=None,
            max_msg_size=limits.max_message_bytes,
            compress=config.websocket.compression,
        )
        conn: Optional[Connection] = None
        overdue: Optional[asyncio.TimerHandle] = None
        try:
            transport = request.transport
            if transport is None:  # the client went away before its upgrade was answered
                return ws
            loop = asyncio.get_running_loop()
            # A deadline on the transport rather than wait_for: no task of its own per connection,
            # which would cost memory and loop turns in every join.
            deadline = loop.call_later(limits.handshake_timeout, transport.abort)
            try:
                await ws.prepare(request)
            except ConnectionError:  # aborted at the deadline, or gone during the handshake
                return ws
            finally:
                deadline.cancel()
            transport = request.transport
            if transport is None:
                return ws
            conn = Connection(Wire(ws, transport), address)
            session = Session(conn, self.world, self._sender(conn), self._joiner(conn), self.access, self.callbacks,
                              self.metrics, address, self.lines)
            self.lines.info("socket.opened", conn.peer, conn=conn.id, path=request.path)
            if limits.join_timeout:
                overdue = loop.call_later(limits.join_timeout, self._join_overdue, session)
            await self.callbacks.before_server_list()
            self.hub.add(conn)
            async for msg in ws:
                self.hub.seen(conn)
                try:
                    more = await session.receive(msg)
                except Exception:  # a frame that breaks the session must not leave the socket half served
                    log.exception("socket.failed", conn=conn.id)
                    self.hub.drop(conn, CLOSE_INTERNAL_ERROR, b"internal error")
                    break
                if not more:
                    if session.flooded:
                        self.hub.drop(conn, CLOSE_POLICY, b"too many messages")
                        stop_reading(transport)
                    break
                if overdue is not None and session.joined:
                    overdue.cancel()  # joined: the deadline is met, and a cancelled handle is freed early
                    overdue = None
                await asyncio.sleep(0)  # one frame per loop turn: a client's burst never holds the others up
        finally:
            if overdue is not None:
                overdue.cancel()
            if conn is not None:
                self.hub.remove(conn)
                await conn.wire.closed()  # a close the hub began ends with its own code, not the handler's 1000
                await conn.wire.release()
                self.lines.info("socket.closed", address, conn=conn.id, code=ws.close_code, frames=conn.frames,
                                **({"bad_frames": session.bad_frames} if session.bad_frames else {}))
            if forwarded:
                self.peers.release_forwarded(address)
        return ws

    def _refused(self, address: Optional[str], reason: str) -> None:
        self.metrics.connection_refused(reason)
        self.lines.info("socket.refused_address", address, reason=reason)

    def _sender(self, conn: Connection) -> Send:
        return lambda message: self.hub.send(conn, message)

    def _joiner(self, conn: Connection) -> Join:
        hub = self.hub

        async def join(state: ServerState, request_server: str,
                       decide: Callable[[], Optional[ServerState]]) -> Optional[ServerState]:
            await hub.joins.ready(state, request_server)  # a big server's join, a slice per loop turn
            target = decide()
            if target is None or not conn.open:
                return None
            hub.join(conn, target, request_server, authenticated=target.info.passworded)
            return target

        return join

    def _join_overdue(self, session: Session) -> None:
        if session.joined or not session.conn.open:
            return
        log.info("socket.join_timeout", conn=session.conn.id, peer=session.address)
        self.hub.drop(session.conn, CLOSE_POLICY, b"no server joined in time")
