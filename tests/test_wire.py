"""The wire's contract with aiohttp, seen on the wire itself: every frame a client gets, close frames counted.

If an aiohttp release changes how it closes sockets (a second close frame, a frame after
the close, a close frame of its own where dbackd expects none), these fail.
"""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import zlib

import aiohttp
import pytest

from dbackd.fanout.hub import CLOSE_GOING_AWAY

from .conftest import RECV_TIMEOUT

CONFIG = """
servers:
  - {snowflake: "1", id: a, name: A, default: true, users: [{uid: "11", username: x}]}
limits: {max_message_bytes: 1024, send_buffer_bytes: 65536}
"""


class RawClient:
    """A WebSocket client on a plain socket that records every frame the server sends, in order."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.frames: list[tuple[int, bytes]] = []  # (opcode, payload), inflated
        self.eof = False
        self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)

    @classmethod
    async def open(cls, port: int, deflate: bool = False, rcvbuf: int = 0) -> "RawClient":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        await loop.sock_sendall(sock, (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n").encode())
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            await client.fill()
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def fill(self) -> None:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1 << 16), RECV_TIMEOUT)
        if not data:
            self.eof = True
            raise EOFError
        self.buffer += data

    def _parse(self) -> bool:
        b = self.buffer
        if len(b) < 2:
            return False
        opcode, compressed, length, at = b[0] & 0x0F, b[0] & 0x40, b[1] & 0x7F, 2
        assert not b[1] & 0x80, "server frames are never masked"
        if length == 126:
            if len(b) < 4:
                return False
            length, at = struct.unpack("!H", b[2:4])[0], 4
        elif length == 127:
            if len(b) < 10:
                return False
            length, at = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < at + length:
            return False
        payload = b[at:at + length]
        if compressed:  # permessage-deflate: the message's deflate block without its sync-flush tail
            payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
        self.frames.append((opcode, payload))
        self.buffer = b[at + length:]
        return True

    async def frame(self) -> tuple[int, bytes]:
        while not self._parse():
            await self.fill()
        return self.frames[-1]

    async def until_eof(self) -> list[tuple[int, bytes]]:
        """Every frame until the server closes the TCP connection."""
        try:
            while True:
                while self._parse():
                    pass
                await self.fill()
        except EOFError:
            pass
        return self.frames

    async def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        n = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def join(self) -> None:
        await self.send(0x1, b'{"type":"connect","data":{"server":"a"}}')
        while True:
            opcode, payload = await self.frame()
            if b"server-join" in payload:
                return

    def close(self) -> None:
        self.sock.close()


def closes(frames: list[tuple[int, bytes]]) -> list[int]:
    return [struct.unpack("!H", p[:2])[0] for op, p in frames if op == 0x8]


@pytest.fixture
async def raw_clients():
    opened: list[RawClient] = []

    async def open_(port: int, **kwargs) -> RawClient:
        client = await RawClient.open(port, **kwargs)
        opened.append(client)
        return client

    yield open_
    for c in opened:
        c.close()


async def broadcast_while(d, done: asyncio.Event, text: str = "x") -> None:
    while not done.is_set():
        d.world.say("a", "11", text, "c")
        await asyncio.sleep(0)


async def test_a_client_close_gets_one_close_frame_and_nothing_after(start_daemon, raw_clients):
    d = await start_daemon(text=CONFIG)
    client = await raw_clients(d.port)
    await client.join()
    done = asyncio.Event()
    talking = asyncio.ensure_future(broadcast_while(d, done))
    await asyncio.sleep(0)
    await client.send(0x8, struct.pack("!H", 1000) + b"bye")
    frames = await client.until_eof()
    done.set()
    await talking
    assert closes(frames) == [1000]
    assert frames[-1][0] == 0x8  # nothing after the close frame


async def test_a_dropped_client_gets_one_close_frame_even_when_it_answers(start_daemon, raw_clients):
    d = await start_daemon(text=CONFIG)
    client = await raw_clients(d.port)
    await client.join()
    conn = next(iter(d.hub.connections))
    d.hub.drop(conn, CLOSE_GOING_AWAY, b"test")
    d.world.say("a", "11", "after the drop", "c")  # it left the server: never sent
    opcode, payload = await client.frame()
    while opcode != 0x8:
        opcode, payload = await client.frame()
    assert struct.unpack("!H", payload[:2])[0] == CLOSE_GOING_AWAY
    await client.send(0x8, payload[:2])  # the client's own close reply
    frames = await client.until_eof()
    assert closes(frames) == [CLOSE_GOING_AWAY]
    assert not any(b"after the drop" in p for _, p in frames)


async def test_a_slow_client_gets_one_close_after_its_backlog(start_daemon, raw_clients):
    d = await start_daemon(text=CONFIG)
    client = await raw_clients(d.port, rcvbuf=4096)
    await client.join()
    for i in range(150):  # ~9 MB: more than the kernel's buffers and the 64 KiB limit, unread
        d.world.say("a", "11", f"{i}:" + "y" * 60000, "c")
        await asyncio.sleep(0)
    assert d.hub.slow_dropped == 1
    frames = await client.until_eof()  # the abort after the grace, at the latest
    assert closes(frames) in ([1013], [])  # the close frame, unless it was still behind the backlog when aborted
    if closes(frames):
        assert frames[-1][0] == 0x8


async def test_shutdown_sends_one_close_frame(start_daemon, raw_clients):
    d = await start_daemon(text=CONFIG)
    client = await raw_clients(d.port)
    await client.join()
    await d.stop()
    frames = await client.until_eof()
    assert closes(frames) == [CLOSE_GOING_AWAY] and frames[-1][0] == 0x8


async def test_a_frame_over_the_limit_is_closed_once_by_aiohttp(start_daemon, raw_clients):
    d = await start_daemon(text=CONFIG)
    client = await raw_clients(d.port)
    await client.join()
    await client.send(0x1, b"z" * 2000)
    frames = await client.until_eof()
    assert closes(frames) == [aiohttp.WSCloseCode.MESSAGE_TOO_BIG]
    assert frames[-1][0] == 0x8


async def test_a_compressed_socket_gets_its_frames_then_one_close(start_daemon, raw_clients):
    from dbackd.config import load_text

    from .conftest import ROOT

    d = await start_daemon(load_text(CONFIG + "websocket: {compression: true}\n", "t.yaml", ROOT))
    client = await raw_clients(d.port, deflate=True)
    await client.join()
    for i in range(20):
        d.world.say("a", "11", f"compressed {i}", "c")
    conn = next(iter(d.hub.connections))
    await asyncio.sleep(0)
    d.hub.drop(conn, CLOSE_GOING_AWAY, b"test")
    frames = await client.until_eof()
    assert closes(frames) == [CLOSE_GOING_AWAY] and frames[-1][0] == 0x8
    assert all(op in (0x1, 0x8, 0x9) for op, _ in frames)
