"""Soak: a thousand well-behaved clients for ten minutes, reloads every 30 s, and for the second half an abusive socket.

Starts a real dbackd process on a loopback port with a temporary config (three servers,
one of 2,000 generated users, a lively simulation, the HTTP API on), then a load process
(this file with --role load) that runs N clients in a loop: open a socket, join a
server, stay a few seconds, switch to another, stay, leave, again. A probe socket stays
joined to one server and the load process posts a message through the API every half
second, timing it until the probe has it (the broadcast latency). Every 30 s the config
file is rewritten (a user renamed, one added or removed), which the daemon reloads.
For the second half of the run an abusive socket floods junk (bad JSON, unknown types,
binary garbage, connects to the big server) as fast as it can, reconnecting whenever
it is closed. Everything is loopback-only and bounded in time.

Reported: the daemon's RSS at the start (clients connected) and the end (clients gone),
its open file descriptors and tasks before the clients and after they left, errors seen
by well-behaved clients, and their join and broadcast latency (p50, p99) without and
with the abusive socket.

    python bench/soak.py --clients 1000 --minutes 10
"""
from __future__ import annotations

import argparse
import base64
import asyncio
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import aiohttp

SERVERS = ("dworld", "docs", "big")
BIG = "900000000000000003"

CONFIG = """\
listen: {{host: 127.0.0.1, port: {port}}}
logging: {{level: warning, format: json}}
api:
  tokens: ["${{DBACKD_API_TOKEN}}"]
  rate: {{per_second: 1000, burst: 1000}}
limits:
  max_connections: 20000
  max_connections_per_address: 5000
  sockets_per_second: 1000  # the well-behaved clients all come from 127.0.0.1
  sockets_burst: 1000
simulation:
  presence: {{interval: 0.5}}
  messages: {{interval: 1}}
servers:
  - snowflake: "900000000000000001"
    id: dworld
    name: D-World
    default: true
    users:
      - {{uid: "100000000000000001", username: vegeta897, roleColor: "#ff6b6b"}}
      - {{uid: "100000000000000002", username: "{renamed}", roleColor: "#4ecdc4"}}
{extra}
  - snowflake: "900000000000000002"
    id: docs
    name: Docs
    users:
      - {{uid: "100000000000000011", username: writer}}
  - snowflake: "{big}"
    id: big
    name: Big
    simulation: {{seed: 1, generate: {{count: 2000}}}}
"""


def write_config(path: Path, port: int, generation: int) -> None:
    extra = '      - {uid: "100000000000000003", username: visitor}' if generation % 2 else ""
    path.write_text(CONFIG.format(port=port, renamed=f"cog-{generation}", extra=extra, big=BIG))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pct(values: list[float], p: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))] * 1000, 1)


# -- the load process ------------------------------------------------------------------
class Load:
    def __init__(self, url: str, token: str, clients: int, seconds: float):
        self.url = url
        self.token = token
        self.clients = clients
        self.deadline = time.monotonic() + seconds
        self.half = time.monotonic() + seconds / 2
        self.errors: list[str] = []
        self.joins: dict[str, list[float]] = {"calm": [], "abused": []}
        self.broadcasts: dict[str, list[float]] = {"calm": [], "abused": []}
        self.cycles = 0
        self.abuse = {"frames": 0, "connections": 0}
        self.lag: dict[str, list[float]] = {"calm": [], "abused": []}  # the load process's own loop lag

    def phase(self) -> str:
        return "calm" if time.monotonic() < self.half else "abused"

    async def run(self) -> dict:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            tasks = [asyncio.create_task(self.client(http, i)) for i in range(self.clients)]
            tasks.append(asyncio.create_task(self.probe(http)))
            tasks.append(asyncio.create_task(self.abuser()))
            lag = asyncio.create_task(self.lag_probe())
            await asyncio.gather(*tasks)
            lag.cancel()
        return {"errors": len(self.errors), "first_errors": self.errors[:10], "cycles": self.cycles,
                "joins": {k: len(v) for k, v in self.joins.items()},
                "join_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in self.joins.items()},
                "broadcast_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)}
                                 for k, v in self.broadcasts.items()},
                "abuse": self.abuse,
                "load_lag_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in self.lag.items()}}

    async def lag_probe(self) -> None:
        """How late a 100 ms timer fires here: latency this process adds to what it measures."""
        while True:
            due = time.monotonic() + 0.1
            await asyncio.sleep(0.1)
            self.lag[self.phase()].append(time.monotonic() - due)

    async def join(self, ws: aiohttp.ClientWebSocketResponse, server: str) -> None:
        started, phase = time.monotonic(), self.phase()
        await ws.send_str(json.dumps({"type": "connect", "data": {"server": server}}))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 15)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended while joining: {msg.type}")
            # By prefix: parsing a join of 2,000 users a few hundred times a second would be
            # the load generator's own bottleneck, not the daemon's.
            if msg.data.startswith('{"type":"error"'):
                raise RuntimeError(f"error frame: {msg.data[:100]}")
            if msg.data.startswith('{"type":"server-join"'):
                self.joins[phase].append(time.monotonic() - started)
                return

    async def dwell(self, ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(ws.receive(), left)
            except asyncio.TimeoutError:
                return
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended: {msg.type} {ws.close_code}")
            if msg.data.startswith('{"type":"error"'):
                raise RuntimeError(f"error frame: {msg.data[:100]}")

    async def client(self, http: aiohttp.ClientSession, i: int) -> None:
        rng = random.Random(i)
        await asyncio.sleep(rng.random() * 10)  # a ramp, not a stampede
        while time.monotonic() < self.deadline:
            try:
                async with http.ws_connect(self.url + "ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    first = await asyncio.wait_for(ws.receive(), 15)
                    if json.loads(first.data)["type"] != "server-list":
                        raise RuntimeError("no server-list first")
                    a, b = rng.sample(SERVERS, 2)
                    await self.join(ws, a)
                    await self.dwell(ws, rng.uniform(5, 15))
                    await self.join(ws, b)
                    await self.dwell(ws, rng.uniform(5, 15))
                self.cycles += 1
            except Exception as exc:  # every failure of a well-behaved client counts
                self.errors.append(f"client {i}: {type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(1)

    async def probe(self, http: aiohttp.ClientSession) -> None:
        """One joined socket; a message through the API every 0.5 s, timed until it arrives."""
        sent: dict[str, tuple[float, str]] = {}
        async with http.ws_connect(self.url + "ws") as ws:
            await ws.receive()
            await self.join(ws, "docs")

            async def post() -> None:
                k = 0
                headers = {"Authorization": f"Bearer {self.token}"}
                while time.monotonic() < self.deadline:
                    k += 1
                    text = f"probe-{k}"
                    sent[text] = (time.monotonic(), self.phase())
                    async with http.post(self.url + "api/servers/docs/messages", headers=headers,
                                         json={"uid": "100000000000000011", "message": text, "channel": "1"}) as r:
                        if r.status != 200:
                            self.errors.append(f"api: {r.status}")
                    await asyncio.sleep(0.5)

            poster = asyncio.create_task(post())
            while not poster.done():
                try:
                    msg = await asyncio.wait_for(ws.receive(), 1)
                except asyncio.TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    self.errors.append(f"probe closed: {msg.type}")
                    break
                data = json.loads(msg.data)
                if data["type"] == "message" and data["data"]["message"] in sent:
                    t0, phase = sent.pop(data["data"]["message"])
                    self.broadcasts[phase].append(time.monotonic() - t0)
            await poster

    async def abuser(self) -> None:
        """From the second half on: junk as fast as the socket takes it, again whenever it is closed."""
        while time.monotonic() < self.half:
            await asyncio.sleep(0.5)
        host, port = self.url.split("//")[1].rstrip("/").split(":")
        junk = [b"\x81\x05nope!", b'\x81\x0e{"type":"zap"}',
                b"\x82\x04\xff\xfe\xfd\xfc",
                ('\x81' + chr(len('{"type":"connect","data":{"server":"big"}}'))).encode("latin-1")
                + b'{"type":"connect","data":{"server":"big"}}']
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                self.abuse["connections"] += 1
                key = base64.b64encode(secrets.token_bytes(16)).decode()
                writer.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                drain = asyncio.create_task(reader.read(-1))  # take what it is sent, or it is dropped as slow
                drain.add_done_callback(lambda t: t.cancelled() or t.exception())  # a reset is the point
                while not drain.done() and time.monotonic() < self.deadline:
                    for frame in junk:
                        writer.write(mask(frame))
                    self.abuse["frames"] += len(junk)
                    await writer.drain()
                    await asyncio.sleep(0)  # drain() does not yield while the socket takes it all: let the probes run
                drain.cancel()
                writer.close()
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.01)


def mask(frame: bytes) -> bytes:
    """A client frame must be masked: set the bit and insert a zero mask (the payload stays as it is)."""
    return frame[:1] + bytes([frame[1] | 0x80]) + b"\x00\x00\x00\x00" + frame[2:]


# -- the conductor ---------------------------------------------------------------------
async def health(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url + "healthz") as r:
        return await r.json()


async def conduct(args: argparse.Namespace) -> dict:
    token = secrets.token_hex(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.yaml"
        write_config(config, port, 0)
        env = {**os.environ, "DBACKD_API_TOKEN": token}
        daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "dbackd", "-c", str(config), env=env,
                                                      stderr=asyncio.subprocess.PIPE)
        errors_logged: list[str] = []

        async def read_log() -> None:
            assert daemon.stderr is not None
            async for line in daemon.stderr:
                if b'"level": "error"' in line or b'"level": "critical"' in line:
                    errors_logged.append(line.decode()[:300])

        log_task = asyncio.create_task(read_log())
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    base = await health(http, url)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(2)  # the simulation and the first reload settle
            base = await health(http, url)
            before = {"rss_kib": rss_kib(daemon.pid), "fds": open_fds(daemon.pid), "tasks": base["tasks"],
                      "connections": base["connections"]}
            seconds = args.minutes * 60
            load = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--role", "load", "--url", url, "--clients", str(args.clients),
                "--seconds", str(seconds), env=env, stdout=asyncio.subprocess.PIPE)
            started = time.monotonic()
            samples, generation, rss_start = [], 0, None
            while load.returncode is None and time.monotonic() - started < seconds + 120:
                try:
                    await asyncio.wait_for(load.wait(), 30)
                except asyncio.TimeoutError:
                    pass
                if load.returncode is not None:
                    break
                generation += 1
                write_config(config, port, generation)  # a reload every 30 s
                h = await health(http, url)
                samples.append({"t": round(time.monotonic() - started), "rss_kib": rss_kib(daemon.pid),
                                "connections": h["connections"], "reload_ok": h["reload"]["ok"]})
                if rss_start is None:
                    rss_start = samples[-1]["rss_kib"]
            assert load.stdout is not None
            result = json.loads((await load.stdout.read()).decode() or "{}")
            await load.wait()
            for _ in range(100):  # the daemon notices the last sockets going away
                h = await health(http, url)
                if h["connections"] == 0:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            h = await health(http, url)
            after = {"rss_kib": rss_kib(daemon.pid), "fds": open_fds(daemon.pid), "tasks": h["tasks"],
                     "connections": h["connections"]}
        daemon.terminate()
        await daemon.wait()
        log_task.cancel()
    return {"clients": args.clients, "minutes": args.minutes, "reloads": generation, "before": before,
            "rss_start_kib": rss_start, "after": after, "samples": samples, "daemon_errors": errors_logged[:10],
            **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", default="conductor", choices=("conductor", "load"))
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--url")
    p.add_argument("--seconds", type=float)
    args = p.parse_args()
    if args.role == "load":
        try:
            import uvloop  # the bench extra: a faster loop for the load generator only
            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(Load(args.url, os.environ["DBACKD_API_TOKEN"], args.clients, args.seconds).run())
        print(json.dumps(result))
        return
    print(json.dumps(asyncio.run(conduct(args)), indent=1))


if __name__ == "__main__":
    main()
