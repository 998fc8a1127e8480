"""Self-test of the fake Discord: a real discord.py client runs against it on loopback.

Its job: prove the fake is faithful enough for the Discord source's tests (login, READY and
GUILD_CREATE, member chunking, events, RESUME with replay, invalid sessions, close codes,
zlib-stream), and record what discord.py does against it. It must not reach any address but
127.0.0.1, nor leave discord.py pointed at the fake after a test.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator, Callable, List, Tuple

import aiohttp
import pytest

from tests.fakes.discord import (
    FakeDiscord,
    Op,
    category,
    member,
    point_discord_py_at,
    presence,
    role,
    text_channel,
    voice_channel,
)

discord = pytest.importorskip("discord", minversion="2.4")

TOKEN = "bot-token"
WAIT = 5.0  # an upper bound for something that must happen; never a wait for luck
GUILD_ID = "111111111111111111"
MODS, ARTISTS = "222222222222222201", "222222222222222202"
GENERAL, VOICE, CATEGORY = "333333333333333301", "333333333333333302", "333333333333333300"
ALICE, BOB, CAROL, DAVE = ("444444444444444401", "444444444444444402", "444444444444444403",
                           "444444444444444404")


def intents(**overrides: bool) -> "discord.Intents":
    value = discord.Intents.default()
    value.members = value.presences = value.message_content = True
    for name, on in overrides.items():
        setattr(value, name, on)
    return value


def add_home(fake: FakeDiscord):
    return fake.add_guild(
        id=GUILD_ID, name="Home",
        roles=[role(MODS, "Mods", color=0x3498DB, position=2, hoist=True), role(ARTISTS, "Artists", color=0xE91E63, position=1)],
        channels=[category(CATEGORY, "Text"), text_channel(GENERAL, "general", parent_id=CATEGORY),
                  voice_channel(VOICE, "Lounge", position=1)],
        members=[member(ALICE, "alice", roles=[MODS]), member(BOB, "bob", nick="Bobby", roles=[ARTISTS, MODS]),
                 member(CAROL, "carol")],
        presences=[presence(ALICE, "online"), presence(BOB, "idle", client_status={"mobile": "idle"})],
    )


class Recorder(discord.Client):
    """A discord.Client that records every event it handles, for tests to await."""

    def __init__(self, **options: Any):
        options.setdefault("intents", intents())
        # discord.py waits this long after the last GUILD_CREATE before on_ready; loopback is fast.
        options.setdefault("guild_ready_timeout", 0.3)
        super().__init__(**options)
        self.events: List[Tuple[str, tuple]] = []
        self._waiters: List[asyncio.Future] = []

    async def before_identify_hook(self, shard_id: Any, *, initial: bool = False) -> None:
        # discord.py sleeps 5 s before every IDENTIFY but the first, for Discord's identify
        # rate limit; the fake has none.
        return None

    def record(self, name: str, *args: Any) -> None:
        self.events.append((name, args))
        for future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()

    def named(self, name: str) -> List[tuple]:
        return [args for event, args in self.events if event == name]

    async def wait_event(self, name: str, check: Callable[..., bool] = lambda *a: True, *, count: int = 1) -> tuple:
        """The `count`-th event `name` whose arguments pass `check`, recorded at any time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            matches = [args for args in self.named(name) if check(*args)]
            if len(matches) >= count:
                return matches[count - 1]
            if loop.time() >= deadline:
                raise AssertionError(f"no {name} event (#{count}) within {WAIT}s; events: {[e for e, _ in self.events]}")
            future = loop.create_future()
            self._waiters.append(future)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(future, deadline - loop.time())

    async def on_connect(self): self.record("connect")
    async def on_ready(self): self.record("ready")
    async def on_resumed(self): self.record("resumed")
    async def on_disconnect(self): self.record("disconnect")
    async def on_guild_join(self, guild): self.record("guild_join", guild)
    async def on_guild_remove(self, guild): self.record("guild_remove", guild)
    async def on_guild_available(self, guild): self.record("guild_available", guild)
    async def on_guild_unavailable(self, guild): self.record("guild_unavailable", guild)
    async def on_guild_update(self, before, after): self.record("guild_update", before, after)
    async def on_guild_role_update(self, before, after): self.record("guild_role_update", before, after)
    async def on_presence_update(self, before, after): self.record("presence_update", before, after)
    async def on_member_join(self, m): self.record("member_join", m)
    async def on_member_update(self, before, after): self.record("member_update", before, after)
    async def on_member_remove(self, m): self.record("member_remove", m)
    async def on_message(self, message): self.record("message", message)


@pytest.fixture
async def make_fake() -> AsyncIterator[Callable[..., Any]]:
    """Start fakes with the given options; discord.py is pointed at the last one, and at none
    after the test."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(**options: Any) -> FakeDiscord:
            options.setdefault("token", TOKEN)
            options.setdefault("heartbeat_interval", 0.5)
            fake = await stack.enter_async_context(FakeDiscord(**options))
            async with aiohttp.ClientSession() as http:
                async with http.get(fake.api_base + "/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"] == "application/json"
                    url = (await r.json())["url"]
            stack.enter_context(point_discord_py_at(fake, gateway_url=url))
            return fake

        yield start


@pytest.fixture
async def fake(make_fake) -> FakeDiscord:
    return await make_fake()


@contextlib.asynccontextmanager
async def running(client: Recorder, token: str = TOKEN) -> AsyncIterator[asyncio.Future]:
    task = asyncio.ensure_future(client.start(token))
    try:
        yield task
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, WAIT)


async def ready_client(stack: contextlib.AsyncExitStack, **options: Any) -> Recorder:
    client = Recorder(**options)
    await stack.enter_async_context(running(client))
    await client.wait_event("ready")
    return client


def test_discord_py_is_pointed_back_at_discord_after_each_test():
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    assert Route.BASE == "https://discord.com/api/v10"
    assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"


async def test_login_small_guild_and_zlib_stream(fake: FakeDiscord):
    home = add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        await fake.wait_identified()

        # Login is two REST calls; nothing asks GET /gateway/bot.
        assert [(r.method, r.path, r.status) for r in fake.requests][-2:] == [
            ("GET", "/api/v10/users/@me", 200), ("GET", "/api/v10/oauth2/applications/@me", 200)]
        assert client.user.id == int(fake.bot.id) and client.user.bot
        assert client.application_id == int(fake.application_id)

        # The default connection: zlib-stream (zstd-stream where zstandard or Python 3.14's
        # compression.zstd is importable), v10, JSON, on the gateway GET /gateway/bot named.
        conn = fake.connections[0]
        expected = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
        assert conn.path == "/gateway" and conn.query["v"] == "10" and conn.query["encoding"] == "json"
        assert conn.compress == expected
        if discord.utils._ZSTD_SOURCE is None:
            assert conn.compress == "zlib-stream"

        # HELLO first; discord.py heartbeats at once, then identifies with its intents.
        assert fake.sent[0].op == Op.HELLO and fake.sent[0].d["heartbeat_interval"] == 500
        assert [f.op for f in fake.received][:2] == [Op.HEARTBEAT, Op.IDENTIFY]
        identify = fake.received[1].d
        assert identify["token"] == TOKEN and identify["intents"] == client.intents.value
        assert identify["large_threshold"] == 250
        assert fake.frames(Op.HEARTBEAT_ACK, direction="sent")
        assert [f.t for f in fake.sent if f.op == Op.DISPATCH] == ["READY", "GUILD_CREATE"]

        guild = client.get_guild(int(GUILD_ID))
        assert guild.name == "Home" and guild.chunked and not guild.large
        assert guild.member_count == 4 == len(guild.members)  # three members and the bot
        assert not fake.frames(Op.REQUEST_GUILD_MEMBERS)  # a small guild with presences is not chunked
        alice, bob, carol = (guild.get_member(int(x)) for x in (ALICE, BOB, CAROL))
        assert guild.me is not None and guild.me.id == int(fake.bot.id)
        assert (alice.name, alice.nick, [r.name for r in alice.roles]) == ("alice", None, ["@everyone", "Mods"])
        assert (bob.display_name, sorted(r.name for r in bob.roles)) == ("Bobby", ["@everyone", "Artists", "Mods"])
        assert bob.top_role.name == "Mods"
        assert (alice.status, bob.status, carol.status) == (discord.Status.online, discord.Status.idle,
                                                           discord.Status.offline)
        assert bob.mobile_status == discord.Status.idle and bob.desktop_status == discord.Status.offline
        assert guild.get_role(int(MODS)).colour.value == 0x3498DB and guild.get_role(int(MODS)).hoist
        assert guild.default_role.id == int(GUILD_ID)
        assert sorted(c.name for c in guild.channels) == ["Lounge", "Text", "general"]
        assert guild.get_channel(int(GENERAL)).category.name == "Text"

        assert home.member_count == 4


async def test_heartbeats_are_acknowledged(fake: FakeDiscord):
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        mark = fake.mark()
        fake.request_heartbeat()  # op 1 from the server: the client must heartbeat at once
        beat = await fake.wait_op(Op.HEARTBEAT, since=mark)
        ack = await fake.wait_op(Op.HEARTBEAT_ACK, direction="sent", since=beat.n)
        assert ack.n > beat.n
        assert beat.d == max(f.s for f in fake.sent if f.s is not None)
        assert client.latency < 1.0


async def test_large_guild_is_chunked_with_presences_and_roles(fake: FakeDiscord):
    big = fake.add_large_guild(members=2500, roles=8, online_fraction=0.2, seed=7)
    online = {uid for uid in big.presences}
    async with contextlib.AsyncExitStack() as stack:
        started = time.monotonic()
        client = await ready_client(stack)
        elapsed = time.monotonic() - started

        guild_create = next(f for f in fake.sent if f.t == "GUILD_CREATE").d
        assert guild_create["large"] and guild_create["member_count"] == 2501
        # Past large_threshold GUILD_CREATE carries the members who are not offline, and the bot.
        assert {m["user"]["id"] for m in guild_create["members"]} == online | {fake.bot.id}

        request = (await fake.wait_op(Op.REQUEST_GUILD_MEMBERS)).d
        assert request["guild_id"] == int(big.id) and request["query"] == "" and request["limit"] == 0
        assert request["presences"] is False and request["nonce"]
        chunks = [f.d for f in fake.sent if f.t == "GUILD_MEMBERS_CHUNK"]
        assert [(c["chunk_index"], c["chunk_count"], len(c["members"])) for c in chunks] == [
            (0, 3, 1000), (1, 3, 1000), (2, 3, 501)]
        assert {c["nonce"] for c in chunks} == {request["nonce"]}

        guild = client.get_guild(int(big.id))
        assert guild.chunked and len(guild.members) == 2501 and guild.large
        for uid, record in list(big.members.items())[::97]:
            got = guild.get_member(int(uid))
            assert got.name == record.user.username and got.nick == record.nick
            assert {r.id for r in got.roles} == {int(r) for r in record.roles} | {int(big.id)}
            assert str(got.status) == big.status(uid)
        for rid, data in big.roles.items():
            assert guild.get_role(int(rid)).colour.value == data["color"]
        assert elapsed < 5.0, elapsed

        # A query with presences: chunks carry them.
        wanted = [int(uid) for uid in list(online)[:5]] + [int(next(u for u in big.members if u not in online))]
        found = await guild.query_members(user_ids=wanted, presences=True)
        assert sorted(m.id for m in found) == sorted(wanted)
        last = fake.frames(Op.REQUEST_GUILD_MEMBERS)[-1].d
        assert last["presences"] is True and sorted(last["user_ids"]) == sorted(wanted)
        chunk = [f.d for f in fake.sent if f.t == "GUILD_MEMBERS_CHUNK"][-1]
        assert {p["user"]["id"] for p in chunk["presences"]} == {str(u) for u in wanted[:5]}
        assert all(str(m.status) == big.status(m.id) for m in found)


async def test_events_reach_the_handlers(fake: FakeDiscord):
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        guild = client.get_guild(int(GUILD_ID))

        fake.presence_update(GUILD_ID, CAROL, "dnd", client_status={"web": "dnd"})
        before, after = await client.wait_event("presence_update", lambda b, a: a.id == int(CAROL))
        assert (before.status, after.status, after.web_status) == (discord.Status.offline, discord.Status.dnd,
                                                                   discord.Status.dnd)

        fake.member_add(GUILD_ID, member(DAVE, "dave", roles=[ARTISTS]))
        (joined,) = await client.wait_event("member_join")
        assert joined.id == int(DAVE) and [r.name for r in joined.roles] == ["@everyone", "Artists"]
        assert guild.member_count == 5

        fake.member_update(GUILD_ID, ALICE, nick="Al", roles=[ARTISTS])
        before, after = await client.wait_event("member_update", lambda b, a: a.id == int(ALICE))
        assert (before.nick, after.nick) == (None, "Al")
        assert [r.name for r in after.roles] == ["@everyone", "Artists"]

        fake.role_update(GUILD_ID, ARTISTS, color=0xFF0000)
        before, after = await client.wait_event("guild_role_update")
        assert (before.colour.value, after.colour.value) == (0xE91E63, 0xFF0000)
        assert guild.get_member(int(BOB)).colour.value == 0x3498DB  # Mods is above Artists

        fake.guild_update(GUILD_ID, name="Renamed")
        before, after = await client.wait_event("guild_update")
        assert (before.name, after.name) == ("Home", "Renamed")
        assert len(after.members) == 5 and len(after.roles) == 3

        fake.message_create(GUILD_ID, GENERAL, BOB, f"hello <@{ALICE}>", mentions=[ALICE])
        (message,) = await client.wait_event("message")
        assert message.content == f"hello <@{ALICE}>" and message.channel.id == int(GENERAL)
        assert message.guild.id == int(GUILD_ID) and message.author.id == int(BOB)
        assert isinstance(message.author, discord.Member) and message.author.nick == "Bobby"
        assert [m.id for m in message.mentions] == [int(ALICE)]

        fake.member_remove(GUILD_ID, DAVE)
        (removed,) = await client.wait_event("member_remove")
        assert removed.id == int(DAVE) and guild.member_count == 4

        # A guild added while connected is a GUILD_CREATE: the bot joined it.
        fake.add_guild(id="555555555555555555", name="Second", members=[member(ALICE, "alice")])
        (second,) = await client.wait_event("guild_join")
        assert second.name == "Second" and {m.id for m in second.members} == {int(ALICE), int(fake.bot.id)}

        fake.guild_delete(GUILD_ID, unavailable=True)
        (down,) = await client.wait_event("guild_unavailable")
        assert down.id == int(GUILD_ID) and down.unavailable
        fake.guild_available(GUILD_ID)
        (up,) = await client.wait_event("guild_available", count=2)  # the first came with READY
        assert up.id == int(GUILD_ID) and not up.unavailable and up.name == "Renamed"

        fake.guild_delete(GUILD_ID)
        (gone,) = await client.wait_event("guild_remove")
        assert gone.id == int(GUILD_ID) and client.get_guild(int(GUILD_ID)) is None
        assert [g.name for g in client.guilds] == ["Second"]


async def test_message_content_is_empty_without_the_intent(fake: FakeDiscord):
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack, intents=intents(message_content=False))
        fake.message_create(GUILD_ID, GENERAL, ALICE, "secret")
        fake.message_create(GUILD_ID, GENERAL, ALICE, f"hey <@{fake.bot.id}>", mentions=[fake.bot.id])
        (first,) = await client.wait_event("message")
        (second,) = await client.wait_event("message", count=2)
        assert (first.content, second.content) == ("", f"hey <@{fake.bot.id}>")


@pytest.mark.parametrize("how", ["abort", "close-4000", "op7-reconnect", "op9-resumable"])
async def test_resume_replays_missed_events_once(fake: FakeDiscord, how: str):
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        fake.presence_update(GUILD_ID, CAROL, "online")
        await client.wait_event("presence_update")
        session_id = fake.sessions[0]

        with fake.hold_connections():
            if how == "abort":
                await fake.drop_connection()
            elif how == "close-4000":
                await fake.drop_connection(4000)
            elif how == "op7-reconnect":
                fake.request_reconnect()
            else:
                fake.invalidate_session(now=True, resumable=True)
            await fake.wait_until(lambda: not fake.connections[0].open)
            # Dispatched with no connection up: these wait in the session's replay buffer.
            fake.presence_update(GUILD_ID, ALICE, "idle")
            fake.message_create(GUILD_ID, GENERAL, ALICE, "while you were away")

        await fake.wait_resumed()
        await client.wait_event("resumed")
        await client.wait_event("message")
        fake.message_create(GUILD_ID, GENERAL, BOB, "after the resume")
        await client.wait_event("message", count=2)

        resume = fake.frames(Op.RESUME)
        assert len(resume) == 1 and resume[0].d["session_id"] == session_id
        assert fake.counts["identified"] == 1 and len(fake.frames(Op.IDENTIFY)) == 1
        # It resumed at READY's resume_gateway_url, keeping its compression.
        first, second = fake.connections[0], fake.connections[1]
        assert (first.path, second.path) == ("/gateway", "/resume-gateway")
        assert second.compress == first.compress and second.session_id == session_id

        # The replay is exactly what the client had not seen, then RESUMED, then live events.
        seq = resume[0].d["seq"]
        on_second = [f for f in fake.sent if f.connection == second.number and f.op == Op.DISPATCH]
        assert [f.t for f in on_second] == ["PRESENCE_UPDATE", "MESSAGE_CREATE", "RESUMED", "MESSAGE_CREATE"]
        assert [f.s for f in on_second if f.s is not None] == list(range(seq + 1, seq + 4))

        # Each event reached the handlers once.
        assert [m.content for (m,) in client.named("message")] == ["while you were away", "after the resume"]
        statuses = [(a.id, str(a.status)) for _, a in client.named("presence_update")]
        assert statuses == [(int(CAROL), "online"), (int(ALICE), "idle")]
        assert len(client.named("resumed")) == 1 and len(client.named("ready")) == 1


@pytest.mark.parametrize("now", [False, True])
async def test_invalid_session_makes_the_client_identify_again(fake: FakeDiscord, now: bool):
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        first_session = fake.sessions[0]
        if now:
            fake.invalidate_session(now=True)
        else:
            fake.invalidate_session()
            await fake.drop_connection()
        # Whatever changes meanwhile is in the new GUILD_CREATE, from the fake's state.
        fake.member_add(GUILD_ID, member(DAVE, "dave"))
        fake.presence_update(GUILD_ID, DAVE, "online")

        await fake.wait_identified(2)
        await client.wait_event("ready", count=2)
        assert fake.counts["invalid_session"] == 1
        assert fake.frames(Op.INVALID_SESSION, direction="sent")[0].d is False
        paths = [c.path for c in fake.connections]
        # Without `now` it first tries a RESUME. Then discord.py identifies at the URL of its last
        # connection attempt, not at DEFAULT_GATEWAY: its connect loop keeps the resume URL it
        # used (only ws.gateway is reset), so the fake accepts IDENTIFY on either path.
        assert paths == (["/gateway", "/gateway"] if now else ["/gateway", "/resume-gateway", "/resume-gateway"])
        assert len(fake.frames(Op.IDENTIFY)) == 2 and len(fake.frames(Op.RESUME)) == (0 if now else 1)
        assert fake.sessions and fake.sessions[-1] != first_session
        dave = client.get_guild(int(GUILD_ID)).get_member(int(DAVE))
        assert dave is not None and dave.status == discord.Status.online


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord):
    client = Recorder()
    try:
        with pytest.raises(discord.LoginFailure):
            await asyncio.wait_for(client.start("not-the-token"), WAIT)
    finally:
        await client.close()
    assert [(r.path, r.status) for r in fake.requests][-1] == ("/api/v10/users/@me", 401)
    assert fake.live_connections == 0 and not fake.connections


async def test_token_refused_by_the_gateway_closes_4004(fake: FakeDiscord):
    add_home(fake)
    client = Recorder()
    try:
        await asyncio.wait_for(client.login(TOKEN), WAIT)
        fake.token = "reset-since"  # the token was reset between login and connect
        with pytest.raises(discord.ConnectionClosed) as caught:
            await asyncio.wait_for(client.connect(), WAIT)
        assert caught.value.code == 4004
    finally:
        await client.close()
    assert fake.connections[0].close_code == 4004 and fake.connections[0].closed_by == "fake"


async def test_privileged_intent_not_enabled_closes_4014(make_fake):
    fake = await make_fake(intents_enabled={"members", "message_content"})
    add_home(fake)
    client = Recorder()
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.start(TOKEN), WAIT)
    finally:
        await client.close()
    assert fake.connections[0].close_code == 4014
    # The application's flags tell which privileged intents are on.
    assert client.application_flags.gateway_guild_members and not client.application_flags.gateway_presence


async def test_plain_json_gateway_and_rest_errors(fake: FakeDiscord):
    """Without a compress parameter the gateway sends text frames; REST errors are JSON."""
    add_home(fake)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive(timeout=WAIT)
            assert hello.type == aiohttp.WSMsgType.TEXT and json.loads(hello.data)["op"] == Op.HELLO
            await ws.send_str(json.dumps({"op": Op.IDENTIFY, "d": {"token": TOKEN, "intents": 1 | 2, "properties": {}}}))
            ready = json.loads((await ws.receive(timeout=WAIT)).data)
            assert ready["t"] == "READY" and ready["s"] == 1
            assert ready["d"]["guilds"] == [{"id": GUILD_ID, "unavailable": True}]
            assert ready["d"]["resume_gateway_url"] == fake.resume_gateway_url
            created = json.loads((await ws.receive(timeout=WAIT)).data)
            # No presences intent: members (it is a small guild) but no presences.
            assert created["t"] == "GUILD_CREATE" and len(created["d"]["members"]) == 4
            assert created["d"]["presences"] == []
            await ws.close()

        headers = {"Authorization": f"Bot {TOKEN}"}
        async with http.get(fake.api_base + "/users/@me", headers={"Authorization": "Bot wrong"}) as r:
            assert (r.status, r.headers["Content-Type"]) == (401, "application/json")
            assert await r.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{fake.api_base}/guilds/{GUILD_ID}/members/{BOB}", headers=headers) as r:
            assert r.status == 200 and (await r.json())["nick"] == "Bobby"
        async with http.get(f"{fake.api_base}/guilds/{GUILD_ID}?with_counts=true", headers=headers) as r:
            body = await r.json()
            assert body["name"] == "Home" and body["approximate_member_count"] == 4
        async with http.get(f"{fake.api_base}/guilds/1", headers=headers) as r:
            assert (r.status, (await r.json())["code"]) == (404, 10004)
        async with http.get(f"{fake.api_base}/nowhere", headers=headers) as r:
            assert r.status == 404 and r.headers["Content-Type"] == "application/json"


async def test_a_resume_past_the_replay_buffer_is_refused(make_fake):
    fake = await make_fake(replay_limit=3)
    add_home(fake)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        with fake.hold_connections():
            await fake.drop_connection()
            for status in ("idle", "dnd", "online", "idle", "dnd"):  # more than the buffer holds
                fake.presence_update(GUILD_ID, CAROL, status)
        await fake.wait_identified(2)
        await client.wait_event("ready", count=2)
        assert len(fake.frames(Op.RESUME)) == 1 and fake.counts["invalid_session"] == 1
        assert client.get_guild(int(GUILD_ID)).get_member(int(CAROL)).status == discord.Status.dnd


async def test_protocol_errors_close_with_discords_codes(fake: FakeDiscord):
    async with aiohttp.ClientSession() as http:
        async def closed_with(*frames: str) -> Tuple[int, List[dict]]:
            got = []
            async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
                await ws.receive(timeout=WAIT)  # HELLO
                for frame in frames:
                    await ws.send_str(frame)
                while True:
                    msg = await ws.receive(timeout=WAIT)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return ws.close_code, got
                    got.append(json.loads(msg.data))

        assert (await closed_with("{not json"))[0] == 4002
        assert (await closed_with(json.dumps({"op": 8, "d": {"guild_id": GUILD_ID}})))[0] == 4003
        assert (await closed_with(json.dumps({"op": 2, "d": {"token": TOKEN}})))[0] == 4013  # no intents
        code, got = await closed_with(json.dumps({"op": 6, "d": {"token": TOKEN, "session_id": "gone", "seq": 1}}),
                                      json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 1}}),
                                      json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 1}}))
        assert got[0] == {"op": 9, "d": False, "s": None, "t": None} and got[1]["t"] == "READY"
        assert code == 4005  # identified twice on one connection


async def test_asking_for_all_members_again_within_30_s_is_rate_limited_without_chunks(make_fake):
    fake = await make_fake(member_request_interval=30.0)
    big = fake.add_large_guild(members=1500, roles=2, online_fraction=0.2, seed=3)
    async with contextlib.AsyncExitStack() as stack:
        client = await ready_client(stack)
        guild = client.get_guild(int(big.id))
        assert guild.chunked  # discord.py's own request at start-up was answered
        chunks_before = len([f for f in fake.sent if f.t == "GUILD_MEMBERS_CHUNK"])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(guild.chunk(), 1.0)  # discord.py waits for chunks that never come
        again = fake.frames(Op.REQUEST_GUILD_MEMBERS)[-1].d
        limited = (await fake.wait_op(Op.DISPATCH, t="RATE_LIMITED", direction="sent")).d
        assert limited["opcode"] == 8 and 0 < limited["retry_after"] <= 30.0
        assert limited["meta"] == {"guild_id": big.id, "nonce": again["nonce"]}
        assert len([f for f in fake.sent if f.t == "GUILD_MEMBERS_CHUNK"]) == chunks_before

