"""The door: every accepted connection is counted, or answered 503 and closed, before aiohttp sees it.

Wraps the protocol factory of aiohttp's low-level server (what `loop.create_server`
takes). An admitted connection is handed to aiohttp's protocol unchanged; one past
`limits.max_connections`, or past `limits.max_connections_per_address` from one peer,
gets a short 503 and is closed once its request has arrived (or after a second), so
the client reads the answer rather than a reset. Refusals are logged once per window
with a count. An admitted connection whose first request head (up to its blank line)
has not arrived within `limits.header_timeout` is closed: aiohttp times out idle
connections between requests, but not every release in the supported range does so
before the first. It knows nothing of HTTP beyond that one answer and that blank line.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import structlog

from dbackd.edge.peers import Peers
from dbackd.core.rates import Tally
from dbackd.core.world import World

log = structlog.get_logger("dbackd.web")

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
           b"Retry-After: 5\r\nConnection: close\r\n\r\nToo many connections")
LINGER = 1.0  # seconds a refused connection is kept for its request to arrive
LOG_WINDOW = 60.0  # seconds between two log lines about refusals


class Door:
    def __init__(self, world: World, peers: Peers, on_refused: Optional[Callable[[str], None]] = None):
        self.world = world
        self.peers = peers
        self.on_refused = on_refused  # (reason) for each refusal, e.g. for metrics
        self._tally = Tally(LOG_WINDOW)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory)

    def refused(self, peer: Optional[str], reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)
        count = self._tally.note(asyncio.get_running_loop().time())
        if count:
            log.warning("connection.refused", peer=peer, reason=reason, count=count,
                        connections=self.peers.total)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol behind the door: created only for an admitted connection."""

    __slots__ = ("door", "factory", "inner", "peer", "counted_address", "transport", "_linger", "_head",
                 "_tail")

    def __init__(self, door: Door, factory: Callable[[], asyncio.Protocol]):
        self.door = door
        self.factory = factory
        self.inner: Optional[asyncio.Protocol] = None
        self.peer: Optional[str] = None
        self.counted_address = True
        self.transport: Optional[asyncio.BaseTransport] = None
        self._linger: Optional[asyncio.TimerHandle] = None
        self._head: Optional[asyncio.TimerHandle] = None  # the first request head's deadline
        self._tail = b""  # the last bytes seen while looking for the head's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) and peername else None
        peers = self.door.peers
        # A trusted proxy carries many clients: they are counted by forwarded address later.
        self.counted_address = not self.door.world.config.listen.trusts(self.peer)
        reason = peers.admit(self.peer, self.counted_address)
        if reason is not None:
            self.door.refused(self.peer, reason)
            self.transport = transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSAL)
            self._linger = asyncio.get_running_loop().call_later(LINGER, transport.close)
            return
        self.transport = transport
        timeout = self.door.world.config.limits.header_timeout
        self._head = asyncio.get_running_loop().call_later(timeout, self._head_overdue)
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def _head_overdue(self) -> None:
        self._head = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            if self._head is not None:
                seen = self._tail + data
                if b"\r\n\r\n" in seen:
                    self._head.cancel()
                    self._head = None
                else:
                    self._tail = seen[-3:]
            self.inner.data_received(data)
        elif self.transport is not None:
            self.transport.close()  # the request has been read: closing now sends no reset

    def eof_received(self) -> Optional[bool]:
        if self.inner is not None:
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._head is not None:
            self._head.cancel()
        self.transport = None
        if self.inner is None:
            if self._linger is not None:
                self._linger.cancel()
            return
        self.door.peers.release(self.peer, self.counted_address)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def __getattr__(self, name: str) -> Any:  # anything else asked of the protocol is aiohttp's
        inner = object.__getattribute__(self, "inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)
