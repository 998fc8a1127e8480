"""What a Discord login check costs: a join that asks Discord, one from the cache, and crowds.

Starts a fake Discord API (`GET /api/v10/users/@me`, answering at once) and a dbackd daemon
on loopback in this process, then times `connect` → `server-join` over real WebSockets and
counts the requests Discord received.

    python bench/oauth_checks.py [--joins 200] [--crowd 300]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from dbackd.ops import logs
from dbackd.config import load_text, with_overrides
from dbackd.daemon import Daemon

USER = {"id": "80351110224678912", "username": "nelly"}


class FakeDiscord:
    def __init__(self) -> None:
        self.calls = 0

    async def me(self, request: web.Request) -> web.Response:
        self.calls += 1
        return web.json_response(USER)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


async def main(joins: int, crowd: int) -> None:
    logs.configure("error", "json")
    fake = FakeDiscord()
    app = web.Application()
    app.router.add_get("/api/v10/users/@me", fake.me)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    config = load_text(f"""
oauth: {{api_base: "http://127.0.0.1:{port}/api/v10", client_id: "1"}}
limits: {{max_connections_per_address: 100000, oauth_checks_per_address: 100000, oauth_checks_per_minute: 1000000,
          joins_per_second: 100000, joins_burst: 100000, frames_per_second: 100000, frames_burst: 100000}}
servers:
  - {{snowflake: "2", id: priv, name: P, default: true, passworded: true, access: {{any_discord_user: true}}}}
""", "bench.yaml", Path.cwd(), {})
    daemon = Daemon(with_overrides(config, host="127.0.0.1", port=0))
    await daemon.start()
    url = f"ws://127.0.0.1:{daemon.port}/ws"

    async def join(ws: aiohttp.ClientWebSocketResponse, token: str) -> float:
        started = time.perf_counter()
        await ws.send_json({"type": "connect", "data": {"server": "priv", "discordToken": token, "discordUser": USER}})
        answer = json.loads((await ws.receive(timeout=10)).data)
        assert answer["type"] == "server-join", answer
        return (time.perf_counter() - started) * 1000

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            ws = await http.ws_connect(url)
            await ws.receive()
            asked = [await join(ws, f"token-{i}") for i in range(joins)]
            before = fake.calls
            cached = [await join(ws, f"token-{i}") for i in range(joins)]
            print(f"{joins} sequential joins, each asking Discord: p50 {statistics.median(asked):.2f} ms, "
                  f"p95 {percentile(asked, 0.95):.2f} ms; Discord requests {before}")
            print(f"the same {joins} joins again, from the cache: p50 {statistics.median(cached):.2f} ms, "
                  f"p95 {percentile(cached, 0.95):.2f} ms; Discord requests {fake.calls - before}")
            sockets = [await http.ws_connect(url) for _ in range(crowd)]
            for s in sockets:
                await s.receive()
            for label, tokens in (("one token", ["crowd"] * crowd), ("distinct tokens", [f"c-{i}" for i in range(crowd)])):
                before, started = fake.calls, time.perf_counter()
                await asyncio.gather(*(join(s, t) for s, t in zip(sockets, tokens)))
                print(f"{crowd} concurrent joins, {label}: all joined in {(time.perf_counter() - started) * 1000:.0f} ms; "
                      f"Discord requests {fake.calls - before}")
            for s in sockets:
                await s.close()
            await ws.close()
    finally:
        await daemon.stop()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=200)
    parser.add_argument("--crowd", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.joins, args.crowd))
