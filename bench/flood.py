"""Does a client that floods junk and reconnects after every close slow the others?

Starts a real `dbackd` process on a loopback port (a small server the probes watch and a
big one of 2,000 generated users the flooders ask for), then measures, from this process
and from 127.0.0.1: /healthz answered one request after another, and broadcasts (an HTTP
API post, timed until a joined probe socket has it, as fast as they go through). First
for a baseline, then as long again while flooders run in a second process from 127.0.0.2:
each opens a socket, writes junk (bad JSON, unknown types, bad UTF-8, connects to the big
server) as fast as the socket takes it, and opens a new one whenever it is closed or
refused. Both phases are one run, so they share the machine's state.

    python bench/flood.py --seconds 10 --flooders 1
"""
from __future__ import annotations

import argparse
import base64
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import free_port, pct, wait_port  # noqa: E402  (the bench folder is the script's own)

CONFIG = """
listen: {{host: 127.0.0.1, port: {port}}}
logging: {{level: warning}}
api: {{tokens: ["{token}"], rate: {{per_second: 100000, burst: 100000}}}}
servers:
  - {{snowflake: "1", id: a, name: A, default: true, users: [{{uid: "11", username: x}}]}}
  - {{snowflake: "2", id: big, name: Big, simulation: {{generate: {{count: 2000}}, presence: {{interval: 0}},
     messages: {{interval: 0}}}}}}
"""
CONNECT = b'{"type":"connect","data":{"server":"big"}}'
JUNK = [b"\x81\x05nope!", b'\x81\x0e{"type":"zap"}', b"\x82\x04\xff\xfe\xfd\xfc", bytes([0x81, len(CONNECT)]) + CONNECT]


def mask(frame: bytes) -> bytes:
    return frame[:1] + bytes([frame[1] | 0x80]) + b"\x00\x00\x00\x00" + frame[2:]


async def flooder(port: int, deadline: float, counts: dict) -> None:
    junk = b"".join(mask(f) for f in JUNK) * 16
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            counts["connections"] += 1
            writer.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                counts["refused"] += 1
                writer.close()
                continue
            drain = asyncio.create_task(reader.read(-1))
            drain.add_done_callback(lambda t: t.cancelled() or t.exception())
            while not drain.done() and time.monotonic() < deadline:
                writer.write(junk)
                counts["frames"] += 16 * len(JUNK)
                await asyncio.wait_for(writer.drain(), 1.0)
            drain.cancel()
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            await asyncio.sleep(0.01)


async def flood(port: int, seconds: float, n: int) -> None:
    counts = {"connections": 0, "refused": 0, "frames": 0}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(flooder(port, deadline, counts) for _ in range(n)))
    print(json.dumps(counts))


async def health_probe(http: aiohttp.ClientSession, url: str, until: float) -> list[float]:
    times = []
    while time.monotonic() < until:
        t0 = time.monotonic()
        async with http.get(url + "healthz") as r:
            await r.read()
        times.append(time.monotonic() - t0)
        await asyncio.sleep(0.01)
    return times


async def broadcast_probe(http: aiohttp.ClientSession, url: str, token: str, until: float) -> list[float]:
    ws = await http.ws_connect(url.replace("http", "ws") + "ws")
    await ws.receive()
    await ws.send_str(json.dumps({"type": "connect", "data": {"server": "a"}}))
    await ws.receive()
    times, i = [], 0
    while time.monotonic() < until:
        i += 1
        text = f"probe {i}"
        t0 = time.monotonic()
        async with http.post(url + "api/servers/a/messages", headers={"Authorization": f"Bearer {token}"},
                             json={"uid": "11", "message": text, "channel": "1"}) as r:
            assert r.status < 300, r.status
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type == aiohttp.WSMsgType.TEXT and text in msg.data:
                break
        times.append(time.monotonic() - t0)
    await ws.close()
    return times


def summary(health: list[float], broadcasts: list[float]) -> dict:
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {"healthz_p50_ms": ms(pct(health, 50)), "healthz_p99_ms": ms(pct(health, 99)), "healthz_n": len(health),
            "broadcast_p50_ms": ms(pct(broadcasts, 50)), "broadcast_p99_ms": ms(pct(broadcasts, 99)),
            "broadcasts": len(broadcasts)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def phase(url: str, token: str, seconds: float, pid: int) -> dict:
    until = time.monotonic() + seconds
    cpu = cpu_seconds(pid)
    async with aiohttp.ClientSession() as http:
        health, broadcasts = await asyncio.gather(health_probe(http, url, until),
                                                  broadcast_probe(http, url, token, until))
    return {**summary(health, broadcasts), "daemon_cpu_share": round((cpu_seconds(pid) - cpu) / seconds, 2)}


async def run(args: argparse.Namespace) -> dict:
    port, token = free_port(), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "flood.yaml"
        config.write_text(CONFIG.format(port=port, token=token))
        daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "dbackd", "-c", str(config),
                                                      stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_port(port, daemon)
            url = f"http://127.0.0.1:{port}/"
            baseline = await phase(url, token, args.seconds, daemon.pid)
            flooders = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--flood-port", str(port), "--seconds", str(args.seconds + 1),
                "--flooders", str(args.flooders), stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(0.5)
            flooded = await phase(url, token, args.seconds, daemon.pid)
            out, _ = await flooders.communicate()
        finally:
            daemon.terminate()
            await daemon.wait()
    result = {"baseline": baseline, "flooded": flooded, "flooders": json.loads(out.decode().strip().splitlines()[-1])}
    result["ratio"] = {k: round(flooded[k] / baseline[k], 2) for k in baseline if k.endswith("_ms") and baseline[k]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase")
    parser.add_argument("--flooders", type=int, default=1)
    parser.add_argument("--flood-port", type=int, help=argparse.SUPPRESS)  # the flooders' own process
    args = parser.parse_args()
    if args.flood_port:
        asyncio.run(flood(args.flood_port, args.seconds, args.flooders))
        return
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()
