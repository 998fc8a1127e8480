"""A big guild's members come in chunks that may be slow, cut short or refused: only a complete chunking is the whole guild."""
from __future__ import annotations

import pytest

from .fakes.discord import FakeDiscord
from .test_discord import TOKEN, config, health_until, quick_gateway, until, users  # noqa: F401

discord = pytest.importorskip("discord", minversion="2.4")

BIG = "555555555555555601"


def _config(fake: FakeDiscord, server: str = ""):
    return config(fake, server, guild=BIG, server_id="big")


def _smallest(d, server: str) -> list[int]:
    """The fewest users the server had at any moment from now on (one list item, kept current)."""
    lowest = [len(users(d, server))]

    def on_event(_event) -> None:
        lowest[0] = min(lowest[0], len(users(d, server)))

    d.world.subscribe(on_event)
    return lowest


async def test_chunks_slower_than_discord_py_waits_still_load_the_whole_guild(start_daemon):
    # Three chunks 2.5 s apart: discord.py gives up on a 3,000-member guild after max(5, 3000/10000) s.
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, chunk_delay=2.5) as fake:
        guild = fake.add_large_guild(id=BIG, members=3_000, online_fraction=0.2, roles=2, channels=1)
        d = await start_daemon(_config(fake, "    max_actors: 100000\n"))
        health = await health_until(d, lambda h: h["state"] == "ready" and len(users(d, "big")) > 0)
        assert health["servers"]["big"]["state"] == "loading"  # the online members came first, the rest are on the way
        await until(d, lambda: len(users(d, "big")) == 3_000, timeout=30)
        await health_until(d, lambda h: h["servers"]["big"]["state"] == "ready")
        online = {uid for uid in guild.presences if uid in guild.members}
        assert {uid for uid, u in users(d, "big").items() if u["status"] != "offline"} == online


async def test_a_rate_limited_request_after_an_invalid_session_deletes_nobody_and_leaves_no_ghost(start_daemon,
                                                                                                 monkeypatch):
    from dbackd.sources.discord import chunks

    monkeypatch.setattr(chunks, "STALL", 120.0)  # only RATE_LIMITED's retry_after can bring the guild back in time
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, member_request_interval=3.0) as fake:
        guild = fake.add_large_guild(id=BIG, members=2_000, online_fraction=0.2, roles=2, channels=1)
        d = await start_daemon(_config(fake))
        await until(d, lambda: len(users(d, "big")) == 2_000)
        await health_until(d, lambda h: h["servers"]["big"]["state"] == "ready")
        lowest = _smallest(d, "big")
        gone = next(uid for uid in guild.members if uid not in guild.presences)
        fake.invalidate_session(now=True, resumable=False)
        await fake.wait_identified(2)
        fake.member_remove(BIG, gone)  # only the new session hears of it (in the guild it sends)
        # The new session asks for the members again within Discord's 30 s (3 s here) and is told to wait.
        await fake.wait_until(lambda: fake.counts["rate_limited"] >= 1, timeout=10)
        assert d.health()["discord"]["servers"]["big"]["state"] == "loading"
        await until(d, lambda: gone not in users(d, "big"), timeout=20)
        await health_until(d, lambda h: h["servers"]["big"]["state"] == "ready")
        assert len(users(d, "big")) == 1_999 and lowest[0] >= 1_999
        assert fake.counts["rate_limited"] == 1  # asked again only once retry_after had passed


async def test_a_member_absent_from_a_complete_new_snapshot_is_removed(start_daemon):
    # The bot misses a GUILD_MEMBER_REMOVE while its session is gone: the new complete chunking says so.
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, member_request_interval=0.0) as fake:
        guild = fake.add_large_guild(id=BIG, members=1_500, online_fraction=0.2, roles=2, channels=1)
        d = await start_daemon(_config(fake))
        await until(d, lambda: len(users(d, "big")) == 1_500)
        lowest = _smallest(d, "big")
        gone = [uid for uid in guild.members if uid not in guild.presences][:3]
        fake.invalidate_session()  # the next RESUME is refused
        await fake.drop_connection()
        for uid in gone:
            guild.members.pop(uid)  # while no session is there to hear it
        await fake.wait_identified(2)
        await until(d, lambda: not set(gone) & set(users(d, "big")), timeout=20)
        assert len(users(d, "big")) == 1_497 and lowest[0] >= 1_497
