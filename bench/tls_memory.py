"""What one connection costs the daemon in memory, with and without TLS.

Starts a real `dbackd` process on a loopback port (one small server), then, from this
process, opens N connections of one kind and measures the daemon's RSS before and after
(once they are all in place): idle joined sockets over `ws://`, the same over `wss://`
(a self-signed certificate made with the openssl command), and TCP connections that never
send a TLS ClientHello (stalled handshakes). Each kind gets a fresh daemon.

    python bench/tls_memory.py --connections 1000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import free_port, rss_kib, wait_port  # noqa: E402  (the bench folder is the script's own)

CONFIG = """
listen: {{host: 127.0.0.1, port: {port}{tls}}}
logging: {{level: warning}}
limits: {{max_connections: 50000, max_connections_per_address: 50000, handshake_timeout: 120, header_timeout: 120}}
servers: [{{snowflake: "1", id: a, name: A, default: true, users: [{{uid: "11", username: x}}]}}]
"""


async def settle(pid: int) -> int:
    """RSS once it stops moving (the daemon has taken in what was opened)."""
    last = rss_kib(pid)
    while True:
        await asyncio.sleep(1.0)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now


async def joined(http: aiohttp.ClientSession, url: str, context) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, ssl=context or True)
    await ws.receive()  # server-list
    await ws.send_str(json.dumps({"type": "connect", "data": {"server": "a"}}))
    await ws.receive()  # server-join
    return ws


async def measure(kind: str, n: int, tmp: Path) -> dict:
    port = free_port()
    tls = kind != "ws"
    config = tmp / f"{kind}.yaml"
    config.write_text(CONFIG.format(port=port, tls=", tls: {cert: cert.pem, key: key.pem}" if tls else ""))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "dbackd", "-c", str(config),
                                                stderr=asyncio.subprocess.DEVNULL)
    held: list = []
    try:
        await wait_port(port, proc)
        context = ssl.create_default_context(cafile=str(tmp / "cert.pem")) if tls else None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            # one of each first: the daemon's first TLS and socket code paths are warm before the baseline
            warm = await joined(http, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ws", context)
            before = await settle(proc.pid)
            for i in range(0, n, 100):
                if kind == "stalled":
                    held += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                                   for _ in range(min(100, n - i))))
                else:
                    url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ws"
                    held += await asyncio.gather(*(joined(http, url, context) for _ in range(min(100, n - i))))
            after = await settle(proc.pid)
            for item in held:
                if isinstance(item, tuple):
                    item[1].close()
                else:
                    await item.close()
            await warm.close()
    finally:
        proc.terminate()
        await proc.wait()
    return {"kind": kind, "connections": n, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": round((after - before) / n, 1)}


async def run(n: int, kinds: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp / "key.pem"),
                        "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
        return [await measure(kind, n, tmp) for kind in kinds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--kinds", default="ws,wss,stalled", help="comma-separated: ws, wss, stalled")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for row in asyncio.run(run(args.connections, args.kinds.split(","))):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
