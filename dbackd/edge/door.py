"""The door: every accepted connection is counted, or answered 503 and closed, before aiohttp sees it.

Wraps the protocol factory of aiohttp's low-level server (what `loop.create_server`
takes). An admitted connection is handed to aiohttp's protocol unchanged; one past
`limits.max_connections`, or past `limits.max_connections_per_address` from one peer,
gets a short 503 and is closed once its request has arrived (or after a second), so
the client reads the answer rather than a reset. Refusals are logged once per window
with a count. An admitted connection whose first request head (up to its blank line)
has not arrived within `limits.header_timeout` is closed: aiohttp times out idle
connections between requests, but not every release in the supported range does so
before the first. With `listen.tls` the door speaks TLS itself (asyncio's protocol, with a
16 KiB read buffer instead of its 256 KiB), so a connection is counted at accept, before
its handshake; one past a cap is closed at once, as no answer could be read before a
handshake. It knows nothing of HTTP beyond that one answer and that blank line.
"""
from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any, Callable, Optional

import structlog

from dbackd.edge.peers import Peers
from dbackd.core.rates import Tally
from dbackd.core.world import World

log = structlog.get_logger("dbackd.web")

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
           b"Retry-After: 5\r\nConnection: close\r\n\r\nToo many connections")
READ_BYTES = 16 * 1024  # read from a connection at once (a TLS record's size; asyncio's default is 256 KiB)
LINGER = 1.0  # seconds a refused connection is kept for its request to arrive
LOG_WINDOW = 60.0  # seconds between two log lines about refusals


class Door:
    def __init__(self, world: World, peers: Peers, on_refused: Optional[Callable[[str], None]] = None):
        self.world = world
        self.peers = peers
        self.on_refused = on_refused  # (reason) for each refusal, e.g. for metrics
        self._tally = Tally(LOG_WINDOW)

    def wrap(self, factory: Callable[[], asyncio.Protocol], tls: Optional[ssl.SSLContext] = None,
             handshake_timeout: float = 10.0) -> Callable[[], asyncio.BaseProtocol]:
        """The factory for `loop.create_server` (given no `ssl`: with `tls`, the door speaks it)."""
        if tls is None:
            return lambda: _Guarded(self, factory)
        return lambda: _TlsGuarded(self, factory, tls, handshake_timeout)

    def refused(self, peer: Optional[str], reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)
        count = self._tally.note(asyncio.get_running_loop().time())
        if count:
            log.warning("connection.refused", peer=peer, reason=reason, count=count,
                        connections=self.peers.total)


def stop_reading(transport: asyncio.BaseTransport) -> None:
    """Take nothing more from a connection closed for abuse: reading stops, and whatever
    still arrives is dropped before aiohttp parses it (a flood would otherwise be read and
    thrown away, frame by frame, for as long as the close takes)."""
    protocol = transport.get_protocol()
    if isinstance(protocol, _Guarded):
        protocol.deaf = True
    if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
        transport.pause_reading()


def _admit(door: Door, transport: asyncio.BaseTransport) -> tuple[Optional[str], bool, Optional[str]]:
    """Count a new connection: the peer's address, whether it is counted by it (a trusted
    proxy's clients are counted by forwarded address later), and why it is refused, if it is."""
    peername = transport.get_extra_info("peername")
    peer = peername[0] if isinstance(peername, tuple) and peername else None
    listen = door.world.config.listen
    counted = not listen.trusts(peer)
    return peer, counted, door.peers.admit(peer, counted, listen.operator(peer))


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol behind the door: created only for an admitted connection.

    `admitted`: the connection was counted already (by the TLS guard, at accept); this
    one then keeps only the first request head's deadline."""

    __slots__ = ("door", "factory", "inner", "peer", "counted_address", "transport", "admitted", "deaf",
                 "_linger", "_head", "_tail")

    def __init__(self, door: Door, factory: Callable[[], asyncio.Protocol], admitted: bool = False):
        self.door = door
        self.factory = factory
        self.inner: Optional[asyncio.Protocol] = None
        self.peer: Optional[str] = None
        self.counted_address = True
        self.transport: Optional[asyncio.BaseTransport] = None
        self.admitted = admitted
        self.deaf = False  # what the client sends is dropped unread (see stop_reading)
        self._linger: Optional[asyncio.TimerHandle] = None
        self._head: Optional[asyncio.TimerHandle] = None  # the first request head's deadline
        self._tail = b""  # the last bytes seen while looking for the head's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.admitted:
            reason = None
        else:
            self.peer, self.counted_address, reason = _admit(self.door, transport)
        if reason is not None:
            self.door.refused(self.peer, reason)
            self.transport = transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSAL)
            self._linger = asyncio.get_running_loop().call_later(LINGER, transport.close)
            return
        self.transport = transport
        if not self.admitted and hasattr(transport, "max_size"):
            # asyncio reads up to 256 KiB at once and aiohttp parses all of it in one go: from a
            # client sending thousands of tiny frames, that is one long stall for everyone else.
            transport.max_size = READ_BYTES
        timeout = self.door.world.config.limits.header_timeout
        self._head = asyncio.get_running_loop().call_later(timeout, self._head_overdue)
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def _head_overdue(self) -> None:
        self._head = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.deaf:
            return
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
        if not self.admitted:
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


class _SmallTls(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a 16 KiB read buffer instead of 256 KiB: one TLS record
    at most is 16 KiB, and a socket that sits idle should not hold a quarter MiB."""

    max_size = 16 * 1024


class _TlsGuarded(asyncio.BufferedProtocol):
    """A TLS connection behind the door: counted (or refused) at accept, before its handshake,
    so stalled handshakes take up an address's and the total's room like any connection.
    The handshake and the encryption are asyncio's; aiohttp's protocol sits inside, behind a
    `_Guarded` that keeps the first request head's deadline."""

    __slots__ = ("door", "factory", "context", "handshake_timeout", "peer", "counted_address", "tls")

    def __init__(self, door: Door, factory: Callable[[], asyncio.Protocol], context: ssl.SSLContext,
                 handshake_timeout: float):
        self.door = door
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.peer: Optional[str] = None
        self.counted_address = True
        self.tls: Optional[_SmallTls] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer, self.counted_address, reason = _admit(self.door, transport)
        if reason is not None:
            # No handshake is begun, so a plain answer could not be read: the client sees a closed connection.
            self.door.refused(self.peer, reason)
            transport.abort()
            return
        inner = _Guarded(self.door, self.factory, admitted=True)
        self.tls = _SmallTls(asyncio.get_running_loop(), inner, self.context, None, server_side=True,
                             ssl_handshake_timeout=self.handshake_timeout)
        self.tls.connection_made(transport)

    def get_buffer(self, sizehint: int) -> Any:
        if self.tls is None:
            return bytearray(1)  # only for a refused connection, which is being aborted
        return self.tls.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.tls is not None:
            self.tls.buffer_updated(nbytes)

    def eof_received(self) -> Optional[bool]:
        return self.tls.eof_received() if self.tls is not None else None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.tls is None:
            return
        self.door.peers.release(self.peer, self.counted_address)
        self.tls.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.tls is not None:
            self.tls.pause_writing()

    def resume_writing(self) -> None:
        if self.tls is not None:
            self.tls.resume_writing()
