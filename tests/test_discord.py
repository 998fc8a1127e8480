"""A live Discord guild as a source: a real dbackd, the fake Discord on loopback, real d-zone clients.

discord.py runs unchanged; only `discord.api_base` points at the fake. Each test waits for
a state of the world or a frame at a client, never for luck.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest
import structlog

from dbackd.config import load_text
from dbackd.sources.discord import chunks, gateway

from .conftest import RECV_TIMEOUT, ROOT
from .fakes.discord import FakeDiscord, member, presence, role, text_channel

discord = pytest.importorskip("discord", minversion="2.4")

TOKEN = "bot-token-for-the-fake-0123456789"
HOME = "111111111111111111"
MODS, ARTISTS, PLAIN = "222222222222222201", "222222222222222202", "222222222222222203"
GENERAL, MOD_CHAT = "333333333333333301", "333333333333333399"
ALICE, BOB, CAROL, BOT, DAVE = ("444444444444444401", "444444444444444402", "444444444444444403",
                                "444444444444444404", "444444444444444405")


@pytest.fixture(autouse=True)
def quick_gateway(monkeypatch):
    """discord.py's waits for the real Discord's rate limits; the fake has none. Also put
    discord.py's process-wide endpoints back after each test."""
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    monkeypatch.setattr(gateway, "IDENTIFY_DELAY", 0.0)
    monkeypatch.setattr(gateway, "GUILD_READY_TIMEOUT", 0.2)
    monkeypatch.setattr(gateway, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(chunks, "REQUEST_INTERVAL", 0.05)
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def add_home(fake: FakeDiscord, name: str = "Home") -> None:
    fake.add_guild(
        id=HOME, name=name,
        roles=[role(MODS, "Mods", color=0x3498DB, position=3), role(ARTISTS, "Artists", color=0xE91E63, position=2),
               role(PLAIN, "Plain", position=4)],
        channels=[text_channel(GENERAL, "general"), text_channel(MOD_CHAT, "mod-chat")],
        members=[member(ALICE, "alice", roles=[ARTISTS, MODS, PLAIN]),
                 member(BOB, "bob", nick="Bobby", roles=[ARTISTS]),
                 member(CAROL, "carol", global_name="Carol G."),
                 member(BOT, "helper", bot=True)],
        presences=[presence(ALICE, "online"), presence(BOB, "idle"), presence(BOT, "online")],
    )


def config(fake: FakeDiscord, server: str = "", top: str = "", token: str = TOKEN, guild: str = HOME,
           server_id: str = "home"):
    text = f"""
discord:
  bot_token: ${{DISCORD_BOT_TOKEN}}
  api_base: {fake.api_base}
{top}
servers:
  - {{snowflake: "1", id: local, name: Local, default: true, users: [{{uid: "11", username: x}}]}}
  - id: {server_id}
    snowflake: "{guild}"
    source: discord
{server}
"""
    return load_text(text, "t.yaml", ROOT, {"DISCORD_BOT_TOKEN": token})


async def until(d, predicate: Callable[[], Any], timeout: float = RECV_TIMEOUT) -> Any:
    """Wait until `predicate()` holds, checked after every world event (and once now)."""
    changed = asyncio.Event()

    def on_event(_event) -> None:
        changed.set()

    d.world.subscribe(on_event)
    try:
        async def wait() -> Any:
            while True:
                result = predicate()
                if result:
                    return result
                changed.clear()
                await changed.wait()
        return await asyncio.wait_for(wait(), timeout)
    finally:
        d.world.unsubscribe(on_event)


async def health_until(d, predicate: Callable[[dict], bool], timeout: float = RECV_TIMEOUT) -> dict:
    """The Discord part of /healthz once it satisfies `predicate`."""
    await asyncio.wait_for(d.discord.wait_until(lambda: predicate(d.health()["discord"])), timeout)
    return d.health()["discord"]


async def ready(d, count: int = 3) -> None:
    """The gateway is ready and the home guild's members are in the world."""
    await health_until(d, lambda h: h["state"] == "ready")
    await until(d, lambda: len(users(d)) == count)


def users(d, server: str = "home") -> dict:
    return {u["uid"]: u for u in d.users(server)}


@pytest.fixture
async def fake():
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0) as f:
        add_home(f)
        yield f


async def test_members_become_users_with_their_names_statuses_and_colours(fake, start_daemon, open_client):
    d = await start_daemon(config(fake))
    await health_until(d, lambda h: h["state"] == "ready")
    u = users(d)
    assert BOT not in u  # bots are left out by default
    assert (u[ALICE]["username"], u[ALICE]["status"], u[ALICE]["roleColor"]) == ("alice", "online", "#3498db")
    assert (u[BOB]["username"], u[BOB]["status"], u[BOB]["roleColor"]) == ("Bobby", "idle", "#e91e63")  # the nick
    assert (u[CAROL]["username"], u[CAROL]["status"], u[CAROL]["roleColor"]) == ("Carol G.", "offline", "#99aab5")
    client = await open_client(d)
    join = await client.connect("home")
    assert set(join["data"]["users"]) == {ALICE, BOB, CAROL}
    assert join["data"]["serverName"] == "Home"  # the config gave no name: the guild's own
    health = d.health()["discord"]
    assert health["state"] == "ready" and health["servers"]["home"] == {"guild": HOME, "seen": True, "state": "ready",
                                                                         "members": 5, "shown": 3}  # the bot is a member too


async def test_changes_in_the_guild_reach_clients(fake, start_daemon, open_client):
    d = await start_daemon(config(fake))
    await ready(d)
    client = await open_client(d)
    await client.connect("home")
    fake.presence_update(HOME, CAROL, "dnd")
    assert (await client.recv())["data"] == {"uid": CAROL, "status": "dnd"}
    fake.member_add(HOME, member(DAVE, "dave", roles=[MODS]))
    added = (await client.recv())["data"]
    assert added == {"uid": DAVE, "status": "offline", "username": "dave", "roleColor": "#3498db"}
    fake.member_update(HOME, DAVE, nick="Dave the Mod")
    renamed = (await client.recv_renamed())["data"]  # a nickname is a rename: a delete, then a re-add
    assert renamed == {"uid": DAVE, "status": "offline", "username": "Dave the Mod", "roleColor": "#3498db"}
    fake.role_update(HOME, MODS, color=0x00FF00)  # a role's colour edited recolours its members
    recoloured = {}
    while set(recoloured) != {ALICE, DAVE}:
        data = (await client.recv())["data"]
        recoloured[data["uid"]] = data.get("roleColor", recoloured.get(data["uid"]))
    assert recoloured == {ALICE: "#00ff00", DAVE: "#00ff00"}
    fake.member_remove(HOME, DAVE)
    gone = (await client.recv())["data"]
    assert gone["uid"] == DAVE and gone["delete"] is True
    await client.assert_quiet()


async def test_a_guild_rename_renames_a_server_the_config_left_unnamed(fake, start_daemon, open_client):
    d = await start_daemon(config(fake))
    await until(d, lambda: d.world.servers[HOME].info.name == "Home")
    fake.guild_update(HOME, name="Home, renamed")
    await until(d, lambda: d.world.servers[HOME].info.name == "Home, renamed")
    late = await open_client(d, read_list=False)
    listed = await late.recv_type("server-list")
    assert listed["data"][HOME]["name"] == "Home, renamed"


@pytest.mark.parametrize("mode", ["redact", "content", "off"])
async def test_messages_by_mode_and_channel(fake, start_daemon, open_client, mode, monkeypatch):
    d = await start_daemon(config(fake, f"    messages: {mode}\n    ignore_channels: [mod-chat]\n"))
    await ready(d)
    client = await open_client(d)
    await client.connect("home")
    text = f"hello <@{BOB}>, the secret plan is on"
    fake.message_create(HOME, MOD_CHAT, ALICE, "in the ignored channel")
    fake.message_create(HOME, GENERAL, ALICE, text, mentions=[BOB])
    fake.message_create(HOME, GENERAL, BOT, "a bot that is not shown")
    if mode == "off":
        await client.assert_quiet()
        return
    said = await client.recv_type("message")
    assert said["data"]["uid"] == ALICE and said["data"]["channel"] == GENERAL
    if mode == "redact":
        assert said["data"]["message"] == "…" and "secret" not in json.dumps(said)
    else:
        assert said["data"]["message"] == "hello @Bobby, the secret plan is on"  # the mention as a name
    await client.assert_quiet()


async def test_listen_channels_and_a_length_cap(fake, start_daemon, open_client):
    d = await start_daemon(config(fake, "    messages: content\n    listen_channels: [\"%s\"]\n"
                                        "    message_max_length: 10\n" % MOD_CHAT))
    await ready(d)
    client = await open_client(d)
    await client.connect("home")
    fake.message_create(HOME, GENERAL, ALICE, "not listened to")
    fake.message_create(HOME, MOD_CHAT, ALICE, "a rather long message")
    said = await client.recv_type("message")
    assert said["data"]["message"] == "a rather…" and len(said["data"]["message"]) <= 10
    await client.assert_quiet()


async def test_filters_hide_offline_and_max_actors(fake, start_daemon):
    d = await start_daemon(config(fake, "    include_bots: true\n    hide_offline: true\n    exclude_roles: [Artists]\n"))
    await until(d, lambda: set(users(d)) == {BOT})  # alice and bob hold Artists, carol is offline
    fake.member_update(HOME, ALICE, roles=[MODS])
    await until(d, lambda: set(users(d)) == {BOT, ALICE})
    fake.presence_update(HOME, ALICE, "offline")
    await until(d, lambda: set(users(d)) == {BOT})


async def test_max_actors_shows_the_active_first(fake, start_daemon):
    d = await start_daemon(config(fake, "    max_actors: 2\n"))
    await until(d, lambda: set(users(d)) == {ALICE, BOB})  # carol is offline and waits
    fake.presence_update(HOME, BOB, "offline")
    fake.presence_update(HOME, CAROL, "online")
    await until(d, lambda: set(users(d)) == {ALICE, CAROL})


async def test_a_dropped_gateway_resumes_and_the_world_stays_consistent(fake, start_daemon, open_client):
    d = await start_daemon(config(fake))
    await ready(d)
    client = await open_client(d)
    await client.connect("home")
    with fake.hold_connections():  # the reconnect waits: these events are missed, then replayed
        await fake.drop_connection()
        await health_until(d, lambda h: h["state"] in ("reconnecting", "connecting"))
        fake.presence_update(HOME, CAROL, "online")
        fake.member_remove(HOME, BOB)
    await fake.wait_resumed()
    got = [(await client.recv())["data"] for _ in range(2)]
    assert {"uid": CAROL, "status": "online"} in got and any(g["uid"] == BOB and g.get("delete") for g in got)
    await health_until(d, lambda h: h["state"] == "ready" and h["reconnects"] >= 1)
    assert {u: v["status"] for u, v in users(d).items()} == {ALICE: "online", CAROL: "online"}
    await client.assert_quiet()


async def test_an_invalid_session_identifies_again_and_reconciles(fake, start_daemon):
    d = await start_daemon(config(fake))
    await ready(d)
    fake.invalidate_session(now=True, resumable=False)
    fake.member_remove(HOME, CAROL)  # gone by the time the new session's guild arrives
    await fake.wait_identified(2)
    await until(d, lambda: set(users(d)) == {ALICE, BOB})


async def test_a_wrong_token_is_a_clear_error_and_never_shown(fake, start_daemon, open_client, capsys):
    wrong = "not-the-token-9876543210-zzzz"
    with structlog.testing.capture_logs() as logs:
        d = await start_daemon(config(fake, token=wrong))
        health = await health_until(d, lambda h: h["state"] == "failed")
    assert "refused the bot token" in health["error"] and "DISCORD_BOT_TOKEN" in health["error"]
    failed = [e for e in logs if e["event"] == "discord.failed"]
    assert failed and failed[0]["servers"] == ["home"]
    client = await open_client(d)
    assert (await client.connect("local"))["type"] == "server-join"  # the rest serves on
    seen = json.dumps([{k: str(v) for k, v in e.items()} for e in logs]) + json.dumps(d.health()) + capsys.readouterr().err
    assert wrong not in seen and TOKEN not in seen


async def test_a_privileged_intent_not_enabled_names_what_to_enable(start_daemon):
    async with FakeDiscord(token=TOKEN, intents_enabled={"members"}) as fake:
        add_home(fake)
        d = await start_daemon(config(fake))
        health = await health_until(d, lambda h: h["state"] == "failed")
    assert "4014" in health["error"] and "Presence Intent" in health["error"] and "Developer Portal" in health["error"]


async def test_a_guild_the_bot_is_not_in_is_named(fake, start_daemon):
    text = config(fake, "  - {snowflake: \"999999999999999999\", id: elsewhere, source: discord}\n")
    with structlog.testing.capture_logs() as logs:
        d = await start_daemon(text)
        await health_until(d, lambda h: h["state"] == "ready")
        await ready(d)
    missing = [e for e in logs if e["event"] == "discord.guild_missing"]
    assert missing and missing[0]["server"] == "elsewhere" and "invite it" in missing[0]["error"]
    assert d.health()["discord"]["servers"]["elsewhere"]["seen"] is False


async def test_a_reload_changes_options_without_reconnecting(fake, tmp_path, open_client, monkeypatch):
    from dbackd.daemon import Daemon

    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    path = tmp_path / "dback.yaml"
    body = (f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{fake.api_base}\"}}\n"
            f"servers:\n  - {{snowflake: \"{HOME}\", id: home, source: discord, default: true, messages: MODE}}\n")
    path.write_text(body.replace("MODE", "redact"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        await ready(d)
        client = await open_client(d)
        await client.connect("home")
        connections = len(fake.connections)
        fake.message_create(HOME, GENERAL, ALICE, "first")
        assert (await client.recv_type("message"))["data"]["message"] == "…"
        path.write_text(body.replace("MODE", "off"))
        assert await d.reload()
        fake.message_create(HOME, GENERAL, ALICE, "second")
        await client.assert_quiet()
        path.write_text(body.replace("MODE", "redact").replace("source: discord,", "source: discord, hide_offline: true,"))
        assert await d.reload()
        gone = await client.recv()
        assert gone["data"] == {"uid": CAROL, "status": "offline", "delete": True}
        fake.message_create(HOME, GENERAL, ALICE, "third")
        assert (await client.recv_type("message"))["data"]["message"] == "…"
        assert len(fake.connections) == connections  # the same gateway connection throughout
    finally:
        await d.stop()


async def test_auto_servers_serve_every_guild(fake, start_daemon):
    other = "555555555555555555"
    fake.add_guild(id=other, name="Other Place", members=[member("666666666666666601", "olga")],
                   presences=[presence("666666666666666601", "dnd")])
    d = await start_daemon(config(fake, top="  auto_servers: true"))
    await until(d, lambda: d.world.resolve("other-place") is not None and len(d.users("other-place")) == 1)
    assert d.users("other-place")[0]["status"] == "dnd"
    fake.guild_delete(other)
    await until(d, lambda: d.world.resolve("other-place") is None)
    assert len(users(d)) == 3  # the configured discord server is unaffected


async def test_a_reload_with_a_new_token_reconnects_and_a_bad_one_is_reported(fake, tmp_path, http, monkeypatch):
    from dbackd.daemon import Daemon

    from .test_metrics import scrape, value

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "DISCORD_BOT_TOKEN").write_text("a-wrong-token-000000000000\n")
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))  # as systemd's LoadCredential does
    path = tmp_path / "dback.yaml"
    path.write_text(f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{fake.api_base}\"}}\n"
                    f"servers:\n  - {{snowflake: \"{HOME}\", id: home, source: discord, default: true}}\n")
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        health = await health_until(d, lambda h: h["state"] == "failed")
        assert "refused the bot token" in health["error"]
        m = await scrape(http, d)
        assert value(m, "dbackd_discord_connected") == 0
        (credentials / "DISCORD_BOT_TOKEN").write_text(TOKEN + "\n")
        assert await d.reload()
        await ready(d)
        m = await scrape(http, d)
        assert value(m, "dbackd_discord_connected") == 1
        assert value(m, "dbackd_discord_members", server="home", which="shown") == 3
        text = await (await http.get(f"http://127.0.0.1:{d.port}/metrics")).text()
        assert TOKEN not in text and TOKEN not in json.dumps(d.health())
    finally:
        await d.stop()


async def test_a_reload_adds_and_removes_a_discord_server(fake, tmp_path, monkeypatch):
    from dbackd.daemon import Daemon

    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    other = "555555555555555555"
    fake.add_guild(id=other, name="Other Place", members=[member("666666666666666601", "olga")],
                   presences=[presence("666666666666666601", "dnd")])
    path = tmp_path / "dback.yaml"
    head = f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{fake.api_base}\"}}\nservers:\n"
    home = f"  - {{snowflake: \"{HOME}\", id: home, source: discord, default: true}}\n"
    path.write_text(head + home)
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        await ready(d)
        connections = len(fake.connections)
        path.write_text(head + home + f"  - {{snowflake: \"{other}\", id: other, name: Other, source: discord}}\n")
        assert await d.reload()
        await until(d, lambda: [u["uid"] for u in d.users("other")] == ["666666666666666601"])
        path.write_text(head + home)
        assert await d.reload()
        assert d.world.resolve("other") is None and len(users(d)) == 3
        assert len(fake.connections) == connections  # the same connection serves the servers it is given
    finally:
        await d.stop()
