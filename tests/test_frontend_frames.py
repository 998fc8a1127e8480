"""Frames in the order the real d-zone frontend needs them (what it does with each frame is in the
protocol notes): renames as a delete and a re-add, removals that end on the default server, no
second server-list, nothing about a uid a socket was not shown, and no needless close."""
from __future__ import annotations

import aiohttp

from dbackd.fanout import protocol
from dbackd.config import load_text
from dbackd.core.events import PresenceChanged

from .conftest import ROOT

BASE = """
servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users: [{uid: "11", username: alice, roleColor: "#111111"}, {uid: "12", username: bob, status: idle}]
  - {snowflake: "2", id: other, name: Other, users: [{uid: "21", username: carol}]}
  - {snowflake: "3", id: club, name: Club, passworded: true, password: "${P}", users: [{uid: "31", username: dan}]}
"""


def config(text: str = BASE):
    return load_text(text, "t.yaml", ROOT, {"P": "pw"})


async def write_and_reload(d, path, text: str) -> None:
    path.write_text(text)
    assert await d.reload()


async def test_a_rename_through_the_api_is_a_delete_then_a_re_add(start_daemon, open_client):
    d = await start_daemon(config())
    c = await open_client(d)
    await c.connect("home")
    await d.broadcast_presence("home", "12", "idle", username="robert")
    assert await c.recv() == {"type": "presence", "server": "1", "data": {"uid": "12", "status": "idle", "delete": True}}
    assert await c.recv() == {"type": "presence", "server": "1", "data": {
        "uid": "12", "status": "idle", "username": "robert", "roleColor": "#ffffff"}}
    await d.broadcast_presence("home", "12", "dnd", username="robert")  # the same name: just a status
    assert (await c.recv())["data"] == {"uid": "12", "status": "dnd"}
    await c.assert_quiet()


async def test_a_rename_by_reload_is_a_delete_then_a_re_add(tmp_path, open_client):
    from dbackd.daemon import Daemon

    path = tmp_path / "dback.yaml"
    path.write_text(BASE.replace('"${P}"', "pw"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        c = await open_client(d)
        await c.connect("home")
        d.world.set_presence("home", "11", "dnd")  # a live status the reload keeps
        assert (await c.recv())["data"] == {"uid": "11", "status": "dnd"}
        await write_and_reload(d, path, path.read_text().replace("username: alice", "username: alicia"))
        renamed = await c.recv_renamed()
        assert renamed["data"] == {"uid": "11", "status": "dnd", "username": "alicia", "roleColor": "#111111"}
        await c.assert_quiet()
    finally:
        await d.stop()


async def test_a_removed_server_ends_on_the_default_without_a_second_server_list(tmp_path, open_client):
    from dbackd.daemon import Daemon

    path = tmp_path / "dback.yaml"
    path.write_text(BASE.replace('"${P}"', "pw"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        viewer, bystander = await open_client(d), await open_client(d)
        await viewer.connect("other")
        await bystander.connect("home")
        await write_and_reload(d, path, path.read_text().replace(
            '  - {snowflake: "2", id: other, name: Other, users: [{uid: "21", username: carol}]}\n', ""))
        assert await viewer.recv() == protocol.error(protocol.SERVER_GONE)
        join = await viewer.recv()
        assert join["type"] == "server-join" and join["data"]["request"] == {"server": "default"}
        assert set(join["data"]["users"]) == {"11", "12"}
        d.world.say("home", "11", "you are home now", "c")
        assert (await viewer.recv())["data"]["message"] == "you are home now"  # a member of the default now
        await viewer.assert_quiet()  # and no server-list: the frontend would add a second "Server" button
        assert (await bystander.recv())["data"]["message"] == "you are home now"
        await bystander.assert_quiet()
        fresh = await open_client(d, read_list=False)
        assert list((await fresh.recv_type("server-list"))["data"]) == ["1", "3"]  # new pages get the new list
    finally:
        await d.stop()


async def test_made_private_ends_on_the_default_and_stops_the_events(tmp_path, open_client):
    from dbackd.daemon import Daemon

    path = tmp_path / "dback.yaml"
    path.write_text(BASE.replace('"${P}"', "pw"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        viewer = await open_client(d)
        await viewer.connect("other")
        await write_and_reload(d, path, path.read_text().replace(
            "id: other, name: Other,", "id: other, name: Other, passworded: true, password: pw2,"))
        assert await viewer.recv() == protocol.error(protocol.SERVER_PRIVATE)
        assert (await viewer.recv_type("server-join"))["data"]["serverName"] == "Home"
        d.world.say("other", "21", "private words", "c")
        await viewer.assert_quiet()
    finally:
        await d.stop()


async def test_a_refused_login_leaves_the_socket_where_it_was(start_daemon, open_client):
    d = await start_daemon(config())
    c = await open_client(d)
    await c.connect("home")
    assert await c.connect("club", password="wrong") == protocol.error(protocol.AUTH_REQUIRED)
    d.world.say("home", "11", "still watching home", "c")
    assert (await c.recv())["data"]["message"] == "still watching home"
    assert (await c.connect("club", password="pw"))["data"]["serverName"] == "Club"
    d.world.say("home", "11", "not any more", "c")
    await c.assert_quiet()


async def test_nothing_about_a_uid_the_socket_was_not_shown(start_daemon, open_client):
    d = await start_daemon(config())
    c = await open_client(d)
    await c.connect("home")
    d.world.apply(PresenceChanged("1", "99", "offline", delete=True))  # a stranger's delete: the frontend would spawn it
    d.world.apply(PresenceChanged("1", "98", "online"))  # a status for a stranger: a nameless actor, never sent
    d.world.apply(PresenceChanged("1", "97", "online", username="newcomer"))  # an arrival always has its name
    assert (await c.recv())["data"] == {"uid": "97", "status": "online", "username": "newcomer", "roleColor": "#ffffff"}
    await c.assert_quiet()


async def test_without_a_marked_default_the_first_public_server_is_the_default(start_daemon, open_client):
    text = BASE.replace("    default: true\n", "")
    text = text.replace('  - snowflake: "1"\n    id: home\n', '  - snowflake: "1"\n    id: home\n    passworded: true\n'
                        '    password: "${P}"\n', 1)
    d = await start_daemon(config(text))
    c = await open_client(d)
    join = await c.connect(None)  # what the frontend sends on a first visit
    assert join["type"] == "server-join" and join["data"]["serverName"] == "Other"  # home is private now
    assert join["data"]["request"] == {"server": "default"}


async def test_a_reload_never_closes_a_socket(tmp_path, http):
    from dbackd.daemon import Daemon

    path = tmp_path / "dback.yaml"
    path.write_text(BASE.replace('"${P}"', "pw"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        async with http.ws_connect(f"http://127.0.0.1:{d.port}/ws") as ws:
            assert (await ws.receive_json())["type"] == "server-list"
            await ws.send_json({"type": "connect", "data": {"server": "home"}})
            assert (await ws.receive_json())["type"] == "server-join"
            good = path.read_text()
            await write_and_reload(d, path, good.replace("name: Home\n", "name: Home 2\n"))  # a rename
            await write_and_reload(d, path, good.replace("username: bob", "username: robert"))  # a user renamed
            path.write_text("servers: oops\n")  # a broken edit
            assert await d.reload() is False
            await ws.send_json({"type": "probe"})
            while True:  # the rename's frames, then the probe's answer: never a close
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                if "Unknown event type" in msg.data:
                    break
            assert not ws.closed
    finally:
        await d.stop()
