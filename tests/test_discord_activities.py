"""What members are doing: off by default; opted in, the built-in page's list (and its hovered
label) says "Playing …" from the presence's activities, for public servers only."""
from __future__ import annotations

import asyncio

import pytest

from .test_discord import ALICE, BOB, HOME, config, fake, quick_gateway, ready, until  # noqa: F401
from .test_page_browser import chromium, tab  # noqa: F401

discord = pytest.importorskip("discord", minversion="2.4")

CHESS = {"name": "Chess", "type": 0, "created_at": 1700000000000}
SONG = {"name": "Spotify", "type": 2, "created_at": 1700000000000}
CUSTOM = {"name": "Custom Status", "type": 4, "state": "my phone number is …", "created_at": 1700000000000}


async def doing(http, d) -> dict:
    async with http.get(f"http://127.0.0.1:{d.port}/activities/{HOME}.json") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        return await r.json()


async def test_activities_are_off_unless_asked_for(start_daemon, fake, http):
    fake.presence_update(HOME, ALICE, "online", activities=[CHESS])
    d = await start_daemon(config(fake))
    await ready(d)
    assert await doing(http, d) == {"off": True}


async def test_activities_follow_presences_and_custom_statuses_are_never_shown(start_daemon, fake, http):
    d = await start_daemon(config(fake, server="    activities: true"))
    await ready(d)
    assert await doing(http, d) == {"activities": {}}
    fake.presence_update(HOME, ALICE, "online", activities=[CUSTOM, CHESS])
    fake.presence_update(HOME, BOB, "idle", activities=[CUSTOM])
    await d.discord.wait_until(lambda: d.discord.activities(HOME) == {ALICE: "Playing Chess"})
    assert await doing(http, d) == {"activities": {ALICE: "Playing Chess"}}
    fake.presence_update(HOME, ALICE, "dnd", activities=[SONG])
    await d.discord.wait_until(lambda: d.discord.activities(HOME) == {ALICE: "Listening to Spotify"})
    await until(d, lambda: next(u for u in d.users("home") if u["uid"] == ALICE)["status"] == "dnd")


async def test_a_private_server_shows_no_activities(start_daemon, fake, http):
    d = await start_daemon(config(fake, server="    activities: true\n    passworded: true\n    password: hunter2"))
    await ready(d)
    assert await doing(http, d) == {"off": True}


async def test_the_page_lists_what_members_are_doing(start_daemon, fake, tab):
    from playwright.async_api import expect

    from .test_page_browser import WAIT, base, wait_live

    fake.presence_update(HOME, ALICE, "online", activities=[CHESS])
    d = await start_daemon(config(fake, server="    activities: true"))
    await ready(d)
    await d.discord.wait_until(lambda: d.discord.activities(HOME) == {ALICE: "Playing Chess"})
    await tab.open(base(d), "?s=home")
    page = tab.page
    await wait_live(page, "home")
    row = page.locator(f'#people li[data-uid="{ALICE}"] .activity')
    await expect(row).to_have_text("Playing Chess", timeout=WAIT)
    await expect(page.locator(f'#people li[data-uid="{BOB}"] .activity')).to_have_text("")


@pytest.mark.parametrize("mode, alice, bob", [
    ("content", "Playing Chess · “my phone number is …”", "“my phone number is …”"),
    ("redact", "Playing Chess · …", "…"),
    ("off", "Playing Chess", None),
])
async def test_custom_statuses_are_filtered_as_messages_are(start_daemon, fake, http, mode, alice, bob):
    d = await start_daemon(config(fake, server=f"    activities: true\n    custom_statuses: {mode}"))
    await ready(d)
    fake.presence_update(HOME, ALICE, "online", activities=[CUSTOM, CHESS])
    fake.presence_update(HOME, BOB, "idle", activities=[CUSTOM])
    wanted = {ALICE: alice, **({BOB: bob} if bob else {})}
    await asyncio.wait_for(d.discord.wait_until(lambda: d.discord.activities(HOME) == wanted), 10)
    assert await doing(http, d) == {"activities": wanted}
    fake.presence_update(HOME, BOB, "idle", activities=[])  # the status cleared: nothing left to show
    await asyncio.wait_for(d.discord.wait_until(lambda: BOB not in d.discord.activities(HOME)), 10)
