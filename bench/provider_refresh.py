"""Provider refresh and reload at size: the longest event-loop stall and the total time.

An embedded daemon (config from a temp file, no simulation) with a user provider that
answers N users for each of S servers. Measured, with a loop-lag probe running:

- start: the first answer laid over the config (N·S users added);
- refresh: a fresh answer in which every user changed status;
- reload: the file edited (one server renamed) and reloaded, the answer laid over again.

One client is joined to each server throughout (in a separate process, reading
everything), so the changes are also encoded and sent. The provider's answers are
built before each phase, as a host program holds its data already. Sizes are SxN; the
default is the issue's: 4x5000 and 1x100000.

    python bench/provider_refresh.py [--sizes 4x5000,1x100000] [--tree PATH]

--tree runs another checkout's dbackd (e.g. an older commit, for comparison).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lagprobe import LagProbe  # noqa: E402

STATUSES = ("online", "idle", "dnd", "offline")


def config_text(servers: int, name: str = "Server") -> str:
    lines = ["servers:"]
    for i in range(servers):
        lines.append(f'  - {{snowflake: "{100 + i}", id: s{i}, name: "{name} {i}"{", default: true" if i == 0 else ""}}}')
    return "\n".join(lines) + "\n"


async def measure(label: str, work) -> dict:
    probe = LagProbe().start()
    t0 = time.perf_counter()
    await work()
    total = time.perf_counter() - t0
    lag = probe.stop()
    return {"phase": label, "total_s": round(total, 2), **lag}


# The clients: one socket per server, joined, reading every frame until the daemon closes it.
CLIENTS = """
import asyncio, sys, aiohttp
async def main(port, servers):
    async with aiohttp.ClientSession() as http:
        async def one(i):
            n = 0
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
                await ws.send_json({"type": "connect", "data": {"server": f"s{i}"}})
                async for msg in ws:
                    n += 1
                    if n == 2:
                        print("joined", flush=True)
            return n
        counts = await asyncio.gather(*(one(i) for i in range(servers)))
        print(sum(counts), flush=True)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def answers(servers: int, users: int, shift: int) -> dict[str, dict]:
    out = {}
    for i in range(servers):
        base = (100 + i) * 10**7
        out[str(100 + i)] = {str(10**17 + base + j): {"username": f"user-{j}", "status": STATUSES[(j + shift) % 4]}
                             for j in range(users)}
    return out


async def run(servers: int, users: int) -> list[dict]:
    from dbackd import Daemon

    current = answers(servers, users, 0)

    async def provide(snowflake: str) -> dict:
        return current.get(snowflake, {})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dback.yaml"
        path.write_text(config_text(servers))
        d = Daemon(path, host="127.0.0.1", port=0, watch=False)
        d.on_get_user_data(provide, timeout=120)
        rows = [await measure("start", d.start)]
        clients = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENTS, str(d.port), str(servers),
                                                       stdout=asyncio.subprocess.PIPE)
        for _ in range(servers):
            assert (await clients.stdout.readline()).strip() == b"joined"
        current = answers(servers, users, 1)

        async def refresh() -> None:
            assert await d.refresh()

        rows.append(await measure("refresh", refresh))

        async def reload() -> None:
            path.write_text(config_text(servers, "Renamed"))
            assert await d.reload()

        rows.append(await measure("reload", reload))
        await d.stop()
        frames = int((await clients.stdout.readline()).strip())
        await clients.wait()
    for row in rows:
        row["size"] = f"{servers} x {users:,}"
    rows[-1]["frames_to_clients"] = frames
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="4x5000,1x100000")
    p.add_argument("--tree", help="import dbackd from this checkout instead")
    args = p.parse_args()
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    import dbackd
    from dbackd.ops import logs

    logs.configure("warning", "console", sys.stderr)
    print(f"dbackd from {Path(dbackd.__file__).parent}")
    print(f"{'size':<14} {'phase':<8} {'total':>9} {'longest stall':>14} {'p99 stall':>10}")
    for size in args.sizes.split(","):
        servers, users = (int(x) for x in size.lower().split("x"))
        for row in asyncio.run(run(servers, users)):
            print(f"{row['size']:<14} {row['phase']:<8} {row['total_s']:>8.2f}s {row['max_ms']:>12.1f}ms "
                  f"{row['p99_ms']:>8.1f}ms")


if __name__ == "__main__":
    main()
