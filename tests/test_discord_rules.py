"""The Discord source's own rules, without a gateway: mapping, filters, max_actors, and where discord.py is pointed."""
from __future__ import annotations

import pytest
from aiohttp import web

from dbackd.sources.discord.settings import DiscordOptions
from dbackd.sources.discord import endpoints
from dbackd.sources.discord.mapping import REDACTED, channel_allowed, color_of, eligible, message_text, status_of
from dbackd.sources.discord.records import MemberRec, MessageRec
from dbackd.sources.discord.source import short_id
from dbackd.sources.discord.view import View


def m(uid: str, status: str = "online", *, roles=(), names=(), bot: bool = False, name: str = "") -> MemberRec:
    return MemberRec(uid, name or f"user{uid}", "#99aab5", status, tuple(roles), tuple(names), bot)


def msg(text: str, channel: str = "1", name: str = "general", parent=None, parent_name=None) -> MessageRec:
    return MessageRec("g", channel, name, parent, parent_name, "7", text)


def test_statuses_and_colours():
    assert [status_of(s) for s in ("online", "idle", "dnd", "offline", "invisible", "what")] == \
        ["online", "idle", "dnd", "offline", "offline", "offline"]
    assert color_of(0) == "#99aab5" and color_of(0x3498DB) == "#3498db" and color_of(0xFF) == "#0000ff"


def test_who_is_eligible():
    o = DiscordOptions()
    assert eligible(m("1"), o) and not eligible(m("2", bot=True), o)
    assert eligible(m("2", bot=True), DiscordOptions(include_bots=True))
    assert not eligible(m("1"), DiscordOptions(ignore_users=("1",)))
    assert not eligible(m("1", "offline"), DiscordOptions(hide_offline=True))
    by_name = DiscordOptions(include_roles=("Mods",))
    assert eligible(m("1", names=("Mods",)), by_name) and not eligible(m("1"), by_name)
    assert eligible(m("1", roles=("55",)), DiscordOptions(include_roles=("55",)))
    assert not eligible(m("1", roles=("55",), names=("Muted",)), DiscordOptions(exclude_roles=("Muted",)))


def test_channels_by_id_name_and_a_threads_parent():
    assert channel_allowed(msg("hi"), DiscordOptions())
    assert not channel_allowed(msg("hi"), DiscordOptions(ignore_channels=("general",)))
    assert not channel_allowed(msg("hi", "9", "a-thread", "1", "general"), DiscordOptions(ignore_channels=("1",)))
    # A channel, or a thread's parent, that discord.py has not cached has no name: with channels
    # ignored by name, it might be one of them, so it is left out (fail closed).
    ignoring = DiscordOptions(ignore_channels=("mod-chat",))
    assert not channel_allowed(msg("hi", "9", "", None, None), ignoring)
    assert not channel_allowed(msg("hi", "9", "a-thread", "5", None), ignoring)
    assert channel_allowed(msg("hi", "9", "a-thread", "5", "general"), ignoring)
    assert channel_allowed(msg("hi", "9", "", None, None), DiscordOptions())  # nothing ignored: nothing to fear
    listen = DiscordOptions(listen_channels=("announcements",))
    assert not channel_allowed(msg("hi"), listen) and channel_allowed(msg("hi", "2", "announcements"), listen)


def test_message_text_by_mode():
    secret = msg("the launch code is 1234")
    assert message_text(secret, DiscordOptions(messages="redact")) == REDACTED
    assert "1234" not in REDACTED
    assert message_text(secret, DiscordOptions(messages="off")) is None
    assert message_text(secret, DiscordOptions(messages="content")) == "the launch code is 1234"
    cut = message_text(secret, DiscordOptions(messages="content", message_max_length=8))
    assert cut is not None and len(cut) <= 8 and cut.endswith("…")
    assert message_text(msg("   "), DiscordOptions(messages="content")) is None  # an attachment only


def test_a_view_fills_its_places_active_first():
    v = View(DiscordOptions(max_actors=2))
    changes = v.rebuild([m("1", "offline"), m("2"), m("3"), m("4", "offline")])
    assert {uid for uid, _, new in changes if new} == {"2", "3"} and set(v.shown) == {"2", "3"}
    # An active member going offline keeps the place only while no active member waits.
    assert v.update("2", m("2", "offline")) == [("2", m("2"), m("2", "offline"))]
    # A member leaving frees a place for the one waiting longest (4: 1 lost its place to 3 later).
    changes = v.update("3", None)
    assert ("3", m("3"), None) in changes and ("4", None, m("4", "offline")) in changes and set(v.shown) == {"2", "4"}
    # An active member arriving swaps out the offline one shown longest.
    changes = v.update("5", m("5"))
    assert set(v.shown) == {"5", "4"} and ("2", m("2", "offline"), None) in changes


def test_a_view_without_a_cap_shows_every_eligible_member():
    v = View(DiscordOptions(hide_offline=True))
    v.rebuild([m("1"), m("2", "offline")])
    assert set(v.shown) == {"1"}
    assert v.update("2", m("2")) == [("2", None, m("2"))]
    assert v.update("1", m("1", "offline")) == [("1", m("1"), None)]


def test_new_options_filter_again():
    v = View(DiscordOptions())
    members = [m("1"), m("2", bot=True)]
    v.rebuild(members)
    v.options = DiscordOptions(include_bots=True)
    assert v.rebuild(members) == [("2", None, m("2", bot=True))]


def test_short_ids_for_auto_servers():
    taken = {"home"}
    assert short_id("Home", taken) == "home-2"
    assert short_id("Café & Friends!", set()) == "caf-friends"
    assert short_id("!!!", set()) == "guild" and short_id("default", set()) == "default-2"


async def test_the_gateway_address_is_asked_and_discord_py_pointed_at_it(aiohttp_server):
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    seen = []

    async def gateway_bot(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bot right":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response({"url": "ws://127.0.0.1:9/gateway", "shards": 1})

    app = web.Application()
    app.router.add_get("/api/v10/gateway/bot", gateway_bot)
    server = await aiohttp_server(app)
    base = str(server.make_url("/api/v10"))
    assert await endpoints.gateway_url(base, "right", 5) == "ws://127.0.0.1:9/gateway"
    with pytest.raises(endpoints.GatewayLookupFailed) as refused:
        await endpoints.gateway_url(base, "wrong", 5)
    assert refused.value.status == 401 and "wrong" not in str(refused.value)
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    try:
        endpoints.point_at(base, "ws://127.0.0.1:9/gateway")
        assert Route.BASE == base and str(DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
    assert seen == ["Bot right", "Bot wrong"]


def test_a_worker_that_keeps_ending_is_restarted_less_and_less_often():
    from dbackd.sources.discord import gateway, process

    delay, waits = gateway.BACKOFF_FIRST, []
    for _ in range(10):  # each run ends two seconds after its start, records sent or not
        wait, delay = process.next_restart(delay, ran_for=2.0)
        waits.append(wait)
    assert all(b > a for a, b in zip(waits[:5], waits[1:6]))  # doubling, jitter of ±20 % aside
    assert gateway.BACKOFF_MAX * 0.8 <= waits[-1] <= gateway.BACKOFF_MAX * 1.2
    wait, _ = process.next_restart(delay, ran_for=process.STEADY_RUN)  # a steady run: quick again
    assert wait <= gateway.BACKOFF_FIRST * 1.2
