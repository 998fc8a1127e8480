"""Benchmark: the simulation engine alone, 100 servers × 1,000 users at the classic rates.

    .venv/bin/python bench/sim_engine.py [--servers 100] [--users 1000] [--hours 1] [--hub]

Builds the config in memory (`generate` makes the users, `preset: classic` gives every
server a status change every 4 s and a message every 5 s), then runs the engine through
the simulated time as fast as it can and reports:

- CPU seconds per simulated hour: what keeping every server alive costs the daemon;
- events per CPU second: the most the engine can produce (it runs flat out here).

With --hub the world also feeds a hub with no clients, as in the daemon when nobody
watches. Nothing is written to disk unless --json FILE is given.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbackd.ops import logs  # noqa: E402
from dbackd.config import load_data  # noqa: E402
from dbackd.fanout.hub import Hub  # noqa: E402
from dbackd.sources.simulation import Engine  # noqa: E402
from dbackd.core.world import World  # noqa: E402


def config(servers: int, users: int):
    return load_data({
        "simulation": {"preset": "classic", "seed": 1, "generate": {"count": users}},
        "servers": [{"snowflake": str(10**17 + i), "id": f"s{i}", "name": f"Server {i}"} for i in range(servers)],
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--hub", action="store_true", help="also fan out to a hub with no clients")
    parser.add_argument("--json", metavar="FILE", help="write the numbers as JSON too")
    args = parser.parse_args()
    logs.configure("warning", "console")

    t0 = time.process_time()
    cfg = config(args.servers, args.users)
    world = World(cfg)
    if args.hub:
        Hub(world)
    built = time.process_time() - t0

    events = 0

    def count(_event: object) -> None:
        nonlocal events
        events += 1

    world.subscribe(count)
    engine = Engine(world, epoch=time.time())
    seconds = args.hours * 3600
    t0, w0 = time.process_time(), time.perf_counter()
    engine.advance_to(seconds)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0

    per_hour = cpu / args.hours
    result = {
        "servers": args.servers,
        "users_per_server": args.users,
        "simulated_seconds": seconds,
        "hub": args.hub,
        "events": events,
        "steps": engine.steps,
        "build_cpu_s": round(built, 3),
        "run_cpu_s": round(cpu, 3),
        "run_wall_s": round(wall, 3),
        "cpu_s_per_simulated_hour": round(per_hour, 3),
        "share_of_one_core": f"{100 * per_hour / 3600:.4f}%",
        "events_per_cpu_s": round(events / cpu) if cpu else None,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    expected = args.servers * (seconds // 4 + seconds // 5)
    assert events == expected, (events, expected)  # the classic rhythm, exactly
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
