"""How long an edit of the config takes to reach a connected client.

Starts a real `dbackd` process on a loopback port with a config in a temp dir, joins one
WebSocket client, then N times: saves the file the way editors do (write a temp file,
rename it over the config) and measures the time from the rename to the first frame
the change produces at the client. Prints p50, p95 and max.

    python bench/reload_latency.py [--edits 50]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

TEMPLATE = """servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users:
      - {{uid: "11", username: alice, status: online, roleColor: "{colour}"}}
"""


async def read_until(proc, event: str) -> dict:
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        if not line:
            raise RuntimeError(f"dbackd exited before {event}")
        record = json.loads(line)
        if record.get("event") == event:
            return record


async def main(edits: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dback.yaml"
        config.write_text(TEMPLATE.format(colour="#000000"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd", "-c", str(config), "--host", "127.0.0.1", "--port", "0",
            "--log-format", "json", stderr=asyncio.subprocess.PIPE,
        )
        return await _measure(proc, config, edits)


async def _measure(proc, config: Path, edits: int) -> dict:
    try:
        url = (await read_until(proc, "daemon.started"))["url"]
        # Drain further log lines so the pipe never fills.
        drain = asyncio.ensure_future(_drain(proc))
        samples = []
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "ws") as ws:
                await ws.receive(timeout=10)
                await ws.send_json({"type": "connect", "data": {"server": "home"}})
                await ws.receive(timeout=10)
                tmp = config.with_name(".dback.yaml.tmp")
                for i in range(1, edits + 1):
                    colour = f"#{i:06x}"
                    tmp.write_text(TEMPLATE.format(colour=colour))
                    t0 = time.perf_counter()
                    os.replace(tmp, config)
                    msg = await ws.receive(timeout=10)
                    samples.append(time.perf_counter() - t0)
                    data = json.loads(msg.data)
                    assert data["data"].get("roleColor") == colour, data
        drain.cancel()
        samples.sort()
        return {
            "edits": len(samples),
            "p50_ms": round(statistics.median(samples) * 1000, 1),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))] * 1000, 1),
            "max_ms": round(samples[-1] * 1000, 1),
        }
    finally:
        proc.terminate()
        await proc.wait()


async def _drain(proc) -> None:
    while await proc.stderr.readline():
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.edits))))
