"""Load client for the fan-out benchmark: many raw WebSocket clients in one process.

Run by bench/fanout.py as a separate process (never against anything but loopback).
Opens N sockets, joins a server on each, then reports, per benchmark event, when the
last socket received it. Frames are parsed just enough to find the event number, so
one process can keep up with a fast server.

Commands on stdin and reports on stdout are JSON lines:
  -> {"cmd": "stats"}                 <- {"frames": F, "open": O}   (F: benchmark event frames received)
  -> {"cmd": "pause", "count": 1}     <- {"paused": 1}   (those sockets stop reading)
  -> {"cmd": "close", "keep": 100}    <- {"open": 100}   (close all but that many reading sockets)
  -> {"cmd": "quit"}
  <- {"ready": N, "seconds": S}       once every socket has its server-join
  <- {"event": K, "last": T, "count": C}   when every active socket got event K
Times are time.monotonic(), comparable across processes on Linux.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
import zlib

MARKS = (b'"username":', b'"message":')


def event_number(payload: bytes) -> int:
    """The K of a benchmark event (a presence with "username": "eK" or a message "eK ..."), or -1."""
    for mark in MARKS:
        i = payload.find(mark)
        if i >= 0:
            i = payload.find(b'"e', i + len(mark))
            if i < 0:
                return -1
            j = i + 2
            while j < len(payload) and 48 <= payload[j] <= 57:
                j += 1
            return int(payload[i + 2:j]) if j > i + 2 else -1
    return -1


class Client(asyncio.Protocol):
    __slots__ = ("pool", "transport", "buf", "state", "joined", "paused", "closed", "inflate")

    def __init__(self, pool: "Pool"):
        self.pool = pool
        self.transport = None
        self.buf = bytearray()
        self.state = "handshake"
        self.joined = asyncio.get_running_loop().create_future()
        self.paused = False
        self.closed = False
        self.inflate = None  # a raw-deflate context once permessage-deflate is agreed

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        extensions = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.pool.compress else ""
        transport.write((
            f"GET {self.pool.path} HTTP/1.1\r\nHost: {self.pool.host}:{self.pool.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
        ).encode())

    def data_received(self, data: bytes) -> None:
        if self.state == "joined" and not self.buf and self.inflate is None:
            # Fast path: whole frames in one chunk, as a fan-out write usually is.
            pos, n = 0, len(data)
            while n - pos >= 2 and data[pos + 1] < 126 and n - pos >= 2 + data[pos + 1]:
                size = data[pos + 1]
                self.frame(data[pos] & 0x0F, data[pos + 2:pos + 2 + size])
                pos += 2 + size
            if pos == n:
                return
            data = data[pos:]
        buf = self.buf
        buf += data
        if self.state == "handshake":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(f"handshake refused: {bytes(buf[:40])!r}")
                return
            if b"permessage-deflate" in buf[:end].lower():
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            del buf[: end + 4]
            self.state = "list"
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                head, size = 2, b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                head, size = 4, struct.unpack_from("!H", buf, pos + 2)[0]
            else:
                if n - pos < 10:
                    break
                head, size = 10, struct.unpack_from("!Q", buf, pos + 2)[0]
            if n - pos < head + size:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head: pos + head + size])
            if buf[pos] & 0x40 and self.inflate is not None:  # RSV1: a compressed message
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            pos += head + size
            self.frame(opcode, payload)
        del buf[:pos]

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x8:
            self.transport.close()
            return
        if opcode == 0x9:  # ping: answer as a browser does, or the server's heartbeat drops us
            self.send(payload, opcode=0xA)
            return
        if opcode != 0x1:
            return
        pool = self.pool
        if self.state == "joined":
            k = event_number(payload)
            if k >= 0:
                pool.frames += 1  # events only: dbackd sends a rename as two frames, d-back as one
                pool.arrived(k)
        elif self.state == "list":
            self.state = "join"
            self.send(json.dumps({"type": "connect", "data": {"server": pool.server}}).encode())
        elif self.state == "join" and b'"server-join"' in payload[:30]:
            self.state = "joined"
            if not self.joined.done():
                self.joined.set_result(None)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        n = len(payload)
        first = 0x80 | opcode
        header = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0xFE, n)
        self.transport.write(header + mask + masked)

    def fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(why))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"closed before join: {exc}"))
        self.pool.lost(self)


class Pool:
    def __init__(self, host: str, port: int, path: str, server: str, compress: bool = False):
        self.host, self.port, self.path, self.server = host, port, path, server
        self.compress = compress
        self.clients: list[Client] = []
        self.frames = 0
        self.active = 0
        self.counts: dict[int, int] = {}

    def arrived(self, k: int) -> None:
        count = self.counts.get(k, 0) + 1
        self.counts[k] = count
        if count >= self.active:
            self.report(k)

    def report(self, k: int) -> None:
        # Reported when the last active socket has it: now is that socket's arrival time.
        out({"event": k, "last": time.monotonic(), "count": self.counts.pop(k)})

    def lost(self, client: Client) -> None:
        if not client.paused and client.state == "joined":
            self.active -= 1
            for k in [k for k, c in self.counts.items() if c >= self.active]:
                self.report(k)

    async def open(self, n: int, concurrency: int = 200) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                _, client = await loop.create_connection(lambda: Client(self), self.host, self.port)
                self.clients.append(client)
                await asyncio.wait_for(client.joined, 60)

        await asyncio.gather(*(one() for _ in range(n)))
        self.active = sum(1 for c in self.clients if c.state == "joined" and not c.closed)


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--server", default="dworld")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--compress", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("the load client only targets loopback")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pool = Pool(args.host, args.port, args.path, args.server, args.compress)
    t0 = time.monotonic()
    await pool.open(args.clients)
    out({"ready": pool.active, "seconds": time.monotonic() - t0})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["cmd"] == "stats":
            out({"frames": pool.frames, "open": sum(1 for c in pool.clients if not c.closed)})
        elif cmd["cmd"] == "pause":
            paused = 0
            for c in pool.clients:
                if paused == cmd["count"]:
                    break
                if not c.closed and not c.paused:
                    c.paused = True
                    c.transport.pause_reading()
                    pool.active -= 1
                    paused += 1
            out({"paused": paused})
        elif cmd["cmd"] == "close":
            reading = [c for c in pool.clients if not c.closed and not c.paused]
            for c in reading[cmd["keep"]:]:
                c.transport.close()
            await asyncio.sleep(0.5)  # let the closes land before the next phase
            out({"open": sum(1 for c in pool.clients if not c.closed and not c.paused)})
        elif cmd["cmd"] == "quit":
            break
    for c in pool.clients:
        c.transport.abort()


if __name__ == "__main__":
    try:  # the load client is a measuring tool: the faster loop, when installed, keeps it out of the way
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
