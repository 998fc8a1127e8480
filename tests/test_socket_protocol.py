"""The d-zone protocol over real sockets (../shared/protocol.md), against the example config."""
from __future__ import annotations

import aiohttp
import pytest

from dbackd.fanout import protocol
from dbackd.config import load_text

from .conftest import EXAMPLE, ROOT

DWORLD = "232769614004748288"
OAUTH = "123456789012345678"

PRIVATE = """
servers:
  - {snowflake: "1", id: pub, name: Public, default: true, users: [{uid: "11", username: a}]}
  - snowflake: "2"
    id: legacy
    name: Legacy
    passworded: true
    password: hunter2
    users: [{uid: "21", username: secret-member}]
static:
  - {path: /, builtin: true}
  - {path: /dzone, builtin: true}
"""


async def test_server_list_comes_first_and_hides_secrets(start_daemon, open_client):
    d = await start_daemon(text=PRIVATE)
    client = await open_client(d, read_list=False)
    first = await client.recv()
    assert first["type"] == "server-list"
    assert first["data"] == {
        "1": {"id": "pub", "name": "Public", "default": True, "passworded": False},
        "2": {"id": "legacy", "name": "Legacy", "passworded": True},
    }
    assert "hunter2" not in str(first)


async def test_example_has_four_servers_and_dworld_four_users(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d, read_list=False)
    servers = (await client.recv_type("server-list"))["data"]
    assert [s["id"] for s in servers.values()] == ["dworld", "docs", "oauth", "repos"]
    assert servers[DWORLD]["default"] is True and servers[OAUTH]["passworded"] is True
    join = await client.connect("dworld")
    assert join["type"] == "server-join"
    users = join["data"]["users"]
    assert len(users) == 4
    assert users["123456789012345001"] == {
        "uid": "123456789012345001", "username": "vegeta897", "status": "online", "roleColor": "#ff6b6b"}
    assert join["data"]["request"] == {"server": "dworld"}
    assert join["data"]["serverName"] == "D-World"


@pytest.mark.parametrize("sent, echoed", [
    (None, "default"), ("", "default"), ("   ", "default"), ("default", "default"),
    ("dworld", "dworld"), (DWORLD, DWORLD), (int(DWORLD), DWORLD),
])
async def test_connect_forms(start_daemon, open_client, sent, echoed):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    join = await client.connect(sent)
    assert join["type"] == "server-join"
    assert join["data"]["serverName"] == "D-World"
    assert join["data"]["request"] == {"server": echoed}


async def test_connect_without_server_key_means_default(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    await client.send({"type": "connect", "data": {}})
    join = await client.recv_type("server-join")
    assert join["data"]["request"] == {"server": "default"}
    await client.send({"type": "connect"})
    assert (await client.recv_type("server-join"))["data"]["serverName"] == "D-World"


async def test_switching_servers_moves_the_socket(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    await client.connect("dworld")
    join = await client.connect("repos")
    assert join["data"]["serverName"] == "My Repos" and len(join["data"]["users"]) == 21
    d.world.set_presence("dworld", "123456789012345001", "idle")  # the old server
    d.world.set_presence("repos", "423456789012345001", "dnd")  # the new one
    presence = await client.recv_type("presence")
    assert presence["server"] == "987654321098765432"
    assert presence["data"] == {"uid": "423456789012345001", "status": "dnd"}
    await client.assert_quiet()


async def test_unknown_server_error_keeps_socket_open(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    assert await client.connect("nope") == protocol.error("Sorry, couldn't connect to that Discord server.")
    assert (await client.connect("docs"))["type"] == "server-join"


async def test_private_server_refusals(start_daemon, open_client):
    d = await start_daemon(text=PRIVATE)
    client = await open_client(d)
    assert await client.connect("legacy") == protocol.error(
        "This server requires Discord authentication. Please login with Discord.")
    assert await client.connect("legacy", password="wrong") == protocol.error(
        "This server requires Discord authentication. Please login with Discord.")
    # OAuth verification is not configured here: credentials are refused as a failed login.
    assert await client.connect("legacy", discordToken="tok", discordUser={"id": "5", "username": "x"}) == \
        protocol.error("Discord authentication failed. Please try logging in again.")
    join = await client.connect("legacy", password="hunter2")
    assert join["type"] == "server-join"
    assert join["data"]["request"] == {"server": "legacy"}  # never the password
    assert "hunter2" not in str(join)
    assert list(join["data"]["users"]) == ["21"]


async def test_example_oauth_server_refuses_without_credentials(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    assert (await client.connect("oauth"))["data"]["message"].startswith("This server requires")


@pytest.mark.parametrize("frame, answer", [
    ("not json", "Invalid JSON"),
    ("[1, 2]", "Invalid JSON"),
    ('{"type": "dance", "data": {}}', "Unknown event type"),
    ('{"data": {}}', "Unknown event type"),
])
async def test_bad_frames_get_errors_and_socket_stays(start_daemon, open_client, frame, answer):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    await client.send(frame)
    assert await client.recv() == protocol.error(answer)
    assert (await client.connect("dworld"))["type"] == "server-join"


async def test_binary_frames(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    await client.ws.send_bytes(b"\xff\xfe\xfd")
    assert await client.recv() == protocol.error("Invalid binary encoding")
    await client.ws.send_bytes('{"type": "connect", "data": {"server": "docs"}}'.encode())
    join = await client.recv_type("server-join")
    assert join["data"]["serverName"] == "Docs (WIP)"


async def test_bad_frame_does_not_affect_other_clients(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    a, b = await open_client(d), await open_client(d)
    await a.connect("dworld")
    await b.connect("dworld")
    await b.send("{{{{")
    await b.ws.send_bytes(b"\x80")
    d.world.set_presence("dworld", "123456789012345002", "online")
    assert (await a.recv_type("presence"))["data"]["uid"] == "123456789012345002"
    await a.assert_quiet()


@pytest.mark.parametrize("path", ["/", "/ws", "/dzone/ws"])
async def test_socket_paths(start_daemon, open_client, path):
    d = await start_daemon(text=PRIVATE)
    client = await open_client(d, path)
    assert (await client.connect())["type"] == "server-join"


async def test_upgrade_elsewhere_is_not_found(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"http://127.0.0.1:{d.port}/nope/ws")
    assert info.value.status == 404


async def test_oversized_frame_closes_only_that_socket(start_daemon, open_client):
    config = load_text(PRIVATE + "limits: {max_message_bytes: 1024}\n", "t.yaml", ROOT)
    d = await start_daemon(config)
    big, other = await open_client(d), await open_client(d)
    await other.connect()
    await big.send('{"type": "connect", "data": {"server": "' + "x" * 5000 + '"}}')
    msg = await big.ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    d.world.set_presence("pub", "11", "dnd")
    assert (await other.recv_type("presence"))["data"]["status"] == "dnd"


async def test_late_joiner_sees_current_state(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    early = await open_client(d)
    await early.connect("dworld")
    d.world.set_presence("dworld", "123456789012345001", "dnd")
    d.world.set_presence("dworld", "999", "online", username="newcomer", role_color="#123456")
    assert (await early.recv_type("presence"))["data"] == {"uid": "123456789012345001", "status": "dnd"}
    assert (await early.recv_type("presence"))["data"] == {
        "uid": "999", "status": "online", "username": "newcomer", "roleColor": "#123456"}
    late = await open_client(d)
    users = (await late.connect("dworld"))["data"]["users"]
    assert users["123456789012345001"]["status"] == "dnd"
    assert users["999"] == {"uid": "999", "username": "newcomer", "status": "online", "roleColor": "#123456"}
    d.world.set_presence("dworld", "999", "offline", delete=True)
    assert (await early.recv_type("presence"))["data"] == {"uid": "999", "status": "offline", "delete": True}
    await late.recv_type("presence")
    newest = await open_client(d)
    assert "999" not in (await newest.connect("dworld"))["data"]["users"]


async def test_events_only_reach_their_server(start_daemon, open_client):
    d = await start_daemon(EXAMPLE)
    world_client, docs_client, idle_client = await open_client(d), await open_client(d), await open_client(d)
    await world_client.connect("dworld")
    await docs_client.connect("docs")
    d.world.say("docs", "223456789012345001", "hi", "527964146659229701")
    message = await docs_client.recv_type("message")
    assert message == {"type": "message", "server": "482241773318701056",
                       "data": {"uid": "223456789012345001", "message": "hi", "channel": "527964146659229701"}}
    await world_client.assert_quiet()
    await idle_client.assert_quiet()
