"""Does anything outlive an abusive connection? Python allocations before and after N of them.

An embedded daemon on a loopback port (a small server and one of 2,000 generated users);
each abusive connection upgrades, writes 120 junk frames at once (bad JSON, unknown types,
connects to the big server), takes what it is sent until the daemon closes it, and goes.
After a warm-up of 300, tracemalloc compares the traced Python memory before and after N
more, once every socket is gone. RSS is not the question here: the allocator keeps freed
memory; this counts the objects still alive.

    python bench/abuse_memory.py --connections 2000
"""
from __future__ import annotations

import argparse
import base64
import asyncio
import gc
import json
import secrets
import tracemalloc
from pathlib import Path

from dbackd.ops import logs
from dbackd.config import load_text
from dbackd.daemon import Daemon

CONFIG = """
logging: {level: warning}
servers:
  - {snowflake: "1", id: a, name: A, default: true, users: [{uid: "11", username: x}]}
  - {snowflake: "2", id: big, name: Big, simulation: {generate: {count: 2000}, presence: {interval: 0},
     messages: {interval: 0}}}
"""
CONNECT = b'{"type":"connect","data":{"server":"big"}}'
# Client frames are masked; a zero mask leaves the payload as it is.
JUNK = b"".join(bytes([0x81, 0x80 | len(p)]) + b"\0\0\0\0" + p for p in (b"nope!", b'{"type":"zap"}', CONNECT)) * 40


async def abuse(port: int, n: int) -> None:
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        try:
            writer.write(JUNK)
            await writer.drain()
            await asyncio.wait_for(reader.read(-1), 5)
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()


async def settle(d: Daemon) -> None:
    while d.health()["connections"]:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    gc.collect()


async def run(n: int) -> dict:
    logs.configure("warning", "json")
    d = Daemon(load_text(CONFIG, "bench.yaml", Path.cwd()), host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        await abuse(d.port, 300)
        await settle(d)
        tracemalloc.start(5)
        before = tracemalloc.take_snapshot()
        await abuse(d.port, n)
        await settle(d)
        after = tracemalloc.take_snapshot()
        diff = after.compare_to(before, "lineno")
        return {"connections": n, "traced_growth_kib": round(sum(s.size_diff for s in diff) / 1024, 1),
                "per_connection_bytes": round(sum(s.size_diff for s in diff) / n, 1),
                "tasks_after": d.health()["tasks"], "top": [str(s) for s in diff[:3]]}
    finally:
        await d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=2000)
    print(json.dumps(asyncio.run(run(p.parse_args().connections)), indent=1))


if __name__ == "__main__":
    main()
