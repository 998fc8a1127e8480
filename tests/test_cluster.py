"""Several nodes, one world, one real Redis on loopback: nodes in this process, and real dbackd processes
where a node must die as a process does.

Every wait is for a state (a frame, a health field, a log line), bounded by a timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from dbackd.config import load_text
from dbackd.daemon import Daemon

from .conftest import RECV_TIMEOUT, ROOT, Client, read_until
from .redis_server import RedisServer

SERVERS = """
servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users: [{uid: "11", username: alice}, {uid: "12", username: bob, status: idle}, {uid: "13", username: carol}]
"""


def text(redis_url: str, prefix: str, node: str, extra: str = "", servers: str = SERVERS) -> str:
    return (f"cluster: {{redis: \"{redis_url}\", prefix: \"{prefix}\", node: \"{node}\", lease: 1s}}\n"
            f"api: {{tokens: [\"cluster-test-token-0123456789\"]}}\n{extra}{servers}")


@pytest.fixture
async def redis():
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def cluster(redis):
    """cluster(n, extra="") -> n started Daemons in this process, sharing the test's Redis under a fresh prefix."""
    started: list[Daemon] = []
    prefix = "t" + uuid.uuid4().hex[:8]

    async def make(n: int, extra: str = "", servers: str = SERVERS) -> list[Daemon]:
        out = []
        for i in range(n):
            node = f"n{len(started) + 1}"
            d = Daemon(load_text(text(redis.url, prefix, node, extra, servers), "t.yaml", ROOT, {}),
                       host="127.0.0.1", port=0, watch=False)
            await d.start()
            started.append(d)
            out.append(d)
        return out

    yield make
    for d in started:
        await d.stop()


async def joined(http, d, server: str = "home") -> tuple[Client, dict]:
    ws = await http.ws_connect(f"http://127.0.0.1:{d.port}/ws")
    c = Client(ws)
    await c.recv_type("server-list")
    return c, await c.connect(server)


async def until(predicate: Callable[[], Any], timeout: float = RECV_TIMEOUT) -> Any:
    """Until `predicate()` holds (the nodes report on their own tasks), bounded by `timeout`."""
    async def wait() -> Any:
        while not (result := predicate()):
            await asyncio.sleep(0.01)
        return result
    return await asyncio.wait_for(wait(), timeout)


async def leader_of(daemons: list[Daemon]) -> Daemon:
    return await until(lambda: next((d for d in daemons if d.leadership.leading), None))


async def test_a_change_on_one_node_reaches_clients_on_the_others_exactly_once(cluster, http):
    a, b, c = await cluster(3)
    on_b, _ = await joined(http, b)
    on_c, _ = await joined(http, c)
    on_a, _ = await joined(http, a)
    async with http.post(f"http://127.0.0.1:{a.port}/api/servers/home/presence",
                         json={"uid": "11", "status": "dnd"},
                         headers={"Authorization": "Bearer cluster-test-token-0123456789"}) as r:
        assert r.status == 200
    await b.broadcast_message("home", "12", "hello from b", "7")
    for client in (on_a, on_b, on_c):  # the same frames, once each, in one order
        assert (await client.recv())["data"] == {"uid": "11", "status": "dnd"}
        assert (await client.recv())["data"] == {"uid": "12", "message": "hello from b", "channel": "7"}
        await client.assert_quiet()


async def test_a_late_joiner_and_a_late_node_get_the_current_state(cluster, http):
    a, b = await cluster(2)
    await a.broadcast_presence("home", "13", "dnd")
    await b.broadcast_presence("home", "14", "online", username="dave", role_color="#123456")
    _, join = await joined(http, b)  # a late joiner on another node
    assert join["data"]["users"]["13"]["status"] == "dnd" and join["data"]["users"]["14"]["username"] == "dave"
    (c,) = await cluster(1)  # a node that starts now catches up before it serves
    _, join = await joined(http, c)
    assert join["data"]["users"]["13"]["status"] == "dnd" and "14" in join["data"]["users"]
    await asyncio.wait_for(c.world.committed(), RECV_TIMEOUT)
    assert c.health()["cluster"]["redis"] == "up"
    await until(lambda: set(c.health()["cluster"]["nodes"]) >= {"n1", "n2", "n3"})  # the others' next beat


async def test_one_node_runs_the_producers(cluster):
    nodes = await cluster(3, extra="simulation: {presence: {interval: 0.2, timing: fixed}, messages: {interval: 0}}\n")
    leader = await leader_of(nodes)
    assert [d.leadership.leading for d in nodes].count(True) == 1
    assert leader.simulation.running and not any(d.simulation.running for d in nodes if d is not leader)
    changed = {d.health()["cluster"]["node"]: 0 for d in nodes}
    for d in nodes:
        d.world.subscribe(lambda e, name=d.health()["cluster"]["node"]: changed.__setitem__(name, changed[name] + 1))
    await until(lambda: min(changed.values()) >= 5)  # every node sees the leader's simulation
    assert max(changed.values()) - min(changed.values()) <= 2  # the same events, give or take those in flight


async def test_a_reload_is_applied_on_every_node(redis, tmp_path, http):
    prefix = "t" + uuid.uuid4().hex[:8]
    daemons = []
    try:
        for node in ("r1", "r2"):
            cfg = tmp_path / f"{node}.yaml"  # one file each, edited the same way (as on two hosts)
            cfg.write_text(text(redis.url, prefix, node))
            d = Daemon(cfg, host="127.0.0.1", port=0, watch=False)
            await d.start()
            daemons.append((d, cfg))
        await leader_of([d for d, _ in daemons])
        clients = [(await joined(http, d))[0] for d, _ in daemons]
        for d, cfg in daemons:
            cfg.write_text(cfg.read_text().replace("username: bob, status: idle", "username: bob, status: dnd"))
            assert await d.reload()
        for client in clients:  # the declared change once, from the leader, on every node
            assert (await client.recv())["data"] == {"uid": "12", "status": "dnd"}
            await client.assert_quiet()
        assert all(d.world.servers["1"].users["12"].status == "dnd" for d, _ in daemons)
    finally:
        for d, _ in daemons:
            await d.stop()


async def test_a_node_with_another_config_says_so(cluster):
    a, = await cluster(1)
    other = SERVERS.replace("name: Home", "name: Elsewhere")
    b, = await cluster(1, servers=other)
    await until(lambda: not a.health()["cluster"]["config_agrees"] and not b.health()["cluster"]["config_agrees"])
    assert a.health()["cluster"]["differs"] == ["n2"] and b.health()["cluster"]["differs"] == ["n1"]


async def test_redis_restarted_mid_run(cluster, redis, http):
    a, b = await cluster(2)
    await leader_of([a, b])
    on_b, _ = await joined(http, b)
    await a.broadcast_presence("home", "11", "dnd")
    assert (await on_b.recv())["data"] == {"uid": "11", "status": "dnd"}
    await redis.stop()
    await until(lambda: a.health()["cluster"]["redis"] == "down" and b.health()["cluster"]["redis"] == "down")
    async with http.post(f"http://127.0.0.1:{a.port}/api/servers/home/presence", json={"uid": "12", "status": "dnd"},
                         headers={"Authorization": "Bearer cluster-test-token-0123456789"}) as r:
        assert r.status == 503 and "Redis" in (await r.json())["error"]  # refused, not lost in silence
    _, join = await joined(http, b)  # still serving, with the last known state
    assert join["data"]["users"]["11"]["status"] == "dnd"
    await redis.restart()  # an empty Redis: its data is gone
    await until(lambda: a.health()["cluster"]["redis"] == "up" and b.health()["cluster"]["redis"] == "up",
                timeout=20)
    leader = await leader_of([a, b])
    follower = b if leader is a else a
    await follower.broadcast_presence("home", "13", "idle")
    for d in (a, b):
        await until(lambda d=d: d.world.servers["1"].users["13"].status == "idle")
    assert a.world.servers["1"].users["11"].status == b.world.servers["1"].users["11"].status == "dnd"


# -- real processes -------------------------------------------------------------------------

async def start_node(config: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbackd", "-c", str(config), "--port", "0", "--log-format", "json", *args,
        stderr=asyncio.subprocess.PIPE)
    started = await read_until(proc, "daemon.started")
    return proc, started["url"]


def aligned(a: list, b: list, run: int = 3) -> tuple[list, list]:
    """`a` and `b` from the first frame where `run` frames of both agree (either may start later)."""
    for i in range(len(a) - run + 1):
        if a[i:i + run] == b[:run]:
            return a[i:], b
    for i in range(len(b) - run + 1):
        if b[i:i + run] == a[:run]:
            return a, b[i:]
    return a, b


async def test_the_leader_dies_and_another_node_continues_the_simulation(redis, tmp_path, http):
    prefix = "t" + uuid.uuid4().hex[:8]
    procs = []
    try:
        nodes = {}
        for node in ("p1", "p2", "p3"):
            cfg = tmp_path / f"{node}.yaml"
            cfg.write_text(text(redis.url, prefix, node,
                                "simulation: {seed: 5, presence: {interval: 0.25, timing: fixed}, messages: {interval: 0}}\n"))
            proc, url = await start_node(cfg)
            procs.append(proc)
            nodes[node] = (proc, url)

        async def health(url: str) -> dict:
            async with http.get(url + "healthz") as r:
                return (await r.json())["cluster"]

        async def leader() -> str:
            while True:
                for name, (_, url) in nodes.items():
                    h = await health(url)
                    if h["is_leader"]:
                        return name
                await asyncio.sleep(0.05)

        first = await asyncio.wait_for(leader(), RECV_TIMEOUT)
        followers = [n for n in nodes if n != first]
        watchers = []
        for name in followers:
            ws = await http.ws_connect(nodes[name][1] + "ws")
            c = Client(ws)
            await c.recv_type("server-list")
            await c.connect("home")
            watchers.append(c)
        for c in watchers:  # the simulation runs, seen from the followers
            assert (await c.recv())["type"] == "presence"
        nodes[first][0].send_signal(signal.SIGKILL)  # no goodbye: its lease runs out
        await nodes[first][0].wait()
        killed = asyncio.get_running_loop().time()
        seen: list[list[dict]] = [[], []]

        async def collect(i: int, c: Client) -> None:
            while True:
                seen[i].append(await c.recv())

        tasks = [asyncio.ensure_future(collect(i, c)) for i, c in enumerate(watchers)]
        del nodes[first]
        second = await asyncio.wait_for(leader(), 10)
        took_over = asyncio.get_running_loop().time() - killed

        async def after_takeover() -> None:
            while min(len(s) for s in seen) < 8:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(after_takeover(), 10)
        resumed = asyncio.get_running_loop().time() - killed
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert second in followers and took_over < 5 and resumed < 5 + 8 * 0.25 + 1
        # The followers joined one after the other, so one may have seen an event or two
        # more before the kill: line their streams up on a common run of frames first.
        a, b = aligned(*seen)
        n = min(len(a), len(b))
        assert n >= 5 and a[:n] == b[:n]  # both followers: the same events, each once, in one order
        # ...and they are the log's, as Redis holds it (the leader trims what its snapshots hold, so
        # the last few): none missing, none twice, after the takeover.
        from redis import asyncio as aioredis

        from dbackd.cluster import codec
        from dbackd.fanout.protocol import for_event

        client = aioredis.Redis.from_url(redis.url, decode_responses=True)
        entries = await client.xrange(f"{prefix}:events:1")
        await client.aclose()
        logged = [for_event(codec.decode("1", fields["e"])) for _, fields in entries]
        last = a[n - 3:n]
        assert any(logged[i:i + 3] == last for i in range(len(logged))), (last, logged[-10:])
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_workers_serve_one_port_from_two_processes(redis, tmp_path, http):
    prefix = "t" + uuid.uuid4().hex[:8]
    cfg = tmp_path / "dback.yaml"
    cfg.write_text(text(redis.url, prefix, "host") + "workers: 2\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbackd", "-c", str(cfg), "--port", "0", "--log-format", "json",
        stderr=asyncio.subprocess.PIPE)
    try:
        started = await read_until(proc, "workers.started")
        url, pids = started["url"], set(started["pids"])
        assert len(pids) == 2
        served_by = set()

        async def both() -> None:
            while len(served_by) < 2:
                async with aiohttp.ClientSession() as fresh:  # a new connection each time
                    async with fresh.get(url + "healthz") as r:
                        served_by.add((await r.json())["cluster"]["node"])

        await asyncio.wait_for(both(), RECV_TIMEOUT)
        assert served_by == {"host-w0", "host-w1"}
        # Reloaded together: the parent passes SIGHUP on to every worker.
        cfg.write_text(cfg.read_text().replace("name: Home", "name: Home Again"))
        proc.send_signal(signal.SIGHUP)
        applied = {(await read_until(proc, "reload.applied"))["worker"] for _ in range(2)}
        assert applied == {0, 1}
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)  # a worker that dies is started again
        restarted = await read_until(proc, "workers.worker_died")
        assert restarted["code"] == -9
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()  # its workers see their lifeline end and stop
            await asyncio.wait_for(proc.wait(), 20)


async def test_workers_stop_when_their_parent_is_killed(redis, tmp_path):
    prefix = "t" + uuid.uuid4().hex[:8]
    cfg = tmp_path / "dback.yaml"
    cfg.write_text(text(redis.url, prefix, "host") + "workers: 2\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbackd", "-c", str(cfg), "--port", "0", "--log-format", "json",
        stderr=asyncio.subprocess.PIPE)
    pids: list[int] = []
    try:
        pids = (await read_until(proc, "workers.started"))["pids"]
        proc.kill()  # no chance to stop its workers
        # The workers hold the same stderr: it ends once both have stopped.
        rest = [json.loads(line) for line in (await asyncio.wait_for(proc.stderr.read(), 20)).splitlines()]
        assert sorted(r["worker"] for r in rest if r["event"] == "workers.parent_gone") == [0, 1]
        assert sorted(r["worker"] for r in rest if r["event"] == "daemon.stopped") == [0, 1]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # only if the test failed: none is left otherwise
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 20)


def test_workers_need_a_cluster(tmp_path, capsys):
    from dbackd.cli import main

    cfg = tmp_path / "dback.yaml"
    cfg.write_text(SERVERS + "workers: 2\n")
    assert main(["check", "-c", str(cfg)]) == 1
    assert "several workers share the world through Redis" in capsys.readouterr().err


async def test_the_leaders_discord_gateway_feeds_every_node(redis, monkeypatch, http):
    pytest.importorskip("discord", minversion="2.4")
    from dbackd.sources.discord import gateway

    from .fakes.discord import FakeDiscord, member, presence

    monkeypatch.setattr(gateway, "GUILD_READY_TIMEOUT", 0.2)
    monkeypatch.setattr(gateway, "IDENTIFY_DELAY", 0.0)
    token, guild, other = "bot-token-for-the-cluster-0123", "111111111111111111", "555555555555555555"
    prefix = "t" + uuid.uuid4().hex[:8]
    daemons = []
    async with FakeDiscord(token=token) as fake:
        fake.add_guild(id=guild, name="Home Guild", members=[member("4401", "alice")], presences=[presence("4401")])
        fake.add_guild(id=other, name="Other Place", members=[member("4402", "bob")], presences=[presence("4402", "dnd")])
        servers = (f"discord: {{bot_token: \"${{T}}\", api_base: \"{fake.api_base}\", auto_servers: true}}\n"
                   f"servers:\n  - {{snowflake: \"{guild}\", id: home, source: discord, default: true}}\n")
        try:
            for node in ("d1", "d2"):
                d = Daemon(load_text(text(redis.url, prefix, node, servers=servers), "t.yaml", ROOT, {"T": token}),
                           host="127.0.0.1", port=0, watch=False)
                await d.start()
                daemons.append(d)
            leader = await leader_of(daemons)
            follower = next(d for d in daemons if d is not leader)
            # The follower runs no gateway, yet has the guild's name, the auto server and the members.
            await until(lambda: follower.world.resolve("other-place") is not None
                        and follower.world.servers[guild].info.name == "Home Guild", timeout=15)
            await until(lambda: set(follower.world.servers[guild].users) == {"4401"}
                        and getattr(follower.world.servers[other].users.get("4402"), "status", None) == "dnd",
                        timeout=15)
            assert follower.health()["discord"]["state"] == "off"
            assert len([c for c in fake.connections]) == 1  # one gateway connection for the cluster
            on_follower, _ = await joined(http, follower)
            fake.presence_update(guild, "4401", "idle")
            assert (await on_follower.recv())["data"] == {"uid": "4401", "status": "idle"}
        finally:
            for d in daemons:
                await d.stop()


async def test_the_cluster_metrics_are_the_guides(cluster, http):
    import re

    from prometheus_client.parser import text_string_to_metric_families

    a, = await cluster(1)
    async with http.get(f"http://127.0.0.1:{a.port}/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    served = {f"{n}_total" if f.type == "counter" else n for n, f in families.items() if n.startswith("dbackd_cluster_")}
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert served and served == {m for m in re.findall(r"`(dbackd_cluster_[a-z_]+)", guide)}
    await until(lambda: a.leadership.leading)
    async with http.get(f"http://127.0.0.1:{a.port}/metrics") as r:
        body = await r.text()
    assert "dbackd_cluster_leader 1.0" in body and "dbackd_cluster_redis_up 1.0" in body


# What anyone with access to Redis could have written: none of it is a change the API would take.
MALFORMED = [
    '{"k":"p","u":["11"],"s":"online"}',  # a list where a uid belongs
    '{"k":"p","u":"11","s":"<b>online</b>"}',
    '{"k":"p","u":"11","s":"online","n":{"first":"x"}}',
    '{"k":"p","u":"11","s":"online","c":"javascript:alert(1)"}',
    json.dumps({"k": "m", "u": "11", "m": "x" * 3_000_000, "ch": "1"}),
    '{"k":"p","u":"11\\n","s":"online"}',
    "not json",
    '{"k":"zz"}',
]


async def test_malformed_entries_in_redis_are_skipped_and_counted(cluster, redis, http):
    from redis import asyncio as aioredis

    a, b = await cluster(2)
    on_b, _ = await joined(http, b)
    stream = f"{a.config.cluster.prefix}:events:1"
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        for entry in MALFORMED:
            await client.xadd(stream, {"e": entry, "n": "n9"})
        await client.xadd(stream, {"x": "no change at all"})
    finally:
        await client.aclose()
    async with http.post(f"http://127.0.0.1:{a.port}/api/servers/home/presence", json={"uid": "11", "status": "dnd"},
                         headers={"Authorization": "Bearer cluster-test-token-0123456789"}) as r:
        assert r.status == 200
    assert (await on_b.recv())["data"] == {"uid": "11", "status": "dnd"}  # and nothing of the bad ones
    await on_b.assert_quiet()
    for d in (a, b):
        cluster_health = d.health()["cluster"]
        assert cluster_health["redis"] == "up" and cluster_health["task"] == "running"
        assert cluster_health["skipped"] == len(MALFORMED) + 1
        async with http.get(f"http://127.0.0.1:{d.port}/metrics") as r:
            assert f"dbackd_cluster_skipped_total {len(MALFORMED) + 1}.0" in await r.text()
    assert b.world.servers["1"].users["11"].username == "alice"
    (c,) = await cluster(1)  # a node started now reads past them too, and serves with Redis
    assert c.health()["cluster"]["redis"] == "up"
    _, join = await joined(http, c)
    assert join["data"]["users"]["11"]["status"] == "dnd"


async def test_an_entry_that_breaks_the_code_costs_that_entry_only(cluster, monkeypatch):
    from dbackd.cluster import codec

    a, = await cluster(1)
    decode = codec.decode

    def broken(server, text):
        if "boom" in text:
            raise RuntimeError("a bug")
        return decode(server, text)

    monkeypatch.setattr(codec, "decode", broken)
    await asyncio.wait_for(a.broadcast_message("home", "11", "boom", "1"), RECV_TIMEOUT)
    await asyncio.wait_for(a.broadcast_presence("home", "12", "dnd"), RECV_TIMEOUT)
    assert a.world.servers["1"].users["12"].status == "dnd"
    assert a.health()["cluster"]["redis"] == "up" and a.health()["cluster"]["skipped"] == 1


async def test_a_cluster_task_that_cannot_catch_up_shows_in_healthz_and_refuses_changes(cluster, http, monkeypatch):
    from dbackd.cluster import codec

    a, = await cluster(1)
    await until(lambda: a.leadership.leading)  # the leader has written the servers' state
    user_from = codec.user_from

    def broken(uid, text):
        raise RuntimeError("a bug")

    monkeypatch.setattr(codec, "user_from", broken)
    b, = await cluster(1)  # its catch-up fails, again and again
    await until(lambda: b.health()["cluster"]["error"] == "internal error: RuntimeError")
    assert b.health()["cluster"]["redis"] == "down"
    async with http.post(f"http://127.0.0.1:{b.port}/api/servers/home/presence", json={"uid": "11", "status": "dnd"},
                         headers={"Authorization": "Bearer cluster-test-token-0123456789"}) as r:
        assert r.status == 503  # at once, not after a wait
    monkeypatch.setattr(codec, "user_from", user_from)
    await until(lambda: b.health()["cluster"]["redis"] == "up", timeout=20)
    assert b.health()["cluster"]["task"] == "running"
