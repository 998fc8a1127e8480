"""The hub: the only code that decides what each client socket is sent, and when it is closed.

It keeps every open connection and, per server, the connections joined to it. A world
event is encoded once and the same frame bytes are written to each member's wire
without awaiting, so no client waits on another; events that arrive in the same loop
iteration go out together, one write per socket. Each socket's outbound buffer is
bounded: a client that falls behind past `limits.send_buffer_bytes` is disconnected
(1013) instead of growing memory. Bytes reach a socket only through its Wire
(wire.py). The hub changes no world state; it follows config changes (its limits) as
`ConfigReplaced` events.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Optional, Sequence

import structlog

from dbackd.fanout import protocol
from dbackd.core.events import ConfigReplaced, Event, PresenceChanged, ServerClosed, ServerListChanged
from dbackd.fanout.joins import Joins
from dbackd.fanout.protocol import Outgoing
from dbackd.core.tasks import cancel_and_wait
from dbackd.fanout.wire import CLOSE_GRACE, Wire
from dbackd.core.world import ServerState, World

log = structlog.get_logger("dbackd.hub")

_ids = itertools.count(1)

CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
SILENT_INTERVALS = 3  # heartbeat intervals without a frame or pong before a socket is closed
WRITES_PER_TURN = 250  # socket writes per event-loop turn while a broadcast goes out


class Connection:
    """One client socket as the hub sees it: its wire, and which server it is joined to."""

    __slots__ = ("id", "wire", "peer", "server", "authenticated", "frames", "staged", "last_seen", "oversize")

    def __init__(self, wire: Wire, peer: Optional[str]):
        self.id = next(_ids)
        self.wire = wire
        self.peer = peer
        self.server: Optional[str] = None  # snowflake of the joined server
        self.authenticated: Optional[str] = None  # snowflake this socket proved access to
        self.frames = 0
        self.staged = 0  # writes for this socket waiting in the hub's work queue
        self.last_seen = asyncio.get_running_loop().time()  # when a frame last came from the client
        self.oversize = 0  # size of a message bigger than the buffer limit still being taken (a big join)

    @property
    def open(self) -> bool:
        return self.wire.open


class _Batch:
    """The same bytes for a list of sockets; `done` of them written so far.

    One object per broadcast rather than one per socket: a fan-out to 10,000 sockets
    allocates (and leaves for the garbage collector) almost nothing.
    """

    __slots__ = ("conns", "data", "messages", "done")

    def __init__(self, conns: list[Connection], data: bytes, messages: Sequence[Outgoing]):
        self.conns = conns
        self.data = data
        self.messages = messages
        self.done = 0


class Hub:
    def __init__(self, world: World):
        self.world = world
        self.joins = Joins(world)  # the join frames, kept current from the same events
        self.limits = world.config.limits
        self.connections: set[Connection] = set()
        self.members: dict[str, set[Connection]] = {}
        self.frames_sent = 0
        self.slow_dropped = 0
        # Broadcasts wait here until the end of the loop iteration (or until the batch
        # going out is done), so events that arrive together reach each socket in one
        # write: one system call, not one per event.
        self._queue: list[tuple[Optional[str], Outgoing]] = []  # (server, or None: everyone)
        self._work: deque[_Batch] = deque()  # staged writes, in order
        self._flush_scheduled = False
        self._closing: Optional[tuple[int, bytes]] = None  # (code, reason) once close_all has begun
        world.subscribe(self.on_event)

    # -- membership ----------------------------------------------------------------
    # Every membership change stages queued broadcasts first (recipients are fixed at
    # that moment), so each socket gets exactly the events of the time it was a member.

    def add(self, conn: Connection) -> None:
        """A socket opened: it gets the server list first (the client relies on it). Once
        `close_all` has begun, it is closed at once with the same code instead: a socket whose
        upgrade was under way when shutdown began would otherwise be cut without one (1006)."""
        self._stage()
        self.connections.add(conn)
        if self._closing is not None:
            self.drop(conn, *self._closing)
            return
        self.send(conn, Outgoing.of(protocol.server_list(self.world.server_list())))

    def remove(self, conn: Connection) -> None:
        self.leave(conn)
        self.connections.discard(conn)

    def join(self, conn: Connection, state: ServerState, request_server: str, authenticated: bool) -> None:
        """Send server-join from the world's current state and make the socket a member.

        Both happen without yielding, so the socket sees every later event of the
        server exactly once and nothing from before its snapshot.
        """
        self.leave(conn)
        if not conn.open:
            return
        conn.authenticated = state.snowflake if authenticated else None
        for message in self.joins.messages(state, request_server):  # the join, then a big one's changes since
            self.send(conn, message)
        conn.server = state.snowflake
        self.members.setdefault(state.snowflake, set()).add(conn)

    def leave(self, conn: Connection) -> None:
        self._stage()
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
        if isinstance(event, ConfigReplaced):
            self.limits = event.config.limits  # the buffer limit and the heartbeat apply at once
            return
        if isinstance(event, ServerListChanged):
            # Not to open sockets: the d-zone frontend rejoins on every server-list and adds one
            # more "Server" button each time. New sockets get the new list when they open.
            return
        if isinstance(event, ServerClosed):
            self._close_server(event)
            return
        server = getattr(event, "server", "")
        if not self.members.get(server):
            return  # nobody watches this server: nothing to encode
        user = None
        if isinstance(event, PresenceChanged) and event.renamed:
            live = self.world.servers[server].users.get(event.uid)
            user = protocol.entry(live) if live is not None else None
        for message in protocol.frames_for(event, user):
            self.broadcast(server, Outgoing.of(message))

    def broadcast(self, server: str, message: Outgoing) -> None:
        """Queue one encoded message for every member of a server."""
        self._enqueue(server, message)

    def broadcast_all(self, message: Outgoing) -> None:
        """Queue one encoded message for every open socket."""
        self._enqueue(None, message)

    def _enqueue(self, target: Optional[str], message: Outgoing) -> None:
        self._queue.append((target, message))
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool driving the world directly): write now
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush_some)

    def _flush_some(self) -> None:
        """The scheduled flush: at most WRITES_PER_TURN writes, then let the loop breathe.

        A broadcast to 10,000 sockets is 10,000 system calls; done in slices, accepts,
        joins and pings keep being served while it goes out. Events that arrive while a
        batch is going out wait for it and then go out together, one write per socket for
        all of them: under load each system call carries more frames.
        """
        self._flush_scheduled = False
        if not self._work:
            self._stage()
        self._drain(WRITES_PER_TURN)
        if self._work or self._queue:
            self._schedule()

    def flush(self) -> None:
        """Write everything queued and in progress, now (before any change of membership)."""
        self._stage()
        self._drain(None)

    def _stage(self) -> None:
        """Turn queued broadcasts into per-socket writes; each socket gets its frames in one write."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        work = self._work
        target = queue[0][0]
        if all(t == target for t, _ in queue):
            # The common case: one server's events. Join the frames once for everyone.
            messages = [m for _, m in queue]
            data = messages[0].frame if len(messages) == 1 else b"".join(m.frame for m in messages)
            recipients = self._recipients(target)
            if recipients:
                for conn in recipients:
                    conn.staged += 1
                work.append(_Batch(recipients, data, messages))
            return
        per_conn: dict[Connection, list[Outgoing]] = {}
        for target, message in queue:
            for conn in self._recipients(target):
                per_conn.setdefault(conn, []).append(message)
        for conn, messages in per_conn.items():
            conn.staged += 1
            work.append(_Batch([conn], b"".join(m.frame for m in messages), messages))

    def _drain(self, limit: Optional[int]) -> None:
        """Write staged batches in order, at most `limit` sockets' worth (None: all)."""
        work, write = self._work, self._write
        budget = limit if limit is not None else sum(len(b.conns) - b.done for b in work)
        while work and budget > 0:
            batch = work[0]
            conns, data, messages = batch.conns, batch.data, batch.messages
            start = batch.done
            end = min(len(conns), start + budget)
            for i in range(start, end):
                conn = conns[i]
                conn.staged -= 1
                write(conn, data, messages)
            budget -= end - start
            if end == len(conns):
                work.popleft()
            else:
                batch.done = end

    def _recipients(self, target: Optional[str]) -> list[Connection]:
        if target is None:
            return list(self.connections)
        members = self.members.get(target)
        if not members:
            return []
        state = self.world.servers.get(target)
        if state is None or not state.info.passworded:
            return list(members)
        allowed = []
        for conn in list(members):
            if conn.authenticated == target:
                allowed.append(conn)
            else:
                # Never let a private server's events reach a socket that did not prove access.
                self.leave(conn)
        return allowed

    def send(self, conn: Connection, message: Outgoing) -> None:
        """One message to one socket, after everything that socket was due before it.

        Written at once when nothing of its own is waiting (a new client's join does
        not wait behind a big broadcast to everyone else), else queued behind that.
        """
        self._stage()
        if conn.staged == 0:
            self._write(conn, message.frame, (message,))
            return
        conn.staged += 1
        self._work.append(_Batch([conn], message.frame, (message,)))
        self._schedule()

    def _write(self, conn: Connection, data: bytes, messages: Sequence[Outgoing]) -> bool:
        """Write frames to one socket, or drop the socket if it is too far behind."""
        wire = conn.wire
        if not wire.open:
            return False
        backlog, limit = wire.backlog(), self.limits.send_buffer_bytes
        if backlog <= limit:
            conn.oversize = 0
        if backlog + len(data) > limit + conn.oversize:
            if len(data) <= limit or backlog > limit:
                self._drop_slow(conn)
                return False
            # One message bigger than the limit (the join of a very big server) is let through
            # once the client has caught up; the bound then allows for it until it is taken.
            conn.oversize = len(data)
        wire.send(data, messages)
        conn.frames += len(messages)
        self.frames_sent += len(messages)
        return True

    def _close_server(self, event: ServerClosed) -> None:
        """Who may no longer see a server: one short error, then the default server's world.

        The d-zone frontend, once it shows a world, only shows an `error` and stays where it
        is; a `server-join` it takes at any time, so it ends on the default server."""
        self._stage()
        text = (protocol.SERVER_GONE if event.removed
                else protocol.ACCESS_CHANGED if event.everyone else protocol.SERVER_PRIVATE)
        notice = Outgoing.of(protocol.error(text))
        fallback = self.world.resolve("default")
        if fallback is not None and (fallback.snowflake == event.server or fallback.info.passworded):
            fallback = None  # nowhere public to go: the error alone
        for conn in list(self.members.get(event.server, ())):
            if event.removed or event.everyone or conn.authenticated != event.server:
                self.leave(conn)
                self.send(conn, notice)
                if fallback is not None:
                    self.join(conn, fallback, "default", authenticated=False)

    def _drop_slow(self, conn: Connection) -> None:
        self.slow_dropped += 1
        log.warning("socket.dropped_slow", conn=conn.id, peer=conn.peer,
                    buffered=conn.wire.backlog(), limit=self.limits.send_buffer_bytes)
        self.drop(conn, CLOSE_TRY_AGAIN_LATER, b"client too slow")

    def drop(self, conn: Connection, code: int, reason: bytes) -> None:
        """Close a socket: it leaves its server, and its wire sends one close frame after what it was sent."""
        self.leave(conn)
        conn.wire.close(code, reason)

    # -- heartbeat -----------------------------------------------------------------
    # One timer for every socket instead of one per socket (aiohttp's own heartbeat
    # costs about 1 KiB per connection), and the pings go out through the same sliced
    # writes as everything else.

    def seen(self, conn: Connection) -> None:
        """A frame came from the client: it is alive."""
        conn.last_seen = asyncio.get_running_loop().time()

    def pong(self, conn: Connection, data: bytes) -> None:
        self.send(conn, Outgoing.pong(data))

    def heartbeat(self, now: float, interval: float) -> int:
        """Drop sockets not heard from for SILENT_INTERVALS intervals, ping the rest; returns how many
        were dropped. The d-zone frontend does not reconnect to a socket that closed (it goes on to
        another address), so only a socket that missed several pings in a row is taken for dead."""
        dead = [c for c in self.connections if c.open and now - c.last_seen > SILENT_INTERVALS * interval]
        for conn in dead:
            log.info("socket.heartbeat_timeout", conn=conn.id, peer=conn.peer, silent=round(now - conn.last_seen, 1))
            self.drop(conn, CLOSE_GOING_AWAY, b"no answer to ping")
        self.broadcast_all(Outgoing.ping())
        return len(dead)

    # -- shutdown ------------------------------------------------------------------
    async def close_all(self, code: int, reason: str, grace: float = CLOSE_GRACE) -> None:
        """Close every socket with a close frame after what it was due, and every socket that
        opens from now on; used on shutdown."""
        self._closing = (code, reason.encode())
        self.flush()
        conns = list(self.connections)
        for conn in conns:
            self.drop(conn, code, reason.encode())
        closing = [asyncio.ensure_future(c.wire.closed()) for c in conns]
        if closing:
            await asyncio.wait(closing, timeout=grace + 0.5)
            await cancel_and_wait(closing, None)
        for conn in conns:
            conn.wire.abort()
