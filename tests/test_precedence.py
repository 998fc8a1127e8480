"""Who wins: the YAML declares who exists, the APIs add runtime users and move statuses, and a
reload keeps runtime state for users whose declared fields did not change."""
from __future__ import annotations

import json

import pytest

from dbackd import DeclaredUser
from dbackd.daemon import Daemon

from .conftest import Client

TOKEN = "precedence-token-0123456789"
ALICE = '{uid: "11", username: alice, status: online, roleColor: "#111111"}'
BOB = '{uid: "12", username: bob, status: idle, roleColor: "#222222"}'


def render(users=(ALICE, BOB), name="Home", other=True) -> str:
    text = f'api: {{tokens: ["{TOKEN}"]}}\nservers:\n'
    text += f'  - snowflake: "1"\n    id: home\n    name: {name}\n    default: true\n    users:\n'
    text += "".join(f"      - {u}\n" for u in users)
    if other:
        text += '  - {snowflake: "2", id: other, name: Other, users: [{uid: "21", username: carol}]}\n'
    return text


@pytest.fixture
async def live(tmp_path, http):
    path = tmp_path / "dback.yaml"
    path.write_text(render())
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()

    async def call(method: str, route: str, body=None):
        async with http.request(method, f"http://127.0.0.1:{d.port}/api/servers/{route}", json=body,
                                headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def reload(text: str) -> None:
        path.write_text(text)
        assert await d.reload() is True

    yield d, call, reload
    await d.stop()


async def joined(open_client, d, server="home") -> Client:
    c = await open_client(d)
    assert (await c.connect(server))["type"] == "server-join"
    return c


def user(d: Daemon, uid: str, server="home") -> dict:
    return next(u for u in d.users(server) if u["uid"] == uid)


async def test_runtime_user_survives_reloads_that_do_not_declare_it(live, open_client):
    d, call, reload = live
    c = await joined(open_client, d)
    assert (await call("PUT", "home/users/13", {"username": "dave", "status": "dnd", "roleColor": "#333333"}))[0] == 201
    await c.recv()
    await reload(render(users=(ALICE, BOB.replace("#222222", "#999999"))))
    assert (await c.recv())["data"] == {"uid": "12", "status": "idle", "roleColor": "#999999"}
    await reload(render(users=(ALICE,), name="Home again"))
    assert (await c.recv())["data"] == {"uid": "12", "status": "idle", "delete": True}  # bob left the file
    await c.assert_quiet()  # nothing about the runtime user
    assert user(d, "13") == {"uid": "13", "username": "dave", "status": "dnd", "roleColor": "#333333",
                             "declared": False}


async def test_status_moved_by_the_api_survives_until_its_declaration_changes(live, open_client):
    d, call, reload = live
    c = await joined(open_client, d)
    await d.broadcast_presence("home", "11", "dnd")
    assert (await call("POST", "home/presence", {"uid": "12", "status": "offline"}))[0] == 200
    await c.recv(), await c.recv()
    # alice's colour changes in the file, her status does not: the live status stays.
    await reload(render(users=(ALICE.replace("#111111", "#010101"), BOB)))
    assert (await c.recv())["data"] == {"uid": "11", "status": "dnd", "roleColor": "#010101"}
    await c.assert_quiet()
    assert user(d, "12")["status"] == "offline"
    # bob's declared status changes: the file wins.
    await reload(render(users=(ALICE.replace("#111111", "#010101"), BOB.replace("idle", "online"))))
    assert (await c.recv())["data"] == {"uid": "12", "status": "online"}
    assert user(d, "11")["status"] == "dnd" and user(d, "12")["status"] == "online"


async def test_declaring_a_runtime_user_makes_the_declared_fields_win(live, open_client):
    d, call, reload = live
    c = await joined(open_client, d)
    await d.broadcast_presence("home", "13", "dnd", username="dave-runtime", role_color="#333333")
    await c.recv()
    await reload(render(users=(ALICE, BOB, '{uid: "13", username: dave, status: idle, roleColor: "#444444"}')))
    assert (await c.recv_renamed())["data"] == {"uid": "13", "status": "idle", "username": "dave", "roleColor": "#444444"}
    assert user(d, "13") == {"uid": "13", "username": "dave", "status": "idle", "roleColor": "#444444",
                             "declared": True}
    # Now declared: the API may move its status but not remove it.
    status, body = await call("DELETE", "home/users/13")
    assert status == 409 and "declared" in body["error"]
    with pytest.raises(DeclaredUser):
        await d.broadcast_presence("home", "13", "offline", delete=True)
    # Undeclared again: it goes, like any user the file stops declaring.
    await reload(render())
    assert (await c.recv())["data"] == {"uid": "13", "status": "idle", "delete": True}


async def test_runtime_users_go_with_their_server(live, open_client):
    d, call, reload = live
    assert (await call("PUT", "other/users/22", {"username": "eve"}))[0] == 201
    await reload(render(other=False))
    assert (await call("GET", "other/users"))[0] == 404
    await reload(render())
    assert [u["uid"] for u in d.users("other")] == ["21"]  # a new server starts from its declaration


async def test_declared_user_removed_from_the_file_goes_whatever_the_api_did(live, open_client):
    d, call, reload = live
    c = await joined(open_client, d)
    assert (await call("PUT", "home/users/12", {"username": "bobby", "status": "dnd"}))[0] == 200
    assert (await c.recv_renamed())["data"] == {"uid": "12", "status": "dnd", "username": "bobby", "roleColor": "#222222"}
    await reload(render(users=(ALICE,)))
    assert (await c.recv())["data"] == {"uid": "12", "status": "dnd", "delete": True}
    assert [u["uid"] for u in d.users("home")] == ["11"]
