"""Embed dbackd in your own asyncio program: a small bot-like script.

It starts a Daemon from examples/minimal.yaml inside its own event loop, registers two
callbacks (a user provider that adds the bot's own members, and a client-id provider),
then moves statuses and posts messages the way a Discord bot would relay them, and
stops cleanly. Open http://127.0.0.1:3000/ while it runs to watch.

    python examples/embed.py                  # until Ctrl-C
    python examples/embed.py --duration 10    # ten seconds, then stop
"""
from __future__ import annotations

import argparse
import asyncio
import random
import signal
from pathlib import Path

import structlog

from dbackd import Daemon
from dbackd.ops import logs

HERE = Path(__file__).resolve().parent
# The bot's own members, as a Discord library would give them (ids as ints).
MEMBERS = {
    200000000000000002: ("bob", "#43b581"),
    200000000000000003: ("carol", "#faa61a"),
}
CHANNEL = 300000000000000001
LINES = ["hello!", "anyone around?", "brb", "nice weather in the terrarium", "o/"]

log = structlog.get_logger("embed")


async def run(duration: float | None, interval: float, port: int) -> int:
    daemon = Daemon(HERE / "minimal.yaml", port=port, watch=False)

    @daemon.on_get_user_data
    async def members(server: str) -> dict:
        # Called at start (and on daemon.refresh()): added to the server's declared users.
        return {str(uid): {"username": name, "roleColor": color} for uid, (name, color) in MEMBERS.items()}

    @daemon.on_get_client_id(timeout=1.0)
    async def client_id(server: str) -> str:
        return "400000000000000001"  # the Discord application the page logs in with

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    async with daemon:  # start() ... stop(), even if the loop below fails
        server = daemon.servers()[0]["snowflake"]
        uids = [u["uid"] for u in daemon.users(server)]
        log.info("embed.ready", url=daemon.url, users=len(uids))
        moves = 0
        while not stop.is_set():
            uid = random.choice(uids)
            if random.random() < 0.5:
                await daemon.broadcast_presence(server, uid, random.choice(["online", "idle", "dnd"]))
            else:
                await daemon.broadcast_message(server, uid, random.choice(LINES), CHANNEL)
            moves += 1
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
        log.info("embed.done", moves=moves, statuses={u["uid"]: u["status"] for u in daemon.users(server)})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between moves (default: 1)")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on; 0 picks a free one")
    args = parser.parse_args()
    logs.configure("info", "auto")
    return asyncio.run(run(args.duration, args.interval, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
