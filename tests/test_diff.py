"""What changed between two declarations, and how a change list is told."""
from __future__ import annotations

from dbackd.config import load_text
from dbackd.config.diff import describe, diff, summary

from .conftest import ROOT

OLD = """
listen: {port: 3000}
servers:
  - {snowflake: "1", id: a, name: A, default: true, users: [{uid: "11", username: x}, {uid: "12", username: y}]}
  - {snowflake: "2", id: b, name: B, passworded: true, password: "${P}"}
  - {snowflake: "3", id: c, name: C}
"""


def load(text: str, env: dict | None = None):
    return load_text(text, "t.yaml", ROOT, {"P": "one", **(env or {})})


def test_no_change():
    d = diff(load(OLD), load(OLD))
    assert describe(d, load(OLD), load(OLD)) == ["no changes"]
    assert summary(["no changes"]) == {"count": 0, "changes": ["no changes"]}


def test_every_kind_of_change():
    old = load(OLD)
    new = load(OLD.replace("port: 3000", "port: 3001")
               .replace('{uid: "12", username: y}', '{uid: "12", username: y, status: dnd}, {uid: "13", username: w}')
               .replace('{uid: "11", username: x}, ', '')
               .replace('  - {snowflake: "3", id: c, name: C}\n', '  - {snowflake: "4", id: d, name: D, users: [{uid: "41", username: q}]}\n'),
               {"P": "two"})
    d = diff(old, new)
    assert d.servers_added == ("4",) and d.servers_removed == ("3",)
    assert d.access_changed == ("2",) and d.server_list_changed and d.restart_required == ("listen",)
    changes = {(c.server, c.uid): c for c in d.users}
    assert changes[("1", "11")].new is None and changes[("1", "13")].old is None
    assert changes[("1", "12")].fields == ("status",)
    assert changes[("4", "41")].old is None  # a new server's users are additions
    lines = describe(d, old, new)
    assert "+ server d (4, 1 user)" in lines
    assert not any("user d/41" in line for line in lines)  # counted on the server's own line
    assert "~ user a/12 status: online -> dnd" in lines and "- user a/11 x" in lines
    assert "! listen changed: takes effect only after a restart" in lines
    assert all("two" not in line and "one" not in line for line in lines)  # never a password


def test_made_private_and_client_ids():
    old = load(OLD)
    new = load(OLD.replace("id: c, name: C}", 'id: c, name: C, passworded: true, oauth: {client_id: "506432803173433344"}}'))
    d = diff(old, new)
    assert d.servers_made_private == ("3",) and d.client_ids == (("3", "506432803173433344"),)


def test_a_long_change_list_is_summarised():
    lines = [f"+ user a/{i}" for i in range(25)]
    assert summary(lines) == {"count": 25, "changes": lines[:10], "more": 15}
