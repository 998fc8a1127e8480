"""The hub: the only code that writes to client sockets.

It keeps every open connection and, per server, the connections joined to it. A world
event is encoded once and the same frame bytes are written to each member's
transport without awaiting, so no client waits on another. Each socket's outbound
buffer is bounded: a client that falls behind past `limits.send_buffer_bytes` is
disconnected (1013) instead of growing memory. The hub changes no world state.
"""
from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Optional

import structlog
from aiohttp import web

from . import protocol
from .config import Limits
from .events import Event, ServerClosed, ServerListChanged
from .protocol import Outgoing
from .world import ServerState, World

log = structlog.get_logger("dbackd.hub")

_ids = itertools.count(1)

CLOSE_TRY_AGAIN_LATER = 1013
_SLOW_CLOSE_GRACE = 2.0  # seconds a dropped slow client gets to take its close frame


class Connection:
    """One client socket as the hub sees it."""

    __slots__ = ("id", "ws", "transport", "peer", "server", "authenticated", "dropped", "frames")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request):
        self.id = next(_ids)
        self.ws = ws
        self.transport = request.transport
        self.peer = request.remote
        self.server: Optional[str] = None  # snowflake of the joined server
        self.authenticated: Optional[str] = None  # snowflake this socket proved access to
        self.dropped = False
        self.frames = 0

    @property
    def open(self) -> bool:
        return not self.dropped and self.transport is not None and not self.transport.is_closing()


class Hub:
    def __init__(self, world: World, limits: Limits):
        self.world = world
        self.limits = limits
        self.connections: set[Connection] = set()
        self.members: dict[str, set[Connection]] = {}
        self.frames_sent = 0
        self.slow_dropped = 0
        self._aborts: dict[Connection, asyncio.TimerHandle] = {}
        world.subscribe(self.on_event)

    # -- membership ----------------------------------------------------------------
    def add(self, conn: Connection) -> None:
        """A socket opened: it gets the server list first (the client relies on it)."""
        self.connections.add(conn)
        self.send(conn, Outgoing.of(protocol.server_list(self.world.server_list())))

    def remove(self, conn: Connection) -> None:
        self.leave(conn)
        self.connections.discard(conn)
        handle = self._aborts.pop(conn, None)
        if handle is not None:
            handle.cancel()

    def join(self, conn: Connection, state: ServerState, request_server: str, authenticated: bool) -> None:
        """Send server-join from the world's current state and make the socket a member.

        Both happen without yielding, so the socket sees every later event of the
        server exactly once and nothing from before its snapshot.
        """
        self.leave(conn)
        conn.authenticated = state.snowflake if authenticated else None
        message = protocol.server_join(state.users_json(), request_server, state.info.name, state.client_id)
        if self.send(conn, message):
            conn.server = state.snowflake
            self.members.setdefault(state.snowflake, set()).add(conn)

    def leave(self, conn: Connection) -> None:
        if conn.server is not None:
            members = self.members.get(conn.server)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.members[conn.server]
        conn.server = None
        conn.authenticated = None

    def error(self, conn: Connection, message: str) -> None:
        self.send(conn, Outgoing.of(protocol.error(message)))

    def count(self, server: str) -> int:
        return len(self.members.get(server, ()))

    # -- fan-out -------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if isinstance(event, ServerListChanged):
            self.broadcast_all(Outgoing.of(protocol.server_list(self.world.server_list())))
            return
        if isinstance(event, ServerClosed):
            self._close_server(event)
            return
        if not self.members.get(getattr(event, "server", "")):
            return  # nobody watches this server: nothing to encode
        message = protocol.for_event(event)
        if message is not None:
            self.broadcast(event.server, Outgoing.of(message))  # type: ignore[union-attr]

    def broadcast(self, server: str, message: Outgoing) -> int:
        """Write one encoded message to every member of a server; returns how many got it."""
        members = self.members.get(server)
        if not members:
            return 0
        state = self.world.servers.get(server)
        private = state is not None and state.info.passworded
        sent = 0
        for conn in list(members):
            if private and conn.authenticated != server:
                # Never let a private server's events reach a socket that did not prove access.
                self.leave(conn)
                continue
            sent += self.send(conn, message)
        return sent

    def broadcast_all(self, message: Outgoing) -> int:
        return sum(self.send(conn, message) for conn in list(self.connections))

    def send(self, conn: Connection, message: Outgoing) -> bool:
        """Write a frame to one socket, or drop the socket if it is too far behind."""
        if not conn.open:
            return False
        transport = conn.transport
        if transport.get_write_buffer_size() + len(message.frame) > self.limits.send_buffer_bytes:
            self._drop_slow(conn)
            return False
        transport.write(message.frame)
        conn.frames += 1
        self.frames_sent += 1
        return True

    def _close_server(self, event: ServerClosed) -> None:
        text = protocol.SERVER_GONE if event.removed else protocol.SERVER_PRIVATE
        notice = Outgoing.of(protocol.error(text))
        for conn in list(self.members.get(event.server, ())):
            if event.removed or conn.authenticated != event.server:
                self.leave(conn)
                self.send(conn, notice)

    def _drop_slow(self, conn: Connection) -> None:
        conn.dropped = True
        self.slow_dropped += 1
        self.leave(conn)
        log.warning("socket.dropped_slow", conn=conn.id, peer=conn.peer,
                    buffered=conn.transport.get_write_buffer_size(), limit=self.limits.send_buffer_bytes)
        reason = b"client too slow"
        close = struct.pack("!BB", 0x88, 2 + len(reason)) + struct.pack("!H", CLOSE_TRY_AGAIN_LATER) + reason
        conn.transport.write(close)
        # The close frame waits behind the unread backlog; abort if it is not taken soon.
        self._aborts[conn] = asyncio.get_running_loop().call_later(_SLOW_CLOSE_GRACE, self._abort, conn)

    def _abort(self, conn: Connection) -> None:
        self._aborts.pop(conn, None)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()

    # -- shutdown ------------------------------------------------------------------
    async def close_all(self, code: int, message: str, timeout: float = 2.0) -> None:
        """Close every socket with a close frame; used on shutdown."""
        for handle in self._aborts.values():
            handle.cancel()
        self._aborts.clear()
        conns = list(self.connections)
        for conn in conns:
            self.leave(conn)
        closing = [asyncio.ensure_future(c.ws.close(code=code, message=message.encode())) for c in conns]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=timeout)
            for task in pending:
                task.cancel()
            for conn in conns:
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.abort()
