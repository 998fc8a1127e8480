"""The roster: users by status for O(1) random picks, kept in step with the world."""
from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

from dbackd.sources.simulation.roster import Roster


def users(**statuses: str) -> dict:
    return {uid: SimpleNamespace(status=s) for uid, s in statuses.items()}


def test_set_move_and_remove():
    r = Roster()
    r.rebuild(users(a="online", b="idle", c="online"))
    assert r.count(("online",)) == 2 and r.status("b") == "idle"
    r.set("a", "dnd")
    assert r.count(("online",)) == 1 and r.status("a") == "dnd"
    r.remove("c")
    assert r.status("c") is None and r.count(("online", "idle", "dnd", "offline")) == 2
    r.remove("c")  # twice is harmless


def test_sync_keeps_the_order_of_unchanged_users():
    r = Roster()
    r.rebuild(users(a="online", b="online", c="online"))
    before = list(r.uids(("online",)))
    r.sync(users(a="online", b="online", c="online", d="idle"))
    assert list(r.uids(("online",))) == before and r.status("d") == "idle"
    r.sync(users(a="online", c="online"))
    assert set(r.uids(("online", "idle"))) == {"a", "c"}


def test_picks_only_among_the_asked_statuses_and_evenly():
    r = Roster()
    r.rebuild(users(a="online", b="online", c="offline"))
    rng = random.Random(1)
    picks = Counter(r.pick(rng, ("online",)) for _ in range(2000))
    assert set(picks) == {"a", "b"} and abs(picks["a"] - picks["b"]) < 200
    assert r.pick(rng, ("dnd",)) is None


def test_weighted_picks():
    r = Roster()
    r.rebuild(users(a="online", b="online", c="online"))
    rng = random.Random(2)
    picks = Counter(r.pick_weighted(rng, ("online",), {"a": 0, "b": 3}) for _ in range(4000))
    assert picks["a"] == 0 and 2.5 < picks["b"] / picks["c"] < 3.5
    assert r.weight(("online",), {"a": 0, "b": 3}) == 4.0
    assert r.pick_weighted(rng, ("online",), {"a": 0, "b": 0, "c": 0}) is None
