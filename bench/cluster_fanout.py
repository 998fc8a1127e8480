"""Scale-out figures: one process against `workers: 2`, the cost of a cross-node hop, and the kernel's own limit.

Everything on loopback, with a redis-server started for the run (Debian's, no persistence)
and the load in a separate process (bench/loadclient.py). Events are chat messages (one
frame each), triggered through the HTTP API.

1. **One process** (no cluster) and **workers: 2** (two processes on one port through
   SO_REUSEPORT, sharing the world through Redis), each with N clients: one-event fan-out
   (trigger to the last client, p50/p99) and frames delivered per second in a storm.
2. **A cross-node hop**: two cluster nodes on their own ports, --hop-clients clients on
   node B; the same event triggered on B and on A: the difference is the hop (A → Redis →
   B), p50/p99.
3. **The physical limit**, as the fan-out section of docs/performance.md measures it: a
   bare loop of `send()` of one frame to N loopback sockets whose other ends a second
   process drains: the time per send, the fan-out time of N sends, and the sends per
   second one core can make. Every figure above also reads as a fraction of it.

    python bench/cluster_fanout.py --clients 5000 [--hop-clients 100] [--events 100] [--storm 10]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout import Counter, Load, free_port, pct, single_events, storm, wait_port  # noqa: E402

SERVERS = """\
servers:
  - snowflake: "232769614004748288"
    id: dworld
    name: D-World
    default: true
    users:
      - {uid: "123456789012345001", username: vegeta897, status: online, roleColor: "#ff6b6b"}
"""

# The sink of the physical-limit probe: connects N sockets, then reads and discards until told to stop.
SINK = r"""
import selectors, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
sel = selectors.DefaultSelector()
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False); sel.register(s, selectors.EVENT_READ); socks.append(s)
print("connected", flush=True)
while True:
    for key, _ in sel.select(1.0):
        data = key.fileobj.recv(1 << 16)
        if not data:
            sys.exit(0)
"""


class Node:
    """A dbackd process (or a `workers: N` parent) on a loopback port."""

    def __init__(self, name: str, redis: str, prefix: str, port: int, workers: int = 1, cluster: bool = True):
        self.name, self.port, self.path = name, port, "/ws"
        self.token = secrets.token_urlsafe(24)
        self.tmp = tempfile.TemporaryDirectory()
        cfg = Path(self.tmp.name) / "bench.yaml"
        head = f"listen: {{host: 127.0.0.1, port: {port}}}\nlogging: {{level: warning, format: json}}\n"
        head += "limits: {max_connections: 30000, max_connections_per_address: 30000}\n"  # all from 127.0.0.1
        head += 'api: {tokens: ["${DBACKD_API_TOKEN}"], rate: {per_second: 100000, burst: 100000}}\n'
        if cluster:
            head += f'cluster: {{redis: "{redis}", prefix: "{prefix}", node: "{name}"}}\n'
        if workers > 1:
            head += f"workers: {workers}\n"
        cfg.write_text(head + SERVERS)
        self.cfg = cfg

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd", "-c", str(self.cfg), "--no-watch",
            env={**os.environ, "DBACKD_API_TOKEN": self.token},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await wait_port(self.port, self.proc)
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})

    async def trigger(self, k: int) -> None:
        body = {"uid": "123456789012345001", "message": f"e{k} x", "channel": "1"}
        async with self.http.post(f"http://127.0.0.1:{self.port}/api/servers/dworld/messages", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"trigger failed: {r.status} {await r.text()}")

    async def stop(self) -> None:
        await self.http.close()
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except asyncio.TimeoutError:
            self.proc.kill()
        self.tmp.cleanup()


def stats(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.1f} ms, p99 {pct(values, 99):.1f} ms"


async def throughput(label: str, node: Node, clients: int, events: int, seconds: float) -> dict:
    await node.start()
    try:
        load = Load(node, clients)
        ready = await load.start()
        if ready.get("ready") != clients:
            raise RuntimeError(f"only {ready.get('ready')} of {clients} clients joined")
        counter = Counter()
        single = await single_events(node, load, counter, events)
        burst = await storm(node, load, counter, seconds, 8)
        await load.stop()
    finally:
        await node.stop()
    return {"label": label, "clients": clients, "p50": statistics.median(single), "p99": pct(single, 99),
            "frames_per_s": burst["frames_per_s"]}


async def hop(redis: str, clients: int, events: int) -> dict:
    prefix = "hop" + secrets.token_hex(4)
    a, b = Node("a", redis, prefix, free_port()), Node("b", redis, prefix, free_port())
    a.token = b.token  # one token for both, the clients are on b
    await a.start()
    await b.start()
    try:
        load = Load(b, clients)
        await load.start()
        counter = Counter()
        local = await single_events(b, load, counter, events)
        remote = await single_events(a, load, counter, events)
        await load.stop()
    finally:
        await a.stop()
        await b.stop()
    return {"local": local, "remote": remote}


def physical_limit(n: int, rounds: int = 30) -> dict:
    """One frame sent to each of n loopback sockets, in a bare loop, timed."""
    server = socket.create_server(("127.0.0.1", 0), backlog=n)
    port = server.getsockname()[1]
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port), str(n)], stdout=subprocess.PIPE)
    conns = [server.accept()[0] for _ in range(n)]
    assert sink.stdout is not None and sink.stdout.readline().strip() == b"connected"
    frame = b"\x81\x50" + b'{"type":"message","server":"232769614004748288","data":{"uid":"1","message":"hi"}}'[:0x50]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for c in conns:
            c.send(frame)
        times.append(time.perf_counter() - t0)
    for c in conns:
        c.close()
    sink.wait(10)
    server.close()
    per_send = statistics.median(times) / n
    return {"per_send_us": per_send * 1e6, "fan_out_ms": statistics.median(times) * 1000,
            "sends_per_s": 1 / per_send}


async def main(args: argparse.Namespace) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs Debian's redis-server")
    rport = free_port()
    redis_proc = subprocess.Popen([binary, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], stdout=subprocess.DEVNULL)
    redis = f"redis://127.0.0.1:{rport}/0"
    try:
        await asyncio.sleep(0.3)
        limit = physical_limit(args.clients)
        print(f"physical limit, {args.clients:,} loopback sockets: {limit['per_send_us']:.1f} µs per send(), "
              f"{limit['fan_out_ms']:.1f} ms to send one frame to all, {limit['sends_per_s']:,.0f} sends/s on one core")
        rows = []
        for label, node in (("one process", Node("solo", redis, "solo", free_port(), cluster=False)),
                            ("workers: 2", Node("pair", redis, "pair" + secrets.token_hex(3), free_port(), workers=2))):
            print(f"running {label} with {args.clients} clients ...", file=sys.stderr)
            rows.append(await throughput(label, node, args.clients, args.events, args.storm))
        print("| setup | clients | fan-out p50 | p99 | p99 / limit | storm frames/s | frames/s / limit (one core) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['label']} | {r['clients']:,} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | "
                  f"{r['p99'] / limit['fan_out_ms']:.1f}× | {r['frames_per_s']:,} | "
                  f"{r['frames_per_s'] / limit['sends_per_s']:.2f} |")
        h = await hop(redis, args.hop_clients, args.events)
        local, remote = h["local"], h["remote"]
        print(f"\ncross-node hop, {args.hop_clients} clients on node B: triggered on B {stats(local)}; "
              f"on A {stats(remote)}; the hop adds p50 {statistics.median(remote) - statistics.median(local):.1f} ms, "
              f"p99 {pct(remote, 99) - pct(local, 99):.1f} ms")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--hop-clients", type=int, default=100)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--storm", type=float, default=10.0)
    asyncio.run(main(p.parse_args()))
