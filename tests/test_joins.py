"""Join frames kept by the fan-out side: encoded once, re-encoded only for users an event changed,
a big server's frame kept and followed by the changes since, built a slice per loop turn."""
from __future__ import annotations

import asyncio

from dbackd.config import load_text
from dbackd.core import jsontext
from dbackd.fanout import joins as joins_module
from dbackd.fanout import protocol
from dbackd.fanout.joins import Joins

from .conftest import ROOT
from .test_world import BASE, world


def users(messages) -> dict:
    """The users map of a join as a client ends with it: the server-join, then the presences after it."""
    first, *rest = [jsontext.parse(bytes(m.payload)) for m in messages]
    assert first["type"] == "server-join"
    shown = dict(first["data"]["users"])
    for m in rest:
        data = m["data"]
        if data.get("delete"):
            shown.pop(data["uid"], None)
        elif data["uid"] in shown:
            shown[data["uid"]].update({k: v for k, v in data.items() if k != "username"})
        else:
            shown[data["uid"]] = data
    return shown


def test_the_join_is_kept_and_follows_changes():
    w = world()
    joins = Joins(w)
    state = w.servers["1"]
    first = joins.messages(state, "a")
    assert joins.messages(state, "a") == first
    assert users(first) == {u.uid: protocol.entry(u) for u in state.users.values()}
    w.set_presence("a", "12", "dnd")
    second = joins.messages(state, "a")
    assert len(second) == 1 and second != first  # a small server: the map is the current state
    assert users(second)["12"]["status"] == "dnd"
    assert list(users(second)) == ["11", "12"]  # the world's order


def test_the_join_echoes_the_request_and_carries_the_name():
    w = world()
    frame = jsontext.parse(bytes(Joins(w).messages(w.servers["1"], "default")[0].payload))
    assert frame["data"]["request"] == {"server": "default"} and frame["data"]["serverName"] == "A"


def test_a_user_removed_or_added_leaves_or_enters_the_join():
    w = world()
    joins = Joins(w)
    state = w.servers["1"]
    joins.messages(state, "a")
    w.set_presence("a", "31", "online", "guest")
    assert list(users(joins.messages(state, "a"))) == ["11", "12", "31"]
    w.set_presence("a", "31", "online", delete=True)
    assert list(users(joins.messages(state, "a"))) == ["11", "12"]
    w.set_presence("a", "31", "idle", "back")
    assert list(users(joins.messages(state, "a"))) == ["11", "12", "31"]


def test_a_reload_that_replaces_a_server_gets_a_fresh_join():
    w = world()
    joins = Joins(w)
    joins.messages(w.servers["2"], "b")
    w.reconfigure(load_text(BASE.split("  - {snowflake")[0], "t.yaml", ROOT, {}))
    w.reconfigure(load_text(BASE.replace('username: z}', 'username: q}'), "t.yaml", ROOT, {}))
    assert users(joins.messages(w.servers["2"], "b"))["21"]["username"] == "q"


def big_world(monkeypatch, n: int = 60):
    monkeypatch.setattr(joins_module, "BIG_SERVER", 50)
    monkeypatch.setattr(joins_module, "CHUNK", 7)
    w = world()
    for i in range(n):
        w.set_presence("a", f"3{i:02d}", "online", f"guest{i}")
    return w


def test_a_big_servers_frame_is_kept_and_the_changes_since_follow_it(monkeypatch):
    w = big_world(monkeypatch)
    joins = Joins(w)
    state = w.servers["1"]
    first = joins.messages(state, "a")
    w.set_presence("a", "12", "dnd")
    w.set_presence("a", "300", "online", delete=True)
    w.set_presence("a", "301", "idle", "renamed")
    w.set_presence("a", "399", "online", "newcomer")
    later = joins.messages(state, "a")
    assert later[0] is first[0]  # the same bytes, not built again
    assert [jsontext.parse(bytes(m.payload))["type"] for m in later[1:]] == ["presence"] * 5  # a rename: 2
    # The client ends with the current state, the rename included (removed and added again).
    assert users(later) == {u.uid: protocol.entry(u) for u in state.users.values()}


def test_a_long_tail_of_changes_makes_a_fresh_frame(monkeypatch):
    w = big_world(monkeypatch)
    monkeypatch.setattr(joins_module, "TAIL_LIMIT", 3)
    joins = Joins(w)
    state = w.servers["1"]
    first = joins.messages(state, "a")
    for status in ("dnd", "idle", "online", "dnd"):
        w.set_presence("a", "12", status)
    later = joins.messages(state, "a")
    assert later[0] is not first[0] and len(later) == 1
    assert users(later) == {u.uid: protocol.entry(u) for u in state.users.values()}


async def test_a_join_is_made_ready_a_slice_per_loop_turn(monkeypatch):
    w = big_world(monkeypatch)
    monkeypatch.setattr(joins_module, "ENCODE_PER_TURN", 10)
    monkeypatch.setattr(joins_module, "JOIN_PER_TURN", 14)
    joins = Joins(w)
    state = w.servers["1"]
    turns = 0
    task = asyncio.ensure_future(joins.ready(state, "a"))
    while not task.done():
        turns += 1
        w.set_presence("a", "11", "dnd" if turns % 2 else "idle")  # changes meanwhile are taken too
        await asyncio.sleep(0)
    # 62 users in 9 chunks of 7: 6 slices to encode, 2 to join 4 chunks (the last 2 with the frame)
    assert turns >= 6 + 2 + 1
    assert users(joins.messages(state, "a")) == {u.uid: protocol.entry(u) for u in state.users.values()}


async def test_a_late_joiner_of_a_big_server_ends_with_the_current_state(start_daemon, open_client, monkeypatch):
    monkeypatch.setattr(joins_module, "BIG_SERVER", 2)
    d = await start_daemon(text=BASE)
    first = await open_client(d)
    await first.connect("a")  # builds and keeps the frame
    d.world.set_presence("a", "12", "dnd")
    d.world.set_presence("a", "31", "online", "guest")
    late = await open_client(d)
    shown = (await late.connect("a"))["data"]["users"]
    assert shown["12"]["status"] == "idle" and "31" not in shown  # the kept frame...
    assert (await late.recv_type("presence"))["data"] == {"uid": "12", "status": "dnd"}  # ...then what changed since
    assert (await late.recv_type("presence"))["data"] == {"uid": "31", "status": "online", "username": "guest",
                                                          "roleColor": "#ffffff"}
    await late.assert_quiet()
