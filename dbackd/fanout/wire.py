"""The one seam between dbackd and a client's socket: the only code that writes to or closes it.

aiohttp does the handshake and reads the client's frames; everything dbackd sends goes
through a Wire. The contract with aiohttp (kept by tests/test_wire.py, which fails if an
aiohttp release breaks it; pyproject pins aiohttp to the tested range):

- The socket is created with `autoping=False`, `heartbeat=None`: aiohttp never sends a
  ping or pong of its own; the hub answers pings through the wire.
- Uncompressed sockets: server frames are never masked, so a frame's bytes are the same
  for every such socket. The wire writes those prepared bytes straight to the request's
  transport (`request.transport`, an asyncio.Transport) and never awaits. aiohttp's own
  writer writes nothing to the socket but a close frame (below), so the two never
  interleave inside a frame.
- Compressed sockets (permessage-deflate) keep a deflate context per socket: their data
  frames go through aiohttp's writer (`ws.send_frame`), in order, from one owned task.
  Control frames (ping, pong) are never compressed and are written as prepared bytes.
- Close frames are only ever written by `ws.close()`, which aiohttp guards so that it
  sends at most one (its `closed` flag is set before the frame is written). dbackd calls
  it from one place, `Wire.close`; aiohttp calls it itself when the client closes, when
  a client frame breaks the protocol (too big: 1009) and when the handler returns.
- Once either side started closing (`Wire.close` was called, or `ws.closed` is true),
  the wire writes nothing more. A close that does not finish within its grace (a client
  that stopped reading) ends with `transport.abort()`.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Optional, Sequence

from aiohttp import WSMsgType, web

from dbackd.fanout.protocol import Outgoing
from dbackd.core.tasks import cancel_and_wait

CLOSE_GRACE = 2.0  # seconds a close may take (the client reading what is due and the close frame)


class _Outbox:
    """Ordered data frames of a compressed socket, sent through aiohttp's writer by one owned task."""

    __slots__ = ("ws", "queue", "bytes", "_wake", "_task")

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.queue: deque[bytes] = deque()
        self.bytes = 0
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = asyncio.get_running_loop().create_task(self._drain())

    def put(self, payload: bytes) -> None:
        self.queue.append(payload)
        self.bytes += len(payload)
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                payload = self.queue.popleft()
                self.bytes -= len(payload)
                await self.ws.send_frame(payload, WSMsgType.TEXT)

    async def finish(self) -> None:
        """Send nothing more; a frame already being compressed completes first (aiohttp shields it)."""
        self.queue.clear()
        self.bytes = 0
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task], None)


class Wire:
    __slots__ = ("ws", "transport", "_outbox", "_closing")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport):
        """`ws` must be prepared, with autoping=False and no heartbeat; `transport` is the request's."""
        self.ws = ws
        self.transport = transport
        self._outbox: Optional[_Outbox] = _Outbox(ws) if ws.compress else None
        self._closing: Optional[asyncio.Task] = None

    @property
    def open(self) -> bool:
        """True while frames may still be written: nobody has begun to close the socket."""
        return self._closing is None and not self.ws.closed and not self.transport.is_closing()

    def backlog(self) -> int:
        """Bytes written for this client that it has not taken yet."""
        queued = self._outbox.bytes if self._outbox is not None else 0
        return self.transport.get_write_buffer_size() + queued

    def send(self, data: bytes, messages: Sequence[Outgoing]) -> None:
        """Write frames: `data` is the concatenation of the messages' frames. Never awaits."""
        if not self.open:
            return
        if self._outbox is None:
            self.transport.write(data)
            return
        for message in messages:
            if message.control:
                self.transport.write(message.frame)
            else:
                self._outbox.put(message.payload)

    def close(self, code: int, reason: bytes = b"", grace: float = CLOSE_GRACE) -> None:
        """Begin closing with one close frame after what was already written; the rest happens in the background."""
        if self._closing is not None or self.ws.closed:
            return
        self._closing = asyncio.get_running_loop().create_task(self._close(code, reason[:123], grace),
                                                               name="dbackd.wire.close")

    async def _close(self, code: int, reason: bytes, grace: float) -> None:
        try:
            await asyncio.wait_for(self._close_frame(code, reason), grace)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            # A client that does not take what it was sent (or is gone): let go of the socket.
            self.transport.abort()

    async def _close_frame(self, code: int, reason: bytes) -> None:
        if self._outbox is not None:
            await self._outbox.finish()
        await self.ws.close(code=code, message=reason)

    async def release(self) -> None:
        """The socket's handler has ended: stop the compressed sender if the socket was not closed by us."""
        if self._outbox is not None and self._closing is None:
            await self._outbox.finish()

    async def closed(self) -> None:
        """Wait for a close begun with `close()` to end (at most its grace)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)

    def abort(self) -> None:
        """Cut the connection now, whatever is still buffered (shutdown, after the grace)."""
        self.transport.abort()

