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


def test_a_sources_options_are_read_by_its_own_package():
    import dataclasses

    from dbackd.config import Config, Server, load_data
    from dbackd.sources.discord.settings import Discord, DiscordOptions, options_of, settings_of

    config = load_data({"discord": {"bot_token": "x" * 40, "messages": "off"},
                        "servers": [{"snowflake": "100000000000000001", "id": "live", "source": "discord",
                                     "max_actors": 5},
                                    {"snowflake": "2", "id": "plain", "name": "Plain"}]})
    assert isinstance(settings_of(config), Discord) and settings_of(config).defaults.messages == "off"
    live, plain = config.servers
    assert options_of(live) == DiscordOptions(messages="off", max_actors=5)
    assert options_of(plain) is None and plain.options is None
    core_fields = {f.name for f in dataclasses.fields(Server)} | {f.name for f in dataclasses.fields(Config)}
    assert "discord" not in core_fields


def test_a_shared_layer_comes_back_with_its_sources_defaults():
    from dbackd.cluster import codec
    from dbackd.config import Server, load_data
    from dbackd.core.layers import Layer
    from dbackd.sources.discord.settings import options_of, settings_of

    config = load_data({"discord": {"bot_token": "x" * 40, "hide_offline": True, "auto_servers": True},
                        "servers": [{"snowflake": "2", "id": "plain", "name": "Plain"}]})
    found = Server("9", "nine", "Nine", source="discord", options=settings_of(config).defaults)
    named = Server("2", "plain", "Guild Name")
    back = codec.layer_from(codec.layer_text(Layer(servers={"9": (found, frozenset()),
                                                             "2": (named, frozenset({"name"}))})), config)
    assert back is not None
    assert back.servers["9"] == (found, frozenset()) and options_of(back.servers["9"][0]).hide_offline is True
    assert back.servers["2"] == (named, frozenset({"name"}))
