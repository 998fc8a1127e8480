"""A big Discord guild as a source: its load, and a storm of presence updates, against the fake Discord.

Three processes on loopback: the fake Discord (tests/fakes/discord.py) with a generated
guild of --members members (20 % online) and scripted presence updates; an embedded
dbackd whose event loop is watched by a loop-lag probe; and a client process that keeps
joining another server (a config server) every 100 ms through the whole load, timing
each join from TCP connect to server-join, and that holds --clients sockets on the big
server for the storm.

Measured: the load (gateway connect to every member in the world) with the longest and
p99 loop stall and the other server's join latency meanwhile; then --rate presence
updates a second for --seconds seconds: how many reached the world and each client, the
delivery latency (the fake's send to the client's receipt, p50/p99/max) and the stalls.
Last, a new client joins the big server every second for --joins joins, first over plain
sockets and then with permessage-deflate (as browsers ask), while the same presence storm
goes on: each join's time (connect to the whole server-join taken) and size, and the stalls.
A stall's "CPU" is the most CPU time the loop's thread used between two probe ticks: the
part of a stall that was the daemon's own work, not a wait for a CPU on a busy machine.

Also measured: the resident memory of the daemon and of the gateway worker once the guild is
loaded, beyond what each held when the worker's session started (discord.py loaded, no member
yet), per member; and the size of the
big server's server-join frame, at --max-actors (the default, 2,000, unless given).

    python bench/discord_load.py [--members 100000] [--rate 1000] [--seconds 10] [--clients 10]
                                 [--max-actors N] [--joins 10]   (a storm needs --max-actors 100000)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from lagprobe import LagProbe  # noqa: E402

TOKEN = "bench-bot-token-0123456789"
BIG = "700000000000000001"

# The fake Discord, in its own process: commands on stdin, answers on stdout.
FAKE = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from tests.fakes.discord import FakeDiscord
async def main(members):
    async with FakeDiscord(token=sys.argv[3], heartbeat_interval=30.0, replay_limit=50000,
                           send_queue_limit=200000, record_limit=1000) as fake:
        guild = fake.add_large_guild(id=sys.argv[4], members=members, online_fraction=0.2, seed=1)
        uids = [uid for uid in guild.members if uid != fake.bot.id]
        print(json.dumps({"api_base": fake.api_base}), flush=True)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                return
            rate, seconds = (float(x) for x in line.split())
            sent = {}
            n = int(rate * seconds)
            t0 = time.time()
            for i in range(n):
                due = t0 + i / rate
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                uid = uids[i % len(uids)]
                status = "dnd" if guild.status(uid) != "dnd" else "idle"
                fake.presence_update(guild.id, uid, status)
                sent[uid] = time.time()
            print(json.dumps({"sent": sent, "elapsed": time.time() - t0}), flush=True)
asyncio.run(main(int(sys.argv[2])))
"""

# The clients: a join to `local` every 100 ms until told to stop; sockets on the big server for the storm.
CLIENTS = r"""
import asyncio, json, sys, time, aiohttp
async def main(port, clients):
    joins, stop = [], asyncio.Event()
    async with aiohttp.ClientSession() as http:
        async def prober():
            while not stop.is_set():
                t0 = time.perf_counter()
                async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                    await ws.receive()
                    await ws.send_json({"type": "connect", "data": {"server": "local"}})
                    while True:
                        msg = json.loads((await ws.receive()).data)
                        if msg["type"] == "server-join":
                            break
                joins.append(time.perf_counter() - t0)
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
        seen = [dict() for _ in range(clients)]
        async def member(i):
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
                await ws.receive()
                await ws.send_json({"type": "connect", "data": {"server": "big"}})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data["type"] == "presence":
                        seen[i][data["data"]["uid"]] = time.time()
                    elif data["type"] == "server-join":
                        print("joined", flush=True)
        probe = asyncio.ensure_future(prober())
        members = []
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "stop-joins":
                stop.set(); await probe
                print(json.dumps({"joins": joins}), flush=True)
            elif line.startswith("bigjoins"):
                _, n, compress = line.split()
                times, sizes = [], []
                for _ in range(int(n)):
                    t0 = time.perf_counter()
                    async with http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0,
                                               compress=int(compress)) as ws:
                        await ws.receive()
                        await ws.send_json({"type": "connect", "data": {"server": "big"}})
                        while True:
                            msg = await ws.receive()
                            if json.loads(msg.data)["type"] == "server-join":
                                break
                    times.append(time.perf_counter() - t0)
                    sizes.append(len(msg.data.encode()))
                    await asyncio.sleep(max(0.0, 1.0 - times[-1]))
                print(json.dumps({"times": times, "sizes": sizes}), flush=True)
            elif line == "seen":
                print(json.dumps({"seen": seen}), flush=True)
            elif line == "members":
                members = [asyncio.ensure_future(member(i)) for i in range(clients)]
            elif line == "report" or not line:
                print(json.dumps({"seen": seen}), flush=True)
                return
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def rss(pid: str = "self") -> int:
    """Resident memory of a process in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def worker_pid() -> str:
    """The gateway worker: this process's child running dbackd.sources.discord.worker."""
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and b"dbackd.sources.discord.worker" in cmdline:
            return proc.name
    raise RuntimeError("no gateway worker")


async def join_size(port: int, server: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
            await ws.receive()
            await ws.send_json({"type": "connect", "data": {"server": server}})
            while True:
                msg = await ws.receive()
                if json.loads(msg.data)["type"] == "server-join":
                    return len(msg.data.encode()) if isinstance(msg.data, str) else len(msg.data)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


async def readline_json(proc) -> dict:
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 600)
        if not line:
            raise RuntimeError("a helper process ended early")
        if line.startswith(b"{"):
            return json.loads(line)


async def run(members: int, rate: float, seconds: float, clients: int, max_actors: Optional[int],
              big_joins: int) -> None:
    from dbackd import Daemon
    from dbackd.ops import logs

    logs.configure("warning", "console", sys.stderr)
    fake = await asyncio.create_subprocess_exec(sys.executable, "-c", FAKE, str(ROOT), str(members), TOKEN, BIG,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**28)
    api_base = (await readline_json(fake))["api_base"]
    os.environ["DISCORD_BOT_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dback.yaml"
        cap = f", max_actors: {max_actors}" if max_actors else ""
        path.write_text(f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{api_base}\"}}\n"
                        "servers:\n"
                        "  - {snowflake: \"1\", id: local, name: Local, default: true, users: [{uid: \"11\", username: a}]}\n"
                        f"  - {{snowflake: \"{BIG}\", id: big, source: discord, include_bots: true{cap}}}\n")
        d = Daemon(path, host="127.0.0.1", port=0, watch=False)
        t0 = time.perf_counter()
        await d.start()  # listening from here on; the gateway connects in the background
        probe = LagProbe().start()
        joiner = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENTS, str(d.port), str(clients),
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**28)
        def guild() -> dict:
            return d.health()["discord"]["servers"]["big"]

        # The worker is connected and its session starting: discord.py loaded, no member yet.
        await d.discord.wait_until(lambda: "SessionStarting" in d.discord.events)
        base_daemon, base_worker = rss(), rss(worker_pid())
        shown_when_whole = min(members + 1, max_actors or 2000)  # the bot is a member too
        await d.discord.wait_until(lambda: guild()["state"] == "ready" and guild()["members"] == members + 1
                                   and len(d.world.servers[BIG].users) >= shown_when_whole)
        load_time = time.perf_counter() - t0
        grown_daemon, grown_worker = rss() - base_daemon, rss(worker_pid()) - base_worker
        # Past 75,000 members GUILD_CREATE has no presences: the statuses come with the chunks.
        online = sum(1 for u in d.world.servers[BIG].users.values() if u.status != "offline")
        load_lag = probe.stop()
        joiner.stdin.write(b"stop-joins\n")
        joins = (await readline_json(joiner))["joins"]
        print(f"load: {members:,} members in {load_time:.1f} s, {len(d.world.servers[BIG].users):,} shown "
              f"({online:,} not offline); loop stall max {load_lag['max_ms']} ms (CPU {load_lag['cpu_max_ms']} ms), "
              f"p99 {load_lag['p99_ms']} ms")
        print(f"memory beyond the session's start: daemon {grown_daemon / 2**20:.1f} MiB "
              f"({grown_daemon / members:.0f} B a member), worker {grown_worker / 2**20:.1f} MiB "
              f"({grown_worker / members:.0f} B a member); baseline daemon {base_daemon / 2**20:.1f} MiB, "
              f"worker {base_worker / 2**20:.1f} MiB")
        print(f"server-join of the big server: {await join_size(d.port, 'big') / 1024:.0f} KiB "
              f"at max_actors {max_actors or '2000 (default)'}")
        print(f"joins to another server during the load: {len(joins)}, p50 {pct(joins, .5) * 1000:.1f} ms, "
              f"p99 {pct(joins, .99) * 1000:.1f} ms, max {max(joins) * 1000:.1f} ms")
        if seconds <= 0:  # the load only (with a cap, a storm's updates mostly meet members not shown)
            joiner.stdin.write(b"report\n")
            await readline_json(joiner)
            clients = 0
        else:
            joiner.stdin.write(b"members\n")
        for _ in range(clients):
            assert (await joiner.stdout.readline()).strip() == b"joined"
        applied = [0]

        def count(event) -> None:
            if getattr(event, "server", None) == BIG:
                applied[0] += 1

        d.world.subscribe(count)
        if seconds <= 0:
            await d.stop()
            fake.stdin.close()
            await asyncio.wait_for(fake.wait(), 10)
            return
        probe = LagProbe().start()
        fake.stdin.write(f"{rate} {seconds}\n".encode())
        sent = (await readline_json(fake))["sent"]
        await d.discord.wait_until(lambda: applied[0] >= len(sent))
        storm_lag = probe.stop()
        joiner.stdin.write(b"seen\n")
        seen = (await readline_json(joiner))["seen"]
        latencies = [t - sent[uid] for client in seen for uid, t in client.items() if uid in sent]
        delivered = min(len(client) for client in seen) if seen else 0
        print(f"storm: {len(sent):,} presence updates at {rate:g}/s; {applied[0]:,} applied to the world; "
              f"each of {clients} clients got at least {delivered:,}")
        print(f"delivery (fake → client): p50 {pct(latencies, .5) * 1000:.1f} ms, p99 {pct(latencies, .99) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms; loop stall max {storm_lag['max_ms']} ms, p99 {storm_lag['p99_ms']} ms")
        for compress, label in ((0, "plain"), (15, "deflate")):
            applied[0] = 0
            probe = LagProbe().start()
            fake.stdin.write(f"{rate} {big_joins}\n".encode())
            joiner.stdin.write(f"bigjoins {big_joins} {compress}\n".encode())
            result = await readline_json(joiner)
            sent = (await readline_json(fake))["sent"]
            await d.discord.wait_until(lambda: applied[0] >= len(sent))
            join_lag = probe.stop()
            times = result["times"]
            print(f"joins of the big server ({label}), one a second during a storm of {rate:g}/s: {len(times)}, "
                  f"{max(result['sizes']) / 1e6:.1f} MB each; p50 {pct(times, .5) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms; loop stall max {join_lag['max_ms']} ms "
                  f"(CPU {join_lag['cpu_max_ms']} ms), p99 {join_lag['p99_ms']} ms")
        await d.stop()
        for proc in (fake, joiner):
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--max-actors", type=int, default=None, help="the big server's max_actors (default: 2,000)")
    p.add_argument("--joins", type=int, default=10, help="joins of the big server, one a second, each way")
    args = p.parse_args()
    if args.seconds > 0 and (args.max_actors or 2000) <= args.members:
        # The storm waits for every update to reach the world; one for a member not shown never does.
        p.error("a presence storm needs every member shown: add --max-actors 100000 (or --seconds 0)")
    asyncio.run(run(args.members, args.rate, args.seconds, args.clients, args.max_actors, args.joins))


if __name__ == "__main__":
    main()
