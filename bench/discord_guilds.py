"""Many large guilds with `auto_servers`: how long until every guild's members are all shown.

The fake Discord (tests/fakes/discord.py, in this process) holds --guilds generated guilds
of --members members each (20 % online; over Discord's large_threshold, so GUILD_CREATE
lists only who is online and the rest need Request Guild Members), and keeps Discord's
120 commands per 60 s per connection (close 4008 past it) and its one request for all of a
guild's members per 30 s. The worker must pace its member requests within that.

Measured: the time from the daemon's start until the first and until every guild is a
server with all its members in the world, and whether any connection was closed with 4008.

    python bench/discord_guilds.py [--guilds 300] [--members 300]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-bot-token-0123456789"


async def run(guilds: int, members: int) -> None:
    from dbackd import Daemon
    from dbackd.ops import logs
    from tests.fakes.discord import FakeDiscord

    logs.configure("warning", "console", sys.stderr)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=30.0, record_limit=1000) as fake:
        ids = [fake.add_large_guild(name=f"Guild {i}", members=members, online_fraction=0.2, roles=2, channels=1,
                                    seed=i).id for i in range(guilds)]
        os.environ["DISCORD_BOT_TOKEN"] = TOKEN
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dback.yaml"
            path.write_text(f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{fake.api_base}\", "
                            "auto_servers: true, max_actors: 100000}\n"
                            "servers:\n"
                            "  - {snowflake: \"1\", id: local, name: Local, default: true, "
                            "users: [{uid: \"11\", username: a}]}\n")
            d = Daemon(path, host="127.0.0.1", port=0, watch=False)
            t0 = time.perf_counter()
            await d.start()

            def whole() -> int:
                return sum(1 for gid in ids if gid in d.world.servers and len(d.world.servers[gid].users) == members)

            first = None
            while True:
                done = whole()
                if done and first is None:
                    first = time.perf_counter() - t0
                if done == guilds:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - t0
            closed = sum(1 for c in fake.connections if c.close_code == 4008)
            print(f"{guilds} guilds x {members} members, auto_servers: first guild whole after {first:.1f} s, "
                  f"all {guilds} whole after {elapsed:.1f} s; connections closed with 4008: {closed}; "
                  f"RATE_LIMITED answers: {fake.counts['rate_limited']}")
            await d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guilds", type=int, default=300)
    p.add_argument("--members", type=int, default=300)
    args = p.parse_args()
    asyncio.run(run(args.guilds, args.members))


if __name__ == "__main__":
    main()
