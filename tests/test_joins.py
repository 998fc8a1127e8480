"""Join frames kept by the fan-out side: encoded once, re-encoded only for users an event changed."""
from __future__ import annotations

from dbackd.config import load_text
from dbackd.core import jsontext
from dbackd.fanout import protocol
from dbackd.fanout.joins import Joins

from .conftest import ROOT
from .test_world import BASE, world

def test_the_join_map_is_cached_and_follows_changes():
    w = world()
    joins = Joins(w)
    state = w.servers["1"]
    first = joins.users_json(state)
    assert joins.users_json(state) is first
    assert jsontext.parse(first) == {u.uid: protocol.entry(u) for u in state.users.values()}
    w.set_presence("a", "12", "dnd")
    second = joins.users_json(state)
    assert second is not first and jsontext.parse(second)["12"]["status"] == "dnd"
    assert list(jsontext.parse(second)) == ["11", "12"]  # the world's order


def test_a_user_removed_or_added_leaves_or_enters_the_join():
    w = world()
    joins = Joins(w)
    state = w.servers["1"]
    joins.users_json(state)
    w.set_presence("a", "31", "online", "guest")
    assert list(jsontext.parse(joins.users_json(state))) == ["11", "12", "31"]
    w.set_presence("a", "31", "online", delete=True)
    assert list(jsontext.parse(joins.users_json(state))) == ["11", "12"]


def test_a_reload_that_replaces_a_server_gets_a_fresh_join():
    w = world()
    joins = Joins(w)
    joins.users_json(w.servers["2"])
    w.reconfigure(load_text(BASE.split("  - {snowflake")[0], "t.yaml", ROOT, {}))
    w.reconfigure(load_text(BASE.replace('username: z}', 'username: q}'), "t.yaml", ROOT, {}))
    assert jsontext.parse(joins.users_json(w.servers["2"]))["21"]["username"] == "q"


def test_pending_join_fragments_encode_in_slices():
    w = world()
    joins = Joins(w)
    for i in range(25):
        w.set_presence("a", f"3{i:02d}", "online", f"guest{i}")
    state = w.servers["1"]
    assert joins.encode_pending(state, 10) == 17  # 2 declared + 25 new, 10 done
    assert joins.encode_pending(state, 10) == 7
    assert joins.encode_pending(state) == 0
    assert len(jsontext.parse(joins.users_json(state))) == 27
