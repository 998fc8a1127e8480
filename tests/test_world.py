"""The world's own rules: one place that changes state, events in order, transitions between declarations."""
from __future__ import annotations

import pytest

from dbackd.config import load_text
from dbackd.config.diff import diff
from dbackd.core.events import (ClientIdChanged, ConfigReplaced, MessageSent, PresenceChanged, ServerClosed,
                           ServerListChanged)
from dbackd.core.world import DeclaredUser, UnknownServer, UnknownUser, World

from .conftest import ROOT

BASE = """
servers:
  - snowflake: "1"
    id: a
    name: A
    default: true
    users: [{uid: "11", username: x}, {uid: "12", username: y, status: idle}]
  - {snowflake: "2", id: b, name: B, users: [{uid: "21", username: z}]}
"""


def world(text: str = BASE) -> World:
    return World(load_text(text, "t.yaml", ROOT, {}))


def recorded(w: World) -> list:
    seen: list = []
    w.subscribe(seen.append)
    return seen


def test_resolve_by_id_default_and_snowflake():
    w = world()
    assert w.resolve("a") is w.resolve("default") is w.resolve("1") is w.resolve(None) is w.servers["1"]
    assert w.resolve("b").snowflake == "2" and w.resolve("nope") is None
    with pytest.raises(UnknownServer):
        w.get("nope")


def test_presence_adds_changes_and_removes_in_one_place():
    w = world()
    seen = recorded(w)
    w.set_presence("a", "13", "online", "newcomer", "#ABCDEF")
    w.set_presence("a", "13", "dnd")
    assert (w.servers["1"].users["13"].username, w.servers["1"].users["13"].status) == ("newcomer", "dnd")
    assert w.servers["1"].users["13"].role_color == "#abcdef"
    w.set_presence("a", "13", "dnd", delete=True)
    assert "13" not in w.servers["1"].users
    assert [type(e) for e in seen] == [PresenceChanged] * 3


def test_presence_checks_before_anything_changes():
    w = world()
    seen = recorded(w)
    with pytest.raises(UnknownUser, match="give a username"):
        w.set_presence("a", "99", "online")
    with pytest.raises(UnknownUser):
        w.set_presence("a", "99", "online", delete=True)
    with pytest.raises(DeclaredUser):
        w.set_presence("a", "11", "online", delete=True)
    with pytest.raises(ValueError):
        w.set_presence("a", "11", "away")
    with pytest.raises(UnknownUser):
        w.say("a", "99", "hi", "c")
    assert seen == []


def test_a_broken_subscriber_does_not_keep_the_event_from_the_others():
    w = world()
    w.subscribe(lambda e: 1 / 0)
    seen = recorded(w)
    w.say("a", "11", "hi", "c")
    assert seen == [MessageSent("1", "11", "hi", "c")]


CHANGED = """
servers:
  - snowflake: "1"
    id: a
    name: A renamed
    default: true
    passworded: true
    access: {any_discord_user: true}
    oauth: {client_id: "506432803173433344"}
    users: [{uid: "11", username: x2}, {uid: "12", username: y, status: online}, {uid: "13", username: new}]
  - {snowflake: "3", id: c, name: C, users: [{uid: "31", username: w}, {uid: "32", username: v}]}
"""


def test_a_transition_in_order():
    w = world()
    w.set_presence("a", "11", "dnd")  # a live status the declaration does not name
    new = load_text(CHANGED, "t.yaml", ROOT, {})
    seen = recorded(w)
    w.reconfigure(new)
    kinds = [type(e).__name__ for e in seen]
    assert kinds[:5] == ["ConfigReplaced", "ServerClosed", "ServerClosed", "ServerListChanged", "ClientIdChanged"]
    assert seen[1] == ServerClosed("2", removed=True) and seen[2] == ServerClosed("1", removed=False)
    assert seen[4] == ClientIdChanged("1", "506432803173433344")
    presences = {(e.server, e.uid): e for e in seen if isinstance(e, PresenceChanged)}
    assert presences[("1", "11")] == PresenceChanged("1", "11", "dnd", "x2", None, renamed=True)  # the live status stays
    assert presences[("1", "12")].status == "online"  # a changed declared status wins
    assert presences[("1", "13")].username == "new"
    assert {uid for sf, uid in presences if sf == "3"} == {"31", "32"}  # a new server's users arrive as additions
    assert set(w.servers) == {"1", "3"} and w.config is new
    assert w.server_list()["1"] == {"id": "a", "name": "A renamed", "default": True, "passworded": True}


def test_a_transition_reads_the_state_of_its_time():
    w = world()
    new = load_text(BASE.replace("username: x}", "username: x-renamed}"), "t.yaml", ROOT, {})
    events = w.transition(new, diff(w.config, new))
    replaced = next(events)
    assert isinstance(replaced, ConfigReplaced)
    w.apply(replaced)
    w.set_presence("a", "11", "idle")  # another source moves the user in between
    rename = next(events)
    assert rename == PresenceChanged("1", "11", "idle", "x-renamed", None)  # as asked; applied, it is a rename


def test_server_list_is_rebuilt_after_list_events():
    w = world()
    first = w.server_list()
    assert w.server_list() is first
    w.apply(ServerListChanged())
    assert w.server_list() is not first and w.server_list() == first


def test_toward_is_the_one_diff_from_a_live_user_to_a_wanted_one():
    from dbackd.core.world import UserState, toward

    live = UserState("11", "x", "online", "#ffffff")
    assert toward("1", "11", live, ("online", "x", "#ffffff")) is None
    assert toward("1", "11", live, ("idle", "x", "#ffffff")) == PresenceChanged("1", "11", "idle")
    assert toward("1", "11", live, ("idle", "y", "#ff0000")) == PresenceChanged("1", "11", "idle", "y", "#ff0000")
    assert toward("1", "11", live, None) == PresenceChanged("1", "11", "online", delete=True)
    assert toward("1", "12", None, None) is None
    assert toward("1", "12", None, ("dnd", "z", "#00ff00")) == PresenceChanged("1", "12", "dnd", "z", "#00ff00")


def test_a_colour_is_held_in_lower_case_wherever_it_came_from():
    w = world(BASE.replace("username: x}", "username: x, roleColor: \"#ABCDEF\"}"))
    assert w.servers["1"].users["11"].role_color == "#abcdef"
    assert w.set_presence("a", "31", "online", "guest", "#FF0000").role_color == "#ff0000"
