"""Discord's rules for big guilds, against the fake that follows them (scaled down to stay quick)."""
from __future__ import annotations

import pytest

from .fakes.discord import FakeDiscord
from .test_discord import TOKEN, config, health_until, quick_gateway, until, users  # noqa: F401

discord = pytest.importorskip("discord", minversion="2.4")

HUGE = "555555555555555501"


@pytest.fixture
async def huge():
    # Past the 75k rule (lowered to 1,000 here): GUILD_CREATE carries the bot alone, members and presences.
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, huge_threshold=1_000) as f:
        f.add_large_guild(id=HUGE, members=1_500, online_fraction=0.2, roles=3, channels=1)
        yield f



def _config(fake: FakeDiscord, server: str = ""):
    return config(fake, server, guild=HUGE, server_id="big")


async def test_a_guild_past_the_75k_rule_shows_who_is_online(huge, start_daemon):
    guild = huge.guild(HUGE)
    online = {uid for uid in guild.presences if uid in guild.members}
    assert 200 < len(online) < 400  # the fake made a fifth of them online
    d = await start_daemon(_config(huge))
    await until(d, lambda: len(users(d, "big")) == 1_500)
    shown = users(d, "big")
    assert {uid for uid, u in shown.items() if u["status"] != "offline"} == online


async def test_hide_offline_past_the_75k_rule_keeps_the_online(huge, start_daemon):
    guild = huge.guild(HUGE)
    online = {uid for uid in guild.presences if uid in guild.members}
    d = await start_daemon(_config(huge, "    hide_offline: true\n"))
    await until(d, lambda: set(users(d, "big")) == online)


async def test_max_actors_past_the_75k_rule_picks_the_online(huge, start_daemon):
    guild = huge.guild(HUGE)
    online = {uid for uid in guild.presences if uid in guild.members}
    d = await start_daemon(_config(huge, "    max_actors: 100\n"))
    await until(d, lambda: len(users(d, "big")) == 100 and set(users(d, "big")) <= online)


async def test_a_guild_that_arrives_after_ready_is_loading_not_missing(start_daemon, http, capsys):
    from .test_discord import HOME, add_home, health_until

    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0) as fake:
        add_home(fake)
        fake.guild_delete(HOME, unavailable=True)  # READY will list it; its GUILD_CREATE waits
        d = await start_daemon(config(fake))
        health = await health_until(d, lambda h: h["state"] == "ready")
        assert health["servers"]["home"]["state"] == "loading"
        async with http.get(f"http://127.0.0.1:{d.port}/metrics") as answer:
            assert 'dbackd_discord_guild_state{server="home",state="loading"} 1.0' in await answer.text()
        fake.guild_available(HOME)
        await until(d, lambda: len(users(d, "home")) == 3)
        health = await health_until(d, lambda h: h["servers"]["home"]["state"] == "ready")
    assert "discord.guild_missing" not in capsys.readouterr().out


async def test_the_shards_gateway_bot_recommends_are_used(start_daemon):
    from .test_discord import HOME, add_home, health_until

    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, recommended_shards=2) as fake:
        add_home(fake)
        d = await start_daemon(config(fake))
        await health_until(d, lambda h: h["state"] == "ready")
        await until(d, lambda: len(users(d, "home")) == 3)
        identified = [f.d["shard"] for f in fake.received if f.op == 2]
        assert sorted(identified) == [[0, 2], [1, 2]]


async def test_sharding_required_is_said_plainly_and_the_next_connection_shards(start_daemon):
    from .test_discord import HOME, add_home, health_until

    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, guilds_per_shard=1) as fake:
        add_home(fake)
        fake.add_guild(id="555555555559749805", name="Other")  # in the other shard of two
        d = await start_daemon(config(fake))
        health = await health_until(d, lambda h: "4011" in (h["error"] or ""))
        assert "sharding required" in health["error"]
        fake.recommended_shards = 2  # as Discord's /gateway/bot does once the guilds grew
        await health_until(d, lambda h: h["state"] == "ready")
        await until(d, lambda: len(users(d, "home")) == 3)


async def test_a_spent_identify_budget_is_never_used_up(start_daemon):
    from .test_discord import add_home, health_until

    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, session_starts_left=2) as fake:
        add_home(fake)
        d = await start_daemon(config(fake))
        health = await health_until(d, lambda h: "identify budget" in (h["error"] or ""))
        assert "2 of 1000 session starts left" in health["error"] and health["state"] != "ready"
        assert fake.session_starts_left == 2 and not [f for f in fake.received if f.op == 2]


async def test_an_outage_and_a_kick_are_problems_in_healthz(start_daemon):
    from .test_discord import HOME, add_home, health_until

    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0) as fake:
        add_home(fake)
        d = await start_daemon(config(fake))
        await until(d, lambda: len(users(d, "home")) == 3)
        assert d.health()["discord"]["problems"] == []
        fake.guild_delete(HOME, unavailable=True)
        health = await health_until(d, lambda h: h["servers"]["home"]["state"] == "unavailable")
        assert health["problems"] == ["home: the guild is unavailable on Discord's side (an outage)"]
        assert len(users(d, "home")) == 3  # an outage changes nobody
        fake.guild_available(HOME)
        await health_until(d, lambda h: h["servers"]["home"]["state"] == "ready" and not h["problems"])
        fake.guild_delete(HOME)  # the bot was removed
        health = await health_until(d, lambda h: h["servers"]["home"]["state"] == "missing")
        assert health["problems"] == ["home: the bot is not in this guild"]


@pytest.mark.parametrize("concurrency", [4, 2])
async def test_shards_identify_as_many_at_once_as_max_concurrency_allows(start_daemon, monkeypatch, concurrency):
    from .test_discord import HOME, add_home, health_until
    from dbackd.sources.discord import gateway

    window = 3.0  # Discord's 5 s between two IDENTIFYs of one bucket, scaled down
    monkeypatch.setattr(gateway, "IDENTIFY_DELAY", window)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, recommended_shards=4, max_concurrency=concurrency,
                           identify_window=window - 0.3) as fake:  # the margin: two processes' clocks and queues
        add_home(fake)
        d = await start_daemon(config(fake))
        await health_until(d, lambda h: h["state"] == "ready", timeout=30)
        await until(d, lambda: len(users(d, "home")) == 3)
        assert sorted(shard for shard, _ in fake.identifies) == [0, 1, 2, 3]
        assert fake.counts["identify_too_soon"] == 0  # never two of one bucket within the window
        # The shards of one round (`concurrency` of them, one per bucket) identify without waiting
        # for each other: one window per round, not one per shard.
        first = min(at for _, at in fake.identifies)
        for shard, at in fake.identifies:
            assert shard // concurrency * window - 0.3 <= at - first < (shard // concurrency + 1) * window - 0.2


async def test_auto_servers_over_many_large_guilds_stay_within_the_command_rate(start_daemon, monkeypatch):
    from dbackd.sources.discord import chunks

    from .test_discord import add_home

    # Discord's 120 commands per 60 s on a connection, scaled to 24 per 2 s; the worker's pace
    # scaled alike (100 member requests a minute: one every 0.6 s, here 0.1 s).
    monkeypatch.setattr(chunks, "REQUEST_INTERVAL", 0.1)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0, gateway_rate_limit=(24, 2.0)) as fake:
        ids = [fake.add_large_guild(name=f"Guild {i}", members=300, online_fraction=0.2, roles=1, channels=1,
                                    seed=i).id for i in range(60)]
        add_home(fake)
        d = await start_daemon(config(fake, top="  auto_servers: true"))

        def shown() -> int:
            count = 0
            for gid in ids:
                server = d.world.servers.get(gid)
                count += server is not None and len(server.users) == 300
            return count

        await until(d, lambda: shown() == len(ids), timeout=60)
        assert not [c for c in fake.connections if c.close_code == 4008]


async def test_without_max_actors_a_big_guild_shows_what_a_browser_can_draw_online_first(start_daemon):
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0) as fake:
        guild = fake.add_large_guild(id=HUGE, members=2_500, online_fraction=0.2, roles=2, channels=1)
        d = await start_daemon(_config(fake))
        await health_until(d, lambda h: h["servers"]["big"]["state"] == "ready")
        await until(d, lambda: len(users(d, "big")) == 2_000)
        online = {uid for uid in guild.presences if uid in guild.members}
        assert online <= set(users(d, "big"))
        assert d.health()["discord"]["servers"]["big"]["members"] == 2_501  # the bot too: all are known, 2,000 shown


async def test_a_deleted_role_recolours_a_big_guild_in_records_of_bounded_size(start_daemon, monkeypatch):
    from dbackd.sources.discord import process

    # The pipe from the worker takes lines up to LINE_LIMIT (64 MB; here 250 kB, which a snapshot part
    # of 1,000 members stays well under): one line for all of a guild's members would kill the worker.
    monkeypatch.setattr(process, "LINE_LIMIT", 250_000)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=5.0) as fake:
        guild = fake.add_large_guild(id=HUGE, members=4_000, online_fraction=0.2, roles=1, roles_per_member=1,
                                     channels=1)
        (role_id,) = list(r for r in guild.roles if r != HUGE)
        holders = {uid for uid, m in guild.members.items() if role_id in m.roles}
        assert len(holders) > 1_000
        d = await start_daemon(_config(fake, "    max_actors: 100000\n"))
        await health_until(d, lambda h: h["servers"]["big"]["state"] == "ready")
        await until(d, lambda: len(users(d, "big")) == 4_000)
        coloured = next(iter(holders))
        assert users(d, "big")[coloured]["roleColor"] != "#99aab5"
        fake.role_delete(HUGE, role_id)
        await until(d, lambda: all(users(d, "big")[uid]["roleColor"] == "#99aab5" for uid in holders))
        assert d.health()["discord"]["reconnects"] == 0  # the worker never ended
