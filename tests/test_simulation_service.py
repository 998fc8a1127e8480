"""The simulation inside a real daemon, watched by real WebSocket clients, on a manual clock."""
from __future__ import annotations

import asyncio

from dbackd.fanout import protocol
from dbackd.core.events import ConfigReplaced
from dbackd.sources.simulation import ManualClock

from .conftest import EXAMPLE

DWORLD = "232769614004748288"

CHURN = """
simulation:
  seed: 21
  presence: {interval: 2}
  messages: {interval: 3}
  churn: {arrivals: 1s, departures: 2s, timing: fixed, max: 3, names: "guest-{n}", colors: ["#123456"]}
servers:
  - snowflake: "1"
    id: pub
    name: Public
    default: true
    users: [{uid: "11", username: a}, {uid: "12", username: b, status: idle}]
"""


def truth(daemon, server: str) -> list[dict]:
    """Every message the world produced for a server, as the hub encodes it."""
    seen: list[dict] = []

    def record(event) -> None:
        message = protocol.for_event(event)
        if message is not None and message.get("server") == server:
            seen.append(message)

    daemon.world.subscribe(record)
    return seen


async def advance(daemon, clock: ManualClock, seconds: float, step: float = 50.0) -> None:
    """Move time and wait until the simulation has run everything due by then."""
    while seconds > 0:
        clock.advance(min(step, seconds))
        seconds -= step
        await asyncio.wait_for(daemon.simulation.caught_up(), 5)


async def test_two_clients_on_one_server_see_the_same_world(start_daemon, open_client):
    clock = ManualClock()
    d = await start_daemon(EXAMPLE, clock=clock)
    a, b = await open_client(d), await open_client(d)
    join_a, join_b = await a.connect("dworld"), await b.connect("dworld")
    assert join_a["data"]["users"] == join_b["data"]["users"]
    expected = truth(d, DWORLD)
    await advance(d, clock, 600)
    assert len(expected) == 600 // 4 + 600 // 5  # the classic rhythm: one change per 4 s, one message per 5 s
    got_a = [await a.recv() for _ in expected]
    got_b = [await b.recv() for _ in expected]
    assert got_a == got_b == expected
    assert {m["type"] for m in got_a} == {"presence", "message"}
    await a.assert_quiet()
    await b.assert_quiet()


async def test_a_late_joiner_sees_the_statuses_broadcast_so_far(start_daemon, open_client):
    clock = ManualClock()
    d = await start_daemon(EXAMPLE, clock=clock)
    early = await open_client(d)
    statuses = {uid: u["status"] for uid, u in (await early.connect("dworld"))["data"]["users"].items()}
    await advance(d, clock, 300)
    await early.send({"type": "probe"})  # its answer comes after everything broadcast so far
    message = await early.recv()
    changes = 0
    while message["type"] != "error":
        if message["type"] == "presence":
            statuses[message["data"]["uid"]] = message["data"]["status"]
            changes += 1
        message = await early.recv()
    assert changes == 300 // 4
    late = await open_client(d)
    users = (await late.connect("dworld"))["data"]["users"]
    assert {uid: u["status"] for uid, u in users.items()} == statuses
    # From here on both see the same.
    await advance(d, clock, 40)
    after_early = [await early.recv() for _ in range(40 // 4 + 40 // 5)]
    after_late = [await late.recv() for _ in range(40 // 4 + 40 // 5)]
    assert after_early == after_late


async def test_unwatched_servers_live_on_and_a_joiner_sees_the_result(start_daemon, open_client):
    clock = ManualClock()
    d = await start_daemon(EXAMPLE, clock=clock)
    expected = truth(d, "987654321098765432")
    await advance(d, clock, 400)
    statuses = {u.uid: u.status for u in d.config.servers[3].users}
    for message in expected:
        if message["type"] == "presence":
            statuses[message["data"]["uid"]] = message["data"]["status"]
    client = await open_client(d)
    users = (await client.connect("repos"))["data"]["users"]
    assert {uid: u["status"] for uid, u in users.items()} == statuses


async def test_visitors_arrive_with_a_name_and_leave_with_delete(start_daemon, open_client):
    clock = ManualClock()
    d = await start_daemon(text=CHURN, clock=clock)
    client = await open_client(d)
    await client.connect("pub")
    expected = truth(d, "1")
    await advance(d, clock, 30, step=1)
    got = [await client.recv() for _ in expected]
    assert got == expected
    arrivals = [m["data"] for m in got if m["type"] == "presence" and "username" in m["data"]]
    departures = [m["data"] for m in got if m["type"] == "presence" and m["data"].get("delete")]
    assert arrivals and departures
    assert arrivals[0]["username"] == "guest-1" and arrivals[0]["roleColor"] == "#123456"
    assert {d_["uid"] for d_ in departures} <= {a_["uid"] for a_ in arrivals}
    assert all(d_ == {"uid": d_["uid"], "status": "offline", "delete": True} for d_ in departures)
    late = await open_client(d)
    users = (await late.connect("pub"))["data"]["users"]
    present = {a_["uid"] for a_ in arrivals} - {d_["uid"] for d_ in departures}
    assert set(users) == {"11", "12"} | present and 0 < len(present) <= 3


async def test_a_new_config_changes_the_rules_without_a_reset(start_daemon, open_client):
    from dbackd.config import load_text

    from .conftest import ROOT

    clock = ManualClock()
    d = await start_daemon(text=CHURN, clock=clock)
    client = await open_client(d)
    await client.connect("pub")
    await advance(d, clock, 10, step=1)
    before = {uid: u.status for uid, u in d.world.servers["1"].users.items()}
    quiet = load_text(CHURN.replace("seed: 21", "seed: 21\n  enabled: false"), "t.yaml", ROOT)
    d.world.apply(ConfigReplaced(quiet))  # what a reload does first; the simulation follows it
    assert {uid: u.status for uid, u in d.world.servers["1"].users.items()} == before
    mark = truth(d, "1")
    await advance(d, clock, 100, step=10)
    assert mark == []  # simulation off: nothing happens any more
    lively = load_text(CHURN.replace("interval: 3", "interval: 0.5"), "t.yaml", ROOT)
    d.world.apply(ConfigReplaced(lively))
    await advance(d, clock, 10, step=1)
    assert sum(m["type"] == "message" for m in mark) > 10  # 0.5 s now, from the statuses it had


async def test_stopping_the_daemon_stops_the_simulation(start_daemon):
    clock = ManualClock()
    d = await start_daemon(EXAMPLE, clock=clock)
    assert d.simulation.running
    engine = d.simulation.engine
    await d.stop()
    assert not d.simulation.running and d.simulation.engine is None
    d.world.apply(ConfigReplaced(d.config))  # an engine still following the world would start its servers again
    assert engine.runners == {}
    clock.advance(100)
    await asyncio.sleep(0)
    assert all(u.status == v.status for u, v in zip(
        sorted(d.world.servers[DWORLD].users.values(), key=lambda u: u.uid), sorted(d.config.servers[0].users, key=lambda u: u.uid)))


async def test_the_system_clock_drives_the_daemon_by_default(open_client):
    from dbackd.config import load_text, with_overrides
    from dbackd.daemon import Daemon
    from dbackd.sources.simulation import SystemClock

    from .conftest import ROOT

    fast = CHURN.replace("presence: {interval: 2}", "presence: {interval: 0}").replace(
        "messages: {interval: 3}", "messages: {interval: 50ms, timing: fixed, statuses: [online, idle, dnd, offline]}")
    fast = fast.replace("  churn:", "  churn: null\n  #")
    d = Daemon(with_overrides(load_text(fast, "t.yaml", ROOT), host="127.0.0.1", port=0))
    assert isinstance(d.simulation.clock, SystemClock)
    await d.start()
    try:
        client = await open_client(d)
        await client.connect("pub")
        first, second = await client.recv_type("message"), await client.recv_type("message")
        assert first["data"]["uid"] in ("11", "12") and second["data"]["channel"] == "527964146659229701"
    finally:
        await d.stop()


async def test_the_service_outlives_a_failing_listener(start_daemon, open_client):
    clock = ManualClock()
    d = await start_daemon(EXAMPLE, clock=clock)
    client = await open_client(d)
    await client.connect("dworld")
    broke = []

    def flaky(event) -> None:
        if not broke:
            broke.append(event)
            raise RuntimeError("a listener broke")

    expected = truth(d, DWORLD)  # (the world stops at a failing subscriber: watch before it)
    d.world.subscribe(flaky)
    await advance(d, clock, 40, step=4)
    assert broke and len(expected) == 40 // 4 + 40 // 5  # nothing lost, the rhythm kept
    assert [await client.recv() for _ in expected] == expected
