"""Every live source has one shape, and the daemon treats them alike: lifecycle, /healthz, metrics."""
from __future__ import annotations

from dbackd.sources.base import Source

PLAIN = """
listen: {host: 127.0.0.1, port: 0}
servers:
  - {snowflake: "1", id: home, name: Home, default: true, users: [{uid: "11", username: alice}]}
"""


async def test_each_source_has_the_one_shape_and_its_own_name(start_daemon):
    d = await start_daemon(text=PLAIN)
    names = [source.name for source in d.sources]
    assert len(names) == len(set(names)) >= 2
    for source in d.sources:
        assert isinstance(source, Source)
        assert d.source(source.name) is source
    assert d.source("simulation") is d.simulation and d.source("discord") is d.discord


async def test_a_source_the_config_does_not_use_has_no_entry_in_healthz(start_daemon, http):
    d = await start_daemon(text=PLAIN)
    async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
        health = await r.json()
    assert health["status"] == "ok"
    assert not set(health) & {source.name for source in d.sources}


async def test_every_source_is_read_at_scrape_time(start_daemon, http):
    d = await start_daemon(text=PLAIN)
    async with http.get(f"http://127.0.0.1:{d.port}/metrics") as r:
        text = await r.text()
    assert "dbackd_discord_connected 0.0" in text  # the Discord source's own family, though it is off
