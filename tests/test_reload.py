"""Hot reload: a config in a temp dir edited the way editors do, seen by real clients."""
from __future__ import annotations

import asyncio
import os

import pytest

from dbackd.fanout import protocol
from dbackd.daemon import Daemon

from .conftest import Client, RECV_TIMEOUT

BASE = {
    "alice": '{uid: "11", username: alice, status: online, roleColor: "#111111"}',
    "bob": '{uid: "12", username: bob, status: idle, roleColor: "#222222"}',
}


def render(users=("alice", "bob"), extra_servers="", public_private="false", port=None, static="",
           name="Home", user_lines=None) -> str:
    lines = user_lines if user_lines is not None else [BASE[u] for u in users]
    listen = f"listen: {{host: 127.0.0.1, port: {port}}}\n" if port is not None else ""
    return (
        listen + static
        + "servers:\n"
        + f'  - snowflake: "1"\n    id: home\n    name: {name}\n    default: true\n    passworded: {public_private}\n'
        + "    password: pw\n"
        + "    users:\n" + "".join(f"      - {line}\n" for line in lines)
        + '  - {snowflake: "2", id: other, name: Other, users: [{uid: "21", username: carol}]}\n'
        + extra_servers
    )


class Editor:
    """Writes a config file in the three ways editors save."""

    def __init__(self, path):
        self.path = path

    def in_place(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def atomic_rename(self, text: str) -> None:
        tmp = self.path.with_name(".dback.yaml.swp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def delete_and_recreate(self, text: str) -> None:
        os.unlink(self.path)
        self.path.write_text(text)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "dback.yaml"
    path.write_text(render(port=0))
    return path


@pytest.fixture
async def live(config_file, start_daemon):
    return await start_daemon(config_file), Editor(config_file)


async def reloaded(d: Daemon, count: int) -> None:
    await asyncio.wait_for(d.reloader.wait_attempts(count), RECV_TIMEOUT)


async def joined(open_client, d, server="home") -> Client:
    c = await open_client(d)
    assert (await c.connect(server))["type"] == "server-join"
    return c


EDITS = ["in_place", "atomic_rename", "delete_and_recreate"]


@pytest.mark.parametrize("how", EDITS)
async def test_user_added(live, open_client, how):
    d, editor = live
    c = await joined(open_client, d)
    getattr(editor, how)(render(user_lines=[BASE["alice"], BASE["bob"], '{uid: "13", username: dave, status: dnd, roleColor: "#333333"}'], port=0))
    assert await c.recv() == {"type": "presence", "server": "1", "data": {
        "uid": "13", "status": "dnd", "username": "dave", "roleColor": "#333333"}}
    await c.assert_quiet()


@pytest.mark.parametrize("how", EDITS)
async def test_user_removed(live, open_client, how):
    d, editor = live
    c = await joined(open_client, d)
    getattr(editor, how)(render(users=("alice",), port=0))
    assert await c.recv() == {"type": "presence", "server": "1", "data": {"uid": "12", "status": "idle", "delete": True}}
    await c.assert_quiet()


@pytest.mark.parametrize("how", EDITS)
async def test_user_fields_changed(live, open_client, how):
    d, editor = live
    c = await joined(open_client, d)
    getattr(editor, how)(render(user_lines=[
        '{uid: "11", username: alice, status: dnd, roleColor: "#111111"}',
        '{uid: "12", username: robert, status: idle, roleColor: "#abcdef"}'], port=0))
    assert await c.recv() == {"type": "presence", "server": "1", "data": {"uid": "11", "status": "dnd"}}
    assert await c.recv_renamed() == {"type": "presence", "server": "1", "data": {
        "uid": "12", "status": "idle", "username": "robert", "roleColor": "#abcdef"}}
    await c.assert_quiet()
    late = await open_client(d)
    users = (await late.connect("home"))["data"]["users"]
    assert users["12"] == {"uid": "12", "username": "robert", "status": "idle", "roleColor": "#abcdef"}


async def test_live_status_survives_unrelated_reload(live, open_client):
    d, editor = live
    c = await joined(open_client, d)
    d.world.set_presence("home", "11", "offline")  # as the simulation or the API would
    assert (await c.recv())["data"] == {"uid": "11", "status": "offline"}
    # bob's colour changes; alice's declaration does not: her live status stays.
    editor.atomic_rename(render(user_lines=[BASE["alice"], BASE["bob"].replace("#222222", "#999999")], port=0))
    assert (await c.recv())["data"] == {"uid": "12", "status": "idle", "roleColor": "#999999"}
    await c.assert_quiet()
    assert d.world.servers["1"].users["11"].status == "offline"
    # A colour change on alice keeps her live status too.
    editor.atomic_rename(render(user_lines=[BASE["alice"].replace("#111111", "#010101"), BASE["bob"].replace("#222222", "#999999")], port=0))
    assert (await c.recv())["data"] == {"uid": "11", "status": "offline", "roleColor": "#010101"}


async def test_server_added_and_renamed_reaches_new_sockets_only(live, open_client):
    d, editor = live
    member, idle = await joined(open_client, d), await open_client(d)
    editor.atomic_rename(render(name="Home Sweet Home", port=0,
                                extra_servers='  - {snowflake: "3", id: new, name: New}\n'))
    await reloaded(d, 1)
    for c in (member, idle):  # the d-zone frontend would rejoin and add a "Server" button per list
        await c.assert_quiet()
    fresh = await open_client(d, read_list=False)
    listing = await fresh.recv_type("server-list")
    assert listing["data"]["1"]["name"] == "Home Sweet Home"
    assert listing["data"]["3"] == {"id": "new", "name": "New", "passworded": False}
    assert (await member.connect("new"))["data"]["serverName"] == "New"


async def test_server_removed(live, open_client):
    d, editor = live
    gone, stays = await joined(open_client, d, "other"), await joined(open_client, d, "home")
    editor.atomic_rename(render(port=0).replace('  - {snowflake: "2", id: other, name: Other, users: [{uid: "21", username: carol}]}\n', ""))
    assert await gone.recv() == protocol.error(protocol.SERVER_GONE)
    moved = await gone.recv_type("server-join")  # on to the default server, which the frontend takes
    assert moved["data"]["request"] == {"server": "default"} and moved["data"]["serverName"] == "Home"
    assert await gone.connect("other") == protocol.error(protocol.UNKNOWN_SERVER)
    await stays.assert_quiet()


async def test_server_made_private_stops_its_events(live, open_client):
    d, editor = live
    viewer = await joined(open_client, d, "home")
    authed = await open_client(d)
    editor.atomic_rename(render(public_private="true", port=0))
    assert await viewer.recv() == protocol.error(protocol.SERVER_PRIVATE)  # the default itself: nowhere to go
    await reloaded(d, 1)
    fresh = await open_client(d, read_list=False)
    assert (await fresh.recv_type("server-list"))["data"]["1"]["passworded"] is True
    assert (await authed.connect("home", password="pw"))["type"] == "server-join"
    d.world.set_presence("home", "11", "dnd")
    d.world.say("home", "11", "secret words", "1")
    assert (await authed.recv_type("presence"))["data"]["status"] == "dnd"
    assert (await authed.recv_type("message"))["data"]["message"] == "secret words"
    await viewer.assert_quiet()  # nothing of the private server reaches the unauthenticated socket
    assert await viewer.connect("home") == protocol.error(protocol.AUTH_REQUIRED)


async def test_invalid_edit_changes_nothing_then_fix_applies(live, open_client, http):
    d, editor = live
    c = await joined(open_client, d)
    loaded_at = d.health()["loaded_at"]
    editor.in_place(render(port=0).replace("status: idle", "status: asleep"))
    await reloaded(d, 1)
    await c.assert_quiet()
    async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
        health = await r.json()
    assert health["reload"]["ok"] is False
    assert health["reload"]["errors"] == [f"{editor.path}:11:44: servers[0].users[1].status: "
                                          '"asleep" is not one of "online", "idle", "dnd", "offline"']
    assert health["loaded_at"] == loaded_at and health["reload"]["last_attempt"] > loaded_at
    assert d.world.servers["1"].users["12"].status == "idle"
    editor.in_place(render(users=("alice",), port=0))
    assert (await c.recv())["data"] == {"uid": "12", "status": "idle", "delete": True}
    assert d.health()["reload"]["ok"] is True and d.health()["loaded_at"] > loaded_at


async def test_broken_yaml_is_reported_with_position(live, open_client):
    d, editor = live
    c = await joined(open_client, d)
    editor.in_place("servers:\n  - {snowflake: \"1\"\n")
    await reloaded(d, 1)
    assert d.health()["reload"]["errors"][0].startswith(f"{editor.path}:3:1: invalid YAML")
    await c.assert_quiet()


async def test_burst_of_twenty_writes_is_one_reload(live, open_client):
    d, editor = live
    c = await joined(open_client, d)
    for i in range(20):
        editor.in_place(render(name=f"Name {i}", port=0))
    await reloaded(d, 1)
    assert d.world.servers["1"].info.name == "Name 19"
    editor.in_place(render(name="Sentinel", port=0))
    await reloaded(d, 2)
    assert d.world.servers["1"].info.name == "Sentinel"
    assert d.reloader.attempts == 2
    await c.assert_quiet()


async def test_listen_change_needs_restart_and_keeps_serving(live, open_client):
    d, editor = live
    c = await joined(open_client, d)
    editor.atomic_rename(render(port=0).replace("listen: {host: 127.0.0.1, port: 0}", "listen: {host: 127.0.0.1, port: 4567}"))
    await reloaded(d, 1)
    # --port given on the command line (here: the constructor) keeps winning over the file.
    assert d.health()["restart_required"] == []
    await c.assert_quiet()


async def test_listen_change_from_file_is_flagged(tmp_path, open_client):
    path = tmp_path / "dback.yaml"
    path.write_text(render(port=0))
    d = Daemon(path)
    await d.start()
    try:
        c = await joined(open_client, d)
        path.write_text(render(port=1))
        await reloaded(d, 1)
        assert d.health()["restart_required"] == ["listen"]
        assert d.health()["reload"]["ok"] is True
        d.world.set_presence("home", "11", "dnd")
        assert (await c.recv())["data"]["status"] == "dnd"
    finally:
        await d.stop()


async def test_static_mount_change_serves_next_request(live, http, tmp_path):
    d, editor = live
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("new root")
    async with http.get(f"http://127.0.0.1:{d.port}/") as r:
        assert "dbackd" in await r.text()
    editor.atomic_rename(render(port=0, static=f'static: [{{path: /, dir: "{site}"}}]\n'))
    await reloaded(d, 1)
    async with http.get(f"http://127.0.0.1:{d.port}/") as r:
        assert await r.text() == "new root"


async def test_no_client_is_disconnected_by_reloads(live, open_client):
    d, editor = live
    clients = [await joined(open_client, d) for _ in range(5)]
    editor.in_place(render(users=("alice",), port=0))
    await reloaded(d, 1)
    editor.in_place("nonsense: [")
    await reloaded(d, 2)
    editor.in_place(render(port=0))
    await reloaded(d, 3)
    for c in clients:
        assert (await c.recv())["data"]["delete"] is True
        assert (await c.recv())["data"]["username"] == "bob"
        await c.assert_quiet()
        assert not c.ws.closed
    assert len(d.hub.connections) == 5


async def test_reload_request_without_watching(config_file, open_client):
    d = Daemon(config_file, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        c = await joined(open_client, d)
        config_file.write_text(render(users=("bob",), port=0))
        assert await d.reload() is True
        assert (await c.recv())["data"] == {"uid": "11", "status": "online", "delete": True}
    finally:
        await d.stop()


def test_check_diff_prints_what_a_reload_would_change(tmp_path, capsys):
    from dbackd.cli import main

    running, edited = tmp_path / "running.yaml", tmp_path / "edited.yaml"
    running.write_text(render())
    edited.write_text(render(user_lines=[BASE["alice"].replace("#111111", "#123123"), '{uid: "14", username: eve}'],
                             public_private="true"))
    assert main(["check", "-c", str(edited), "--diff", str(running)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "~ server home is now private: clients that did not authenticate lose their join",
        "~ server list changed: every client gets a fresh server-list and rejoins",
        "~ user home/11 role_color: #111111 -> #123123",
        "- user home/12 bob",
        "+ user home/14 eve (online, #ffffff)",
    ]


OAUTH_SERVER = """servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users: [{{uid: "11", username: alice}}]
  - snowflake: "5"
    id: club
    name: Club
    passworded: true
    oauth:
      provider: mock
      client_id: "{client_id}"
      tokens:
        t-alice: {{id: "11", username: alice}}
        t-bob: {{id: "12", username: bob}}
    access:
      users: [{allowed}]
    users: [{{uid: "11", username: alice}}, {{uid: "12", username: bob}}]
"""


async def test_client_id_change_sends_update_clientid(start_daemon, tmp_path, open_client):
    path = tmp_path / "dback.yaml"
    path.write_text(OAUTH_SERVER.format(client_id="100000000000000001", allowed='"11", "12"'))
    d = await start_daemon(path)
    member, elsewhere = await open_client(d), await joined(open_client, d, "home")
    join = await member.connect("club", discordToken="t-alice", discordUser={"id": "11"})
    assert join["data"]["clientId"] == "100000000000000001"
    path.write_text(OAUTH_SERVER.format(client_id="100000000000000002", allowed='"11", "12"'))
    assert await member.recv() == {"type": "update-clientid", "server": "5",
                                   "data": {"clientId": "100000000000000002"}}
    await member.assert_quiet()
    await elsewhere.assert_quiet()
    late = await open_client(d)
    assert (await late.connect("club", discordToken="t-bob", discordUser={"id": "12"}))["data"]["clientId"] == \
        "100000000000000002"


async def test_tightened_access_revokes_existing_grants(start_daemon, tmp_path, open_client):
    path = tmp_path / "dback.yaml"
    path.write_text(OAUTH_SERVER.format(client_id="100000000000000001", allowed='"11", "12"'))
    d = await start_daemon(path)
    bob = await open_client(d)
    assert (await bob.connect("club", discordToken="t-bob", discordUser={"id": "12"}))["type"] == "server-join"
    path.write_text(OAUTH_SERVER.format(client_id="100000000000000001", allowed='"11"'))
    assert await bob.recv() == protocol.error(protocol.ACCESS_CHANGED)
    assert (await bob.recv_type("server-join"))["data"]["serverName"] == "Home"  # on to the default server
    d.world.set_presence("club", "11", "dnd")
    await bob.assert_quiet()  # no event of the server reaches the socket any more
    assert await bob.connect("club", discordToken="t-bob", discordUser={"id": "12"}) == \
        protocol.error(protocol.AUTH_FAILED)
    alice = await open_client(d)
    assert (await alice.connect("club", discordToken="t-alice", discordUser={"id": "11"}))["type"] == "server-join"


async def test_editing_a_corpus_file_reloads(start_daemon, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("hello\n")
    path = tmp_path / "dback.yaml"
    path.write_text('simulation: {messages: {corpus: "file:lines.txt"}}\n'
                    'servers: [{snowflake: "1", id: a, name: A, users: [{uid: "2", username: b}]}]\n')
    d = await start_daemon(path)
    assert lines in d.config_sources()
    lines.write_text("bonjour\nhola\n")
    await reloaded(d, 1)
    assert d.config.servers[0].simulation.messages.corpus == ("bonjour", "hola")


async def test_the_embedded_default_is_not_watched(open_client):
    d = Daemon(None, host="127.0.0.1", port=0)
    await d.start()
    try:
        assert d.config_path is None and d.config_sources() == ()
        assert d.health()["reload"]["watching"] == []
        assert await d.reload() is True  # nothing to re-read: a no-op, not a failure
        c = await joined(open_client, d, "dworld")
        await c.assert_quiet()
    finally:
        await d.stop()


async def test_a_deleted_config_file_shows_in_healthz_until_it_is_back(live, open_client, http):
    d, editor = live
    c = await joined(open_client, d)
    os.unlink(editor.path)
    await d.reload()
    async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
        health = await r.json()
    assert health["status"] == "ok" and health["reload"]["ok"] is False
    assert health["reload"]["errors"] == [f"{editor.path}: the file is missing; the running config stays until "
                                          "it is back"]
    await c.assert_quiet()  # the running config stays
    editor.in_place(render(port=0))
    assert await d.reload() is True and d.health()["reload"]["ok"] is True


def swap_link(link, target) -> None:
    """Point `link` at `target` atomically, as `ln -s target tmp && mv -T tmp link` does."""
    tmp = link.with_name(link.name + ".tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


async def test_a_config_swapped_by_symlink_is_followed(start_daemon, tmp_path):
    (tmp_path / "v1.yaml").write_text(render(port=0, name="One"))
    (tmp_path / "v2.yaml").write_text(render(port=0, name="Two"))
    path = tmp_path / "dback.yaml"
    os.symlink("v1.yaml", path)
    d = await start_daemon(path)
    swap_link(path, "v2.yaml")
    await reloaded(d, 1)
    assert d.config.servers[0].name == "Two" and d.health()["reload"]["ok"] is True


async def test_the_kubernetes_configmap_layout_is_followed(start_daemon, tmp_path):
    """dback.yaml -> ..data/dback.yaml, ..data -> ..<timestamp>/, and the kubelet swaps ..data."""
    (tmp_path / "..2026_01").mkdir()
    (tmp_path / "..2026_01" / "dback.yaml").write_text(render(port=0, name="One"))
    os.symlink("..2026_01", tmp_path / "..data")
    path = tmp_path / "dback.yaml"
    os.symlink("..data/dback.yaml", path)
    d = await start_daemon(path)
    (tmp_path / "..2026_02").mkdir()
    (tmp_path / "..2026_02" / "dback.yaml").write_text(render(port=0, name="Two"))
    swap_link(tmp_path / "..data", "..2026_02")
    for name in os.listdir(tmp_path / "..2026_01"):
        os.unlink(tmp_path / "..2026_01" / name)
    os.rmdir(tmp_path / "..2026_01")
    await reloaded(d, 1)
    assert d.config.servers[0].name == "Two" and d.health()["reload"]["ok"] is True
    (tmp_path / "..2026_03").mkdir()  # and the next swap too: the watch follows the new target
    (tmp_path / "..2026_03" / "dback.yaml").write_text(render(port=0, name="Three"))
    swap_link(tmp_path / "..data", "..2026_03")
    await reloaded(d, 2)
    assert d.config.servers[0].name == "Three"


@pytest.mark.parametrize("odd", ["fifo", "dev_zero", "too_large"])
async def test_an_odd_file_in_place_of_the_config_is_refused_and_the_daemon_carries_on(live, open_client, odd):
    d, editor = live
    c = await joined(open_client, d)
    os.unlink(editor.path)
    if odd == "fifo":
        os.mkfifo(editor.path)
        why = "not a regular file (a FIFO)"
    elif odd == "dev_zero":
        os.symlink("/dev/zero", editor.path)
        why = "not a regular file (a character device)"
    else:
        with open(editor.path, "wb") as f:
            f.truncate(17 * 1024 * 1024)
        why = "too large: 17,825,792 bytes, at most 16,777,216 are read"
    assert await asyncio.wait_for(d.reload(), RECV_TIMEOUT) is False
    reload = d.health()["reload"]
    assert reload["ok"] is False and reload["errors"] == [f"{editor.path}:1:1: {why}: give a regular file, "
                                                          "or a symlink to one" if odd != "too_large" else
                                                          f"{editor.path}:1:1: {why}"]
    await c.assert_quiet()  # the running config stays
    os.unlink(editor.path)
    editor.in_place(render(port=0, name="Back"))
    assert await asyncio.wait_for(d.reload(), RECV_TIMEOUT) is True  # reloading still works
    assert d.config.servers[0].name == "Back"


def test_check_refuses_a_fifo_as_config(tmp_path, capsys):
    from dbackd.cli import main

    os.mkfifo(tmp_path / "dback.yaml")
    assert main(["check", "-c", str(tmp_path / "dback.yaml")]) != 0
    assert "not a regular file (a FIFO)" in capsys.readouterr().err
