"""Discord OAuth2 logins over real sockets, checked against a fake Discord API on loopback."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Awaitable, Callable, Optional

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dbackd.edge import oauth
from dbackd.fanout import protocol
from dbackd.config import load_text
from dbackd.edge.oauth import OAuthService

from .conftest import EXAMPLE, ROOT, events

BOT_TOKEN = "bot-token-0123456789"
CLIENT_ID = "506432803173433344"
NELLY = {"id": "80351110224678912", "username": "nelly"}
OTTO = {"id": "80351110224678913", "username": "otto"}
GUILD = "2"
ROLE = "175928847299117063"
FAILED = protocol.error(protocol.AUTH_FAILED)
REQUIRED = protocol.error(protocol.AUTH_REQUIRED)

Step = Callable[[], Awaitable[web.StreamResponse]]


class FakeDiscord:
    """The two Discord endpoints dbackd calls, with scripted answers and a record of every call."""

    def __init__(self) -> None:
        self.users: dict[str, dict] = {}  # bearer token -> user object
        self.members: dict[tuple[str, str], list[str]] = {}  # (guild, user id) -> role ids
        self.scripts: dict[str, list[Step]] = {}  # bearer token -> answers given before the normal one
        self.calls: list[tuple[str, str]] = []  # (endpoint, Authorization header)
        self.release = asyncio.Event()  # lets answers that hang finish (at teardown)
        self.called = asyncio.Event()  # set by every call
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self.me)
        app.router.add_get("/api/v10/guilds/{guild}/members/{user}", self.member)
        return app

    def count(self, endpoint: str) -> int:
        return sum(1 for e, _ in self.calls if e == endpoint)

    async def me(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.calls.append(("me", auth))
        self.called.set()
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        script = self.scripts.get(token or "")
        if script:
            return await script.pop(0)()
        if token in self.users:
            return web.json_response({**self.users[token], "discriminator": "0", "avatar": None})
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def member(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.calls.append(("member", auth))
        self.called.set()
        if auth != f"Bot {BOT_TOKEN}":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        key = (request.match_info["guild"], request.match_info["user"])
        if key not in self.members:
            return web.json_response({"message": "Unknown Member", "code": 10007}, status=404)
        return web.json_response({"user": {"id": key[1]}, "roles": self.members[key], "nick": None})

    # -- scripted answers ----------------------------------------------------------
    def answer(self, status: int, body: Any = None, headers: Optional[dict] = None) -> Step:
        async def step() -> web.StreamResponse:
            if isinstance(body, (dict, list)):
                return web.json_response(body, status=status, headers=headers)
            return web.Response(status=status, text=body or "", headers=headers)
        return step

    def hang(self) -> Step:
        async def step() -> web.StreamResponse:
            await self.release.wait()
            return web.Response(status=500)
        return step

    def after(self, event: asyncio.Event, then: Step) -> Step:
        async def step() -> web.StreamResponse:
            await event.wait()
            return await then()
        return step


@pytest.fixture
async def discord(aiohttp_server):
    fake = FakeDiscord()
    server = await aiohttp_server(fake.app())
    fake.base = str(server.make_url("/api/v10"))
    yield fake
    fake.release.set()


def config(discord: FakeDiscord, access: str, timeout: str = "2s", extra: str = ""):
    text = f"""
oauth:
  client_id: "{CLIENT_ID}"
  api_base: {discord.base}
  bot_token: ${{BOT}}
  timeout: {timeout}
{extra}
servers:
  - {{snowflake: "1", id: pub, name: Public, default: true, users: [{{uid: "11", username: a}}]}}
  - snowflake: "{GUILD}"
    id: priv
    name: Private
    passworded: true
    access: {access}
    users: [{{uid: "21", username: secret-member}}]
"""
    return load_text(text, "t.yaml", ROOT, {"BOT": BOT_TOKEN})


def login(token: str, user: dict) -> dict:
    return {"discordToken": token, "discordUser": user}


async def test_valid_token_of_a_listed_user_joins(start_daemon, open_client, discord):
    discord.users["tok-nelly"] = NELLY
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    join = await client.connect("priv", **login("tok-nelly", NELLY))
    assert join["type"] == "server-join"
    assert list(join["data"]["users"]) == ["21"] and join["data"]["clientId"] == CLIENT_ID
    assert discord.calls == [("me", "Bearer tok-nelly")]
    d.world.set_presence("priv", "21", "dnd")
    assert (await client.recv_type("presence"))["data"] == {"uid": "21", "status": "dnd"}


async def test_rejected_token_fails(start_daemon, open_client, discord, captured_logs):
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    client = await open_client(d)
    assert await client.connect("priv", **login("expired", NELLY)) == FAILED
    assert events(captured_logs)[-1]["outcome"] == "invalid_token"
    assert discord.count("me") == 1
    # A rejected token stays rejected for cache_ttl: a retry does not ask again.
    assert await client.connect("priv", **login("expired", NELLY)) == FAILED
    assert discord.count("me") == 1


async def test_claimed_user_that_is_not_the_tokens_user_fails(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-otto"] = OTTO
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    assert await client.connect("priv", **login("tok-otto", NELLY)) == FAILED  # Otto claims to be Nelly
    last = events(captured_logs)[-1]
    assert last["outcome"] == "mismatch" and last["user"] == OTTO["id"] and last["claimed"] == NELLY["id"]


async def test_guild_member_joins_and_stranger_does_not(start_daemon, open_client, discord, captured_logs):
    discord.users.update({"tok-nelly": NELLY, "tok-otto": OTTO})
    discord.members[(GUILD, NELLY["id"])] = []
    d = await start_daemon(config(discord, "{guild_members: true}"))
    member, stranger = await open_client(d), await open_client(d)
    assert (await member.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert ("member", f"Bot {BOT_TOKEN}") in discord.calls
    assert await stranger.connect("priv", **login("tok-otto", OTTO)) == FAILED
    assert [e["outcome"] for e in events(captured_logs)] == ["allowed", "denied"]


async def test_role_rule(start_daemon, open_client, discord):
    discord.users.update({"tok-nelly": NELLY, "tok-otto": OTTO})
    discord.members[(GUILD, NELLY["id"])] = ["1", ROLE]
    discord.members[(GUILD, OTTO["id"])] = ["1"]  # in the guild, without the role
    d = await start_daemon(config(discord, f'{{roles: ["{ROLE}"]}}'))
    with_role, without = await open_client(d), await open_client(d)
    assert (await with_role.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert await without.connect("priv", **login("tok-otto", OTTO)) == FAILED


async def test_valid_login_not_allowed_by_any_rule(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-otto"] = OTTO
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    assert await client.connect("priv", **login("tok-otto", OTTO)) == FAILED
    assert events(captured_logs)[-1]["outcome"] == "denied"
    assert discord.count("member") == 0  # no guild rule: the bot is not asked


async def test_no_rule_means_nobody_and_discord_is_not_asked(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    d = await start_daemon(config(discord, "{}"))
    client = await open_client(d)
    assert await client.connect("priv", **login("tok-nelly", NELLY)) == FAILED
    assert discord.calls == [] and events(captured_logs)[-1]["outcome"] == "denied"


@pytest.mark.parametrize("answer", [
    (500, {"message": "Internal Server Error"}),
    (200, "<html>not json</html>"),
    (200, {"id": 80351110224678912, "username": "nelly"}),  # id must be a string of digits
    (200, ["a", "list"]),
    (302, ""),
])
async def test_discord_errors_and_nonsense_fail_closed(start_daemon, open_client, discord, captured_logs, answer):
    discord.users["tok-nelly"] = NELLY
    discord.scripts["tok-nelly"] = [discord.answer(*answer)]
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    client = await open_client(d)
    assert await client.connect("priv", **login("tok-nelly", NELLY)) == FAILED
    assert events(captured_logs)[-1]["outcome"] == "discord_error"
    # Not remembered: once Discord answers properly, the same login works.
    assert (await client.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert discord.count("me") == 2


async def test_discord_unreachable_fails_closed(start_daemon, open_client, captured_logs, unused_tcp_port):
    text = f"""
oauth: {{api_base: "http://127.0.0.1:{unused_tcp_port}/api/v10", timeout: 2s}}
servers:
  - {{snowflake: "2", id: priv, name: P, passworded: true, access: {{any_discord_user: true}}}}
"""
    d = await start_daemon(load_text(text, "t.yaml", ROOT, {}))
    client = await open_client(d)
    assert await client.connect("priv", **login("tok-nelly", NELLY)) == FAILED
    assert events(captured_logs)[-1]["outcome"] == "discord_error"


async def test_discord_slower_than_the_timeout(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    discord.scripts["tok-nelly"] = [discord.hang()]
    d = await start_daemon(config(discord, "{any_discord_user: true}", timeout="200ms"))
    slow, other = await open_client(d), await open_client(d)
    await other.connect("pub")
    started = time.monotonic()
    await slow.send({"type": "connect", "data": {"server": "priv", **login("tok-nelly", NELLY)}})
    # Others are served while the check waits on Discord.
    d.world.set_presence("pub", "11", "idle")
    assert (await other.recv_type("presence"))["data"]["status"] == "idle"
    assert await slow.recv() == FAILED
    assert time.monotonic() - started < 2.0
    last = events(captured_logs)[-1]
    assert last["outcome"] == "timeout" and last["duration_ms"] >= 200
    d.world.set_presence("priv", "21", "dnd")
    await slow.assert_quiet()  # a failed check leaves the socket outside the server
    assert (await slow.connect("pub"))["type"] == "server-join"


async def test_429_waits_out_retry_after_within_the_timeout(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    discord.scripts["tok-nelly"] = [discord.answer(429, {"message": "You are being rate limited.", "retry_after": 0.05,
                                                        "global": False}, {"Retry-After": "0.05"})]
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    client = await open_client(d)
    assert (await client.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert discord.count("me") == 2
    last = events(captured_logs)[-1]
    assert last["outcome"] == "allowed" and last["duration_ms"] >= 50


async def test_429_longer_than_the_timeout_fails_at_once_and_is_not_hammered(
        start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    discord.scripts["tok-nelly"] = [discord.answer(429, {"retry_after": 30}, {"Retry-After": "30"})]
    d = await start_daemon(config(discord, "{any_discord_user: true}", timeout="1s"))
    client = await open_client(d)
    started = time.monotonic()
    assert await client.connect("priv", **login("tok-nelly", NELLY)) == FAILED
    assert await client.connect("priv", **login("tok-nelly", NELLY)) == FAILED
    assert time.monotonic() - started < 1.0  # neither waited for a timeout it could not meet
    assert discord.count("me") == 1  # the second check did not ask before Retry-After was over
    assert [e["outcome"] for e in events(captured_logs)] == ["rate_limited", "rate_limited"]


async def test_one_call_for_many_joins_with_one_token(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    hold = asyncio.Event()
    discord.scripts["tok-nelly"] = [discord.after(hold, discord.answer(200, NELLY))]
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}', extra="  cache_ttl: 60s"))
    now = [1000.0]
    d.oauth.clock = lambda: now[0]
    # Count checks as they start, so Discord answers only once all five wait on it.
    waiting, started_checks = asyncio.Event(), []
    verify = d.access.verify_login

    async def counting(*args):
        started_checks.append(1)
        if len(started_checks) == 5:
            waiting.set()
        return await verify(*args)

    d.access.verify_login = counting
    clients = [await open_client(d) for _ in range(5)]
    for c in clients:
        await c.send({"type": "connect", "data": {"server": "priv", **login("tok-nelly", NELLY)}})
    await asyncio.wait_for(waiting.wait(), 5)
    hold.set()
    for c in clients:
        assert (await c.recv_type("server-join"))["data"]["serverName"] == "Private"
    assert discord.count("me") == 1
    # A page reload later: still from the cache.
    for c in clients[:3]:
        assert (await c.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert discord.count("me") == 1
    assert [e["cached"] for e in events(captured_logs)] == [False] + [True] * 7  # one asked, four shared, three cached
    # After cache_ttl Discord is asked again.
    now[0] += 61
    assert (await clients[0].connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert discord.count("me") == 2


async def test_no_token_in_any_log_line(start_daemon, open_client, discord, captured_logs):
    tokens = {name: f"SECRET-{name}-7c1f2a9e" for name in ("ok", "bad", "err", "lie", "slow", "limited")}
    discord.users.update({tokens["ok"]: NELLY, tokens["lie"]: OTTO, tokens["err"]: NELLY, tokens["slow"]: NELLY,
                          tokens["limited"]: NELLY})
    discord.scripts[tokens["err"]] = [discord.answer(500, "oops " + tokens["err"])]
    discord.scripts[tokens["slow"]] = [discord.hang()]
    discord.scripts[tokens["limited"]] = [discord.answer(429, {"retry_after": 60}, {"Retry-After": "60"})]
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}', timeout="300ms"))
    client = await open_client(d)
    for name, token in tokens.items():
        await client.connect("priv", **login(token, NELLY))
    await client.connect("priv", **login("bad\r\nX-Injected: 1", NELLY))  # not a token at all: never sent
    await d.stop()
    out = captured_logs.getvalue()
    assert [e["outcome"] for e in events(captured_logs)] == [
        "allowed", "invalid_token", "discord_error", "mismatch", "timeout", "rate_limited", "invalid_token"]
    for token in tokens.values():
        assert token not in out
    assert "Injected" not in out and BOT_TOKEN not in out
    assert "oauth.verified" in out and "socket.refused" in out


async def test_private_server_never_reaches_a_socket_without_a_grant(start_daemon, open_client, discord):
    discord.users.update({"tok-nelly": NELLY, "tok-otto": OTTO})
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    nothing, wrong, denied, switched, member = [await open_client(d) for _ in range(5)]
    assert await nothing.connect("priv") == REQUIRED
    assert await wrong.connect("priv", **login("forged", NELLY)) == FAILED
    assert await denied.connect("priv", **login("tok-otto", OTTO)) == FAILED
    assert (await switched.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    assert (await switched.connect("pub"))["type"] == "server-join"  # switching away drops the grant
    assert await switched.connect(GUILD) == REQUIRED  # and coming back asks again
    assert (await member.connect("priv", **login("tok-nelly", NELLY)))["type"] == "server-join"
    d.world.set_presence("priv", "21", "idle")
    d.world.set_presence("priv", "22", "online", username="newcomer")
    d.world.say("priv", "21", "psst", "3")
    assert (await member.recv_type("presence"))["data"]["uid"] == "21"
    assert (await member.recv_type("presence"))["data"]["username"] == "newcomer"
    assert (await member.recv_type("message"))["data"]["message"] == "psst"
    for client in (nothing, wrong, denied, switched):
        await client.assert_quiet()


async def test_server_list_carries_no_oauth_settings(start_daemon, open_client, discord):
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"], guild_members: true}}'))
    client = await open_client(d, read_list=False)
    listing = await client.recv_type("server-list")
    assert listing["data"][GUILD] == {"id": "priv", "name": "Private", "passworded": True}
    text = json.dumps(listing)
    assert BOT_TOKEN not in text and NELLY["id"] not in text and discord.base not in text


async def test_claim_without_a_usable_id_is_refused_without_asking(start_daemon, open_client, discord):
    discord.users["tok-nelly"] = NELLY
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    client = await open_client(d)
    for claim in ({}, {"id": 80351110224678912}, {"id": "nelly"}):
        assert await client.connect("priv", discordToken="tok-nelly", discordUser=claim) == FAILED
    assert discord.calls == []


async def test_stop_closes_the_http_session_and_cancels_checks(start_daemon, open_client, discord, captured_logs):
    discord.users["tok-nelly"] = NELLY
    discord.scripts["tok-nelly"] = [discord.hang()]
    d = await start_daemon(config(discord, "{any_discord_user: true}", timeout="5s"))
    client = await open_client(d)
    await client.send({"type": "connect", "data": {"server": "priv", **login("tok-nelly", NELLY)}})
    await asyncio.wait_for(discord.called.wait(), 5)
    assert d.oauth.session_open
    started = time.monotonic()
    await d.stop()
    assert not d.oauth.session_open and time.monotonic() - started < 4.0
    assert events(captured_logs)[-1]["outcome"] == "discord_error"


async def test_mock_provider_of_the_example(start_daemon, open_client, captured_logs):
    d = await start_daemon(EXAMPLE)
    client = await open_client(d)
    demo = {"id": "323456789012345001", "username": "NNTin"}
    assert await client.connect("oauth", discordToken="demo-token", discordUser={"id": "1"}) == FAILED
    assert await client.connect("oauth", discordToken="guest-token",
                                discordUser={"id": "323456789012345999"}) == FAILED
    assert await client.connect("oauth", discordToken="not-listed", discordUser=demo) == FAILED
    join = await client.connect("oauth", discordToken="demo-token", discordUser=demo)
    assert join["type"] == "server-join" and join["data"]["serverName"] == "OAuth2 Protected Server"
    assert [e["outcome"] for e in events(captured_logs)] == ["mismatch", "denied", "invalid_token", "allowed"]
    assert not any(e["cached"] for e in events(captured_logs))
    assert d.oauth.requests == 0


async def test_lookups_waiting_on_discord_are_bounded(start_daemon, open_client, discord, captured_logs, monkeypatch):
    monkeypatch.setattr(oauth, "MAX_IN_FLIGHT", 1)
    discord.users.update({"tok-nelly": NELLY, "tok-otto": OTTO})
    hold = asyncio.Event()
    discord.scripts["tok-nelly"] = [discord.after(hold, discord.answer(200, NELLY))]
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    first, second = await open_client(d), await open_client(d)
    await first.send({"type": "connect", "data": {"server": "priv", **login("tok-nelly", NELLY)}})
    await asyncio.wait_for(discord.called.wait(), 5)
    assert await second.connect("priv", **login("tok-otto", OTTO)) == FAILED  # refused without waiting
    assert events(captured_logs)[-1]["outcome"] == "rate_limited"
    hold.set()
    assert (await first.recv_type("server-join"))["data"]["serverName"] == "Private"
    assert (await second.connect("priv", **login("tok-otto", OTTO)))["type"] == "server-join"


async def test_a_reload_with_other_discord_settings_forgets_cached_answers(discord):
    from dbackd.core.events import ConfigReplaced
    from dbackd.core.world import World

    discord.users["tok-nelly"] = NELLY
    servers = config(discord, "{any_discord_user: true}", extra="  cache_ttl: 60s")
    world = World(servers)
    service = OAuthService(world)
    await service.start()
    try:
        server = world.config.servers[1]
        assert await service.verify(server, "tok-nelly", NELLY) and service.cached == 1
        world.apply(ConfigReplaced(config(discord, "{any_discord_user: true}", extra="  cache_ttl: 60s")))
        assert await service.verify(server, "tok-nelly", NELLY) and discord.count("me") == 1  # same settings: kept
        world.apply(ConfigReplaced(config(discord, "{any_discord_user: true}", extra="  cache_ttl: 30s")))
        assert service.cached == 0
        assert await service.verify(server, "tok-nelly", NELLY) and discord.count("me") == 2
    finally:
        await service.stop()


# -- a reload while a login is being checked -------------------------------------------
async def held_login(discord: FakeDiscord, client, token: str, user: dict, server: str = "priv") -> asyncio.Event:
    """Send a login whose Discord answer waits for the returned event; returns once Discord was asked."""
    hold = asyncio.Event()
    discord.users[token] = user
    discord.scripts[token] = [discord.after(hold, discord.answer(200, user))]
    discord.called.clear()
    await client.send({"type": "connect", "data": {"server": server, **login(token, user)}})
    await asyncio.wait_for(discord.called.wait(), 5)
    return hold


async def test_access_removed_while_the_login_is_checked_never_lets_the_user_in(start_daemon, open_client,
                                                                                discord):
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    hold = await held_login(discord, client, "tok-nelly", NELLY)
    await d.declaration.replace(config(discord, f'{{users: ["{OTTO["id"]}"]}}'))  # Nelly is off the rules
    hold.set()
    assert await client.recv() == FAILED
    d.world.set_presence("priv", "21", "dnd")
    await client.assert_quiet()  # nothing of the private server reached it


async def test_an_id_given_to_another_server_while_the_login_is_checked_is_decided_again(start_daemon, open_client,
                                                                                        discord):
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    hold = await held_login(discord, client, "tok-nelly", NELLY)
    # "priv" now names another private server, whose rules do not list Nelly.
    swapped = config(discord, f'{{users: ["{NELLY["id"]}"]}}').servers
    other = dataclasses.replace(swapped[1], snowflake="3", name="Other",
                                access=dataclasses.replace(swapped[1].access, users=(OTTO["id"],)))
    await d.declaration.replace(dataclasses.replace(d.config, servers=(swapped[0], other)))
    assert d.world.get("3").info.name == "Other"  # the world has it before Discord answers
    hold.set()
    assert await client.recv() == FAILED
    await client.assert_quiet()


async def test_a_reload_that_changes_nothing_for_the_server_lets_the_login_through(start_daemon, open_client,
                                                                                   discord):
    d = await start_daemon(config(discord, f'{{users: ["{NELLY["id"]}"]}}'))
    client = await open_client(d)
    hold = await held_login(discord, client, "tok-nelly", NELLY)
    await d.declaration.replace(config(discord, f'{{users: ["{NELLY["id"]}"]}}', extra="  cache_ttl: 1m"))
    hold.set()
    assert (await client.recv_type("server-join"))["data"]["serverName"] == "Private"


# -- what Discord is asked ---------------------------------------------------------------
async def test_the_guard_stops_calling_discord_at_its_budget_but_for_its_pace(start_daemon, open_client, discord,
                                                                                captured_logs, http):
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    guard = d.oauth.guard
    guard.budget, guard.burst = 3, 1  # Discord blocks at 10,000; the point is where it stops, not how far
    guard.clock = lambda: 1000.0  # no time passes: past the budget, one paced slot and no more
    clients = [await open_client(d) for _ in range(2)]
    for i in range(6):
        assert await clients[i % 2].connect("priv", **login(f"random-{i}", NELLY)) == FAILED
    assert discord.count("me") == 4
    assert [e["outcome"] for e in events(captured_logs)] == ["invalid_token"] * 4 + ["rate_limited"] * 2
    async with http.get(f"http://127.0.0.1:{d.port}/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    counted = {s.labels["kind"]: s.value for s in families["dbackd_oauth_discord_guard"].samples
               if s.name.endswith("_total")}
    assert counted == {"invalid": 4.0, "refused": 2.0}


async def test_a_rejected_token_is_remembered_for_a_minute_even_with_the_cache_off(start_daemon, open_client,
                                                                                   discord):
    d = await start_daemon(config(discord, "{any_discord_user: true}", extra="  cache_ttl: 0"))
    now = [1000.0]
    d.oauth.clock = lambda: now[0]
    client = await open_client(d)
    for _ in range(3):
        assert await client.connect("priv", **login("expired", NELLY)) == FAILED
    assert discord.count("me") == 1
    now[0] += oauth.FAILED_TTL + 1
    assert await client.connect("priv", **login("expired", NELLY)) == FAILED
    assert discord.count("me") == 2


async def test_one_address_gets_its_share_of_login_checks_per_minute(start_daemon, open_client, discord, http):
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    limited = dataclasses.replace(d.config, limits=dataclasses.replace(d.config.limits, oauth_checks_per_minute=4))
    await d.declaration.replace(limited)
    clients = [await open_client(d) for _ in range(3)]
    answers = [await clients[i % 3].connect("priv", **login(f"random-{i}", NELLY)) for i in range(7)]
    assert answers == [FAILED] * 7
    assert discord.count("me") == 4  # the rest were refused without asking Discord
    async with http.get(f"http://127.0.0.1:{d.port}/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    refusals = {s.labels["reason"]: s.value for s in families["dbackd_join_refusals"].samples
                if s.name.endswith("_total")}
    assert refusals["throttled"] == 3 and refusals["auth_failed"] == 4


async def test_concurrent_checks_per_address_are_bounded(start_daemon, open_client, discord):
    hold = asyncio.Event()
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    limited = dataclasses.replace(d.config, limits=dataclasses.replace(d.config.limits, oauth_checks_per_address=2))
    await d.declaration.replace(limited)
    clients = [await open_client(d) for _ in range(3)]
    for i, c in enumerate(clients):
        discord.users[f"t{i}"] = NELLY
        discord.scripts[f"t{i}"] = [discord.after(hold, discord.answer(200, NELLY))]
    for i, c in enumerate(clients[:2]):
        await c.send({"type": "connect", "data": {"server": "priv", **login(f"t{i}", NELLY)}})
    while discord.count("me") < 2:
        discord.called.clear()
        await asyncio.wait_for(discord.called.wait(), 5)
    assert await clients[2].connect("priv", **login("t2", NELLY)) == FAILED  # a third at once: refused at once
    hold.set()
    for c in clients[:2]:
        assert (await c.recv_type("server-join"))["data"]["serverName"] == "Private"
    assert discord.count("me") == 2


async def test_past_its_budget_the_guard_paces_lookups_and_never_locks_real_logins_out(start_daemon, open_client,
                                                                                       discord, http):
    d = await start_daemon(config(discord, "{any_discord_user: true}"))
    now = [1000.0]
    guard = d.oauth.guard
    guard.budget, guard.burst, guard.clock = 3, 2, lambda: now[0]  # Discord blocks at 10,000; the shape matters
    clients = [await open_client(d) for _ in range(2)]
    for i in range(3 + 2 + 2):  # the budget, then the paced burst, then two with no slot left
        assert await clients[i % 2].connect("priv", **login(f"random-{i}", NELLY)) == FAILED
    assert discord.count("me") == 3 + 2  # the last two were not sent
    async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
        shown = (await r.json())["oauth"]["discord_guard"]
    assert shown == {"state": "paced", "invalid_recent": 5, "budget": 3, "pace_per_second": guard.pace,
                     "paced": 2, "refused": 2}
    now[0] += 1.0 / guard.pace  # a moment later, not the ten minutes of the window
    discord.users["tok-real"] = NELLY
    fresh = await open_client(d)
    assert (await fresh.connect("priv", **login("tok-real", NELLY)))["type"] == "server-join"
