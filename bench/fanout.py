"""Fan-out benchmark: one event, thousands of sockets, dbackd against the original d-back.

For each target server (a real process on a loopback port) it:
  1. measures the server's RSS, opens N WebSocket clients in a separate load process
     (bench/loadclient.py) that all join D-World, and reports the join rate;
  2. measures RSS again with N idle joined clients (RSS per connection);
  3. sends K single events one at a time and times each from the trigger to the moment
     the last client received it (fan-out latency p50/p99/max);
  4. runs a broadcast storm for S seconds (events back to back, a bounded number in
     flight) and counts frames delivered per second, while a probe opens a fresh
     client every 100 ms and times its join (TCP connect to server-join);
  5. (dbackd) stops reading on one client, repeats 3 and a storm, and reports the other
     clients' latency and the server's memory.
dbackd's events are triggered through its HTTP API; d-back's through its own
broadcast_presence (bench/dback_server.py in a side virtualenv with d-back 0.0.18 from
PyPI, made on first use under bench/.venvs/). Everything runs on 127.0.0.1 and every
phase is bounded in time.

    python bench/fanout.py --clients 5000 --events 200 --storm 10 [--targets dbackd,d-back]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import aiohttp

HERE = Path(__file__).resolve().parent
DWORLD = "232769614004748288"
STATUSES = ("online", "idle", "dnd", "offline")
DBACK_VERSION = "0.0.18"

CONFIG = """\
listen: {{host: 127.0.0.1, port: {port}}}
logging: {{level: warning, format: json}}
limits: {{max_connections: 30000, max_connections_per_address: 30000}}  # every client is 127.0.0.1
api:
  tokens: ["${{DBACKD_API_TOKEN}}"]
  rate: {{per_second: 100000, burst: 100000}}
servers:
  - snowflake: "232769614004748288"
    id: dworld
    name: D-World
    default: true
    users:
      - {{uid: "123456789012345001", username: vegeta897, status: online, roleColor: "#ff6b6b"}}
      - {{uid: "123456789012345002", username: Cog-Creators, status: idle, roleColor: "#4ecdc4"}}
      - {{uid: "123456789012345003", username: d-zone-org, status: dnd, roleColor: "#45b7d1"}}
      - {{uid: "123456789012345004", username: NNTin, status: online, roleColor: "#96ceb4"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start listening")


class Target:
    name = ""
    path = "/ws"

    async def start(self) -> None: ...
    async def trigger(self, k: int) -> None: ...
    async def stop(self) -> None: ...
    async def dropped_slow(self) -> Optional[int]:
        return None


class Dbackd(Target):
    name = "dbackd"
    path = "/ws"

    def __init__(self, compression: bool = False):
        self.compression = compression
        self.name = "dbackd (permessage-deflate)" if compression else "dbackd"
        self.token = secrets.token_urlsafe(24)
        self.tmp = tempfile.TemporaryDirectory()

    async def start(self) -> None:
        self.port = free_port()
        config = Path(self.tmp.name) / "bench.yaml"
        text = CONFIG.format(port=self.port)
        if self.compression:
            text += "websocket: {compression: true}\n"
        config.write_text(text)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd", "-c", str(config), "--no-watch",
            env={**os.environ, "DBACKD_API_TOKEN": self.token},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_port(self.port, self.proc)
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        self.url = f"http://127.0.0.1:{self.port}/api/servers/dworld/presence"

    async def trigger(self, k: int) -> None:
        body = {"uid": "123456789012345001", "status": STATUSES[k % 4], "username": f"e{k}"}
        async with self.http.post(self.url, json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"trigger failed: {r.status} {await r.text()}")

    async def say(self, k: int, text: str) -> None:
        body = {"uid": "123456789012345001", "message": f"e{k} {text}", "channel": "527964146659229701"}
        async with self.http.post(f"http://127.0.0.1:{self.port}/api/servers/dworld/messages", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"message failed: {r.status} {await r.text()}")

    async def dropped_slow(self) -> Optional[int]:
        async with self.http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
            return (await r.json()).get("dropped_slow")

    async def stop(self) -> None:
        await self.http.close()
        self.proc.terminate()
        await self.proc.wait()
        self.tmp.cleanup()


class Dback(Target):
    name = f"d-back {DBACK_VERSION}"
    path = "/"

    def __init__(self, venv: Path):
        self.venv = venv

    @staticmethod
    def ensure_venv(venv: Path) -> Path:
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"d-back=={DBACK_VERSION}"], check=True)
        return python

    async def start(self) -> None:
        self.port = free_port()
        self.proc = await asyncio.create_subprocess_exec(
            str(self.ensure_venv(self.venv)), str(HERE / "dback_server.py"), "--port", str(self.port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_port(self.port, self.proc)

    async def trigger(self, k: int) -> None:
        self.proc.stdin.write(f"{k}\n".encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()
        await self.proc.wait()


class Load:
    """The load-client process and its reports."""

    def __init__(self, target: Target, clients: int):
        self.target, self.clients = target, clients
        self.events: dict[int, asyncio.Future] = {}
        self.replies: asyncio.Queue = asyncio.Queue()

    async def start(self) -> dict:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "loadclient.py"), "--port", str(self.target.port),
            "--path", self.target.path, "--clients", str(self.clients),
            *(["--compress"] if getattr(self.target, "compression", False) else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )
        self.reader = asyncio.ensure_future(self._read())
        return await asyncio.wait_for(self.replies.get(), 300)

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "event" in msg:
                fut = self.events.pop(msg["event"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                await self.replies.put(msg)

    def expect(self, k: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.events[k] = fut
        return fut

    async def command(self, cmd: dict) -> dict:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self.replies.get(), 30)

    async def stop(self) -> None:
        try:
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 30)
        except (asyncio.TimeoutError, ConnectionError):
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


class Counter:
    def __init__(self) -> None:
        self.k = 0

    def next(self) -> int:
        self.k += 1
        return self.k


async def single_events(target: Target, load: Load, counter: Counter, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        k = counter.next()
        done = load.expect(k)
        t0 = time.monotonic()
        await target.trigger(k)
        report = await asyncio.wait_for(done, 30)
        latencies.append((report["last"] - t0) * 1000)
    return latencies


async def probe_join(target: Target, http: aiohttp.ClientSession) -> float:
    t0 = time.monotonic()
    async with http.ws_connect(f"http://127.0.0.1:{target.port}{target.path}") as ws:
        await ws.receive(timeout=30)  # server-list
        await ws.send_str('{"type": "connect", "data": {"server": "dworld"}}')
        while True:
            msg = await ws.receive(timeout=30)
            if '"server-join"' in msg.data[:30]:
                return (time.monotonic() - t0) * 1000


async def storm(target: Target, load: Load, counter: Counter, seconds: float, in_flight: int) -> dict:
    before = (await load.command({"cmd": "stats"}))["frames"]
    t_start = time.monotonic()
    stop_at = t_start + seconds
    joins: list[float] = []
    sent = 0

    async def pump() -> None:
        nonlocal sent
        pending: set[asyncio.Future] = set()
        while time.monotonic() < stop_at:
            while len(pending) < in_flight:
                k = counter.next()
                pending.add(load.expect(k))
                await target.trigger(k)
                sent += 1
            _, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait(pending, timeout=30)

    async def probes() -> None:
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < stop_at:
                joins.append(await asyncio.wait_for(probe_join(target, http), 30))
                await asyncio.sleep(0.1)

    await asyncio.gather(pump(), probes())
    elapsed = time.monotonic() - t_start
    after = (await load.command({"cmd": "stats"}))["frames"]
    # Probe clients receive a server-list and a server-join each: not fan-out frames.
    return {"frames_per_s": round((after - before) / elapsed), "events": sent, "seconds": round(elapsed, 1),
            "join_p50_ms": round(statistics.median(joins), 1), "join_p99_ms": round(pct(joins, 99), 1),
            "join_max_ms": round(max(joins), 1), "joins": len(joins)}


async def flood(target: Dbackd, load: Load, counter: Counter, messages: int, size: int) -> dict:
    """Messages of `size` bytes back to back: enough to overrun a client that stopped reading."""
    text = "x" * size
    rss_before = rss_kib(target.proc.pid)
    ks = [counter.next() for _ in range(messages)]
    last = load.expect(ks[-1])
    sem = asyncio.Semaphore(8)

    async def one(k: int) -> None:
        async with sem:
            await target.say(k, text)

    t0 = time.monotonic()
    await asyncio.gather(*(one(k) for k in ks))
    await asyncio.wait_for(last, 120)
    return {"messages": messages, "bytes_each": size, "seconds": round(time.monotonic() - t0, 1),
            "rss_growth_kib": rss_kib(target.proc.pid) - rss_before, "dropped_slow": await target.dropped_slow()}


def summarise(latencies: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(latencies), 1), "p99_ms": round(pct(latencies, 99), 1),
            "max_ms": round(max(latencies), 1), "events": len(latencies)}


async def run_target(target: Target, args: argparse.Namespace) -> dict:
    result: dict = {"target": target.name, "clients": args.clients}
    await target.start()
    counter = Counter()
    try:
        await asyncio.sleep(0.5)
        rss0 = rss_kib(target.proc.pid)
        load = Load(target, args.clients)
        ready = await load.start()
        if ready.get("ready") != args.clients:
            raise RuntimeError(f"only {ready.get('ready')} of {args.clients} clients joined")
        result["join_rate_per_s"] = round(args.clients / ready["seconds"])
        await asyncio.sleep(1.0)
        rss1 = rss_kib(target.proc.pid)
        result["rss_idle_kib"] = rss0
        result["rss_per_conn_kib"] = round((rss1 - rss0) / args.clients, 2)
        result["single"] = summarise(await single_events(target, load, counter, args.events))
        result["storm"] = await storm(target, load, counter, args.storm, args.in_flight)
        if args.slow and isinstance(target, Dbackd):
            await load.command({"cmd": "pause", "count": 1})
            slow = summarise(await single_events(target, load, counter, args.events))
            rss_before = rss_kib(target.proc.pid)
            slow_storm = await storm(target, load, counter, args.storm, args.in_flight)
            slow["storm_frames_per_s"] = slow_storm["frames_per_s"]
            slow["rss_growth_kib"] = rss_kib(target.proc.pid) - rss_before
            slow["dropped_slow"] = await target.dropped_slow()
            if args.flood:
                # Memory stays bounded: fewer readers (the flood goes to everyone), the stalled one kept.
                readers = (await load.command({"cmd": "close", "keep": args.flood_readers}))["open"]
                slow["flood"] = {"readers": readers, **await flood(target, load, counter, args.flood, 1990)}
            result["one_client_stalled"] = slow
        await load.stop()
    finally:
        await target.stop()
    return result


def table(results: list[dict]) -> str:
    rows = ["| target | clients | join rate /s | RSS per idle conn | fan-out p50 | p99 | max | storm frames/s | join during storm p99 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, st = r["single"], r["storm"]
        rows.append(f"| {r['target']} | {r['clients']} | {r['join_rate_per_s']} | {r['rss_per_conn_kib']} KiB "
                    f"| {s['p50_ms']} ms | {s['p99_ms']} ms | {s['max_ms']} ms | {st['frames_per_s']} "
                    f"| {st['join_p99_ms']} ms |")
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    results = []
    for name in args.targets.split(","):
        if name == "dbackd":
            target: Target = Dbackd(compression=args.compression)
        elif name == "d-back":
            target = Dback(HERE / ".venvs" / f"d-back-{DBACK_VERSION}")
        else:
            raise SystemExit(f"unknown target {name}")
        print(f"running {target.name} with {args.clients} clients ...", file=sys.stderr)
        results.append(await asyncio.wait_for(run_target(target, args), args.deadline))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(table(results))
    by_name = {r["target"].split()[0]: r for r in results}
    if "dbackd" in by_name and "d-back" in by_name:
        a, b = by_name["dbackd"], by_name["d-back"]
        print(f"\nframes/s ratio dbackd / d-back: {a['storm']['frames_per_s'] / max(1, b['storm']['frames_per_s']):.1f}x; "
              f"p99 fan-out ratio d-back / dbackd: {b['single']['p99_ms'] / max(0.1, a['single']['p99_ms']):.1f}x")
    for r in results:
        if "one_client_stalled" in r:
            s = r["one_client_stalled"]
            print(f"\n{r['target']} with one client stalled: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms "
                  f"(vs {r['single']['p50_ms']} / {r['single']['p99_ms']} ms), storm {s['storm_frames_per_s']} frames/s, "
                  f"RSS growth {s['rss_growth_kib']} KiB, dropped slow clients: {s['dropped_slow']}")
            if "flood" in s:
                f = s["flood"]
                print(f"flood of {f['messages']} x {f['bytes_each']} B to {f['readers']} readers and the stalled client: "
                      f"{f['seconds']} s, server RSS growth {f['rss_growth_kib']} KiB, "
                      f"dropped slow clients: {f['dropped_slow']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fan-out benchmark (loopback only)")
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200, help="single events for the latency figures")
    parser.add_argument("--storm", type=float, default=10.0, help="seconds of broadcast storm")
    parser.add_argument("--in-flight", type=int, default=8,
                        help="storm events triggered but not yet at every client, at most (default %(default)s)")
    parser.add_argument("--targets", default="dbackd,d-back")
    parser.add_argument("--compression", action="store_true", help="dbackd with websocket.compression on")
    parser.add_argument("--no-slow", dest="slow", action="store_false", help="skip the stalled-client phase")
    parser.add_argument("--flood", type=int, default=4000,
                        help="after the stalled-client phase, this many ~2 KB messages (0: none)")
    parser.add_argument("--flood-readers", type=int, default=100, help="reading clients kept for the flood")
    parser.add_argument("--deadline", type=float, default=900, help="seconds allowed per target")
    parser.add_argument("--json", help="also write the results to this file")
    asyncio.run(main(parser.parse_args()))
