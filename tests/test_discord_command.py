"""The slash command: registered per guild in the fake Discord over REST, used through an
INTERACTION_CREATE, answered with the link to the server's page, the counts and the login hint."""
from __future__ import annotations

import pytest

from dbackd.config import ConfigError

from .fakes.discord import FakeDiscord
from .test_discord import ALICE, HOME, TOKEN, config, fake, quick_gateway, ready  # noqa: F401

discord = pytest.importorskip("discord", minversion="2.4")

PAGE = "https://dzone.example.com/world"
TOP = f"""  public_url: {PAGE}/
  command: {{description: "Where is everyone?"}}"""


async def ask(fake: FakeDiscord, name: str = "dzone") -> dict:
    seen = len(fake.interaction_replies)
    interaction = fake.interaction_create(HOME, ALICE, name)
    await fake.wait_until(lambda: len(fake.interaction_replies) > seen, what="the interaction's answer")
    reply = fake.interaction_replies[-1]
    assert reply["id"] == interaction["id"]
    return reply


async def test_the_command_is_registered_in_the_guild_and_answers_with_the_servers_page(start_daemon, fake):
    d = await start_daemon(config(fake, server="    slash_command: true", top=TOP))
    await ready(d)
    await fake.wait_until(lambda: "dzone" in fake.commands.get(HOME, {}), what="the command registered")
    assert fake.commands[HOME]["dzone"]["description"] == "Where is everyone?"
    assert list(fake.commands) == [HOME]  # only where a server asks for it
    reply = await ask(fake)
    assert reply["type"] == 4  # CHANNEL_MESSAGE_WITH_SOURCE
    assert reply["data"]["flags"] & 64  # EPHEMERAL: only who asked sees it
    # alice online, bob idle, carol offline; the bot is not shown
    assert reply["data"]["content"] == f"**Home** lives at {PAGE}/?s=home: 3 members shown, 2 online."


async def test_a_private_server_says_how_to_log_in(start_daemon, fake):
    d = await start_daemon(config(fake, server="    slash_command: true\n    passworded: true\n    password: hunter2",
                                  top=TOP + '\n  slash_command: false'))
    await ready(d)
    await fake.wait_until(lambda: "dzone" in fake.commands.get(HOME, {}), what="the command registered")
    reply = await ask(fake)
    assert reply["data"]["content"] == (f"**Home** lives at {PAGE}/?s=home: 3 members shown, 2 online. It is private: "
                                        "open the link and log in with Discord (the page asks).")


async def test_a_reload_registers_rewords_and_removes_the_command_on_the_same_connection(
        fake, tmp_path, monkeypatch):
    from dbackd.daemon import Daemon

    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    path = tmp_path / "dback.yaml"
    body = (f"discord: {{bot_token: \"${{DISCORD_BOT_TOKEN}}\", api_base: \"{fake.api_base}\", "
            f"public_url: \"{PAGE}\", command: {{description: \"WORDS\"}}}}\n"
            f"servers:\n  - {{snowflake: \"{HOME}\", id: home, source: discord, default: true, slash_command: ON}}\n")
    path.write_text(body.replace("WORDS", "Find us").replace("ON", "false"))
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        await ready(d)
        connections = len(fake.connections)
        path.write_text(body.replace("WORDS", "Find us").replace("ON", "true"))
        assert await d.reload()
        await fake.wait_until(lambda: "dzone" in fake.commands.get(HOME, {}), what="the command registered")
        assert fake.counts["commands_registered"] == 1  # not before: the server had not opted in
        path.write_text(body.replace("WORDS", "Who is here?").replace("ON", "true"))
        assert await d.reload()
        await fake.wait_until(lambda: fake.commands[HOME]["dzone"]["description"] == "Who is here?",
                              what="the command reworded")
        assert (await ask(fake))["data"]["content"].startswith(f"**Home** lives at {PAGE}/?s=home: ")
        path.write_text(body.replace("WORDS", "Who is here?").replace("ON", "false"))
        assert await d.reload()
        await fake.wait_until(lambda: fake.commands[HOME] == {}, what="the command removed")
        assert len(fake.connections) == connections  # the same gateway connection throughout
    finally:
        await d.stop()


def test_the_command_needs_the_page_address_and_a_reply_that_fills_in(fake):
    with pytest.raises(ConfigError) as info:
        config(fake, server="    slash_command: true")
    assert "discord.public_url" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config(fake, server="    slash_command: true", top=TOP.replace("command: {", "command: {reply: '{who}', "))
    assert "only {name}, {url}" in str(info.value)


async def test_the_fake_keeps_discords_rules_for_commands_and_interaction_responses(fake, http):
    commands = f"{fake.api_base}/applications/{fake.application_id}/guilds/{HOME}/commands"
    bot = {"Authorization": f"Bot {TOKEN}"}
    async with http.put(commands, json=[{"name": "Dzone", "description": "x"}], headers=bot) as r:
        assert r.status == 400 and (await r.json())["code"] == 50035  # names are lowercase
    async with http.put(commands, json=[{"name": "dzone", "description": ""}], headers=bot) as r:
        assert r.status == 400  # a chat command's description is 1-100 characters
    async with http.put(commands.replace(fake.application_id, "1"), json=[], headers=bot) as r:
        assert r.status == 403 and (await r.json())["code"] == 50001
    async with http.put(commands, json=[{"name": "dzone", "description": "Find it"}]) as r:
        assert r.status == 401  # registration takes the bot token
    async with http.put(commands, json=[{"name": "dzone", "description": "Find it"}], headers=bot) as r:
        assert r.status == 200 and [c["name"] for c in await r.json()] == ["dzone"]
    async with http.post(commands, json={"name": "dzone", "description": "Find it again"}, headers=bot) as r:
        assert r.status == 200  # the same name overwrites (201 only for a new one)
    interaction = fake.interaction_create(HOME, ALICE, "dzone")
    callback = f"{fake.api_base}/interactions/{interaction['id']}/{{}}/callback"
    reply = {"type": 4, "data": {"content": "hi", "flags": 64}}
    async with http.post(callback.format("not-the-token"), json=reply) as r:
        assert r.status == 404 and (await r.json())["code"] == 10062
    async with http.post(callback.format(interaction["token"]), json=reply) as r:
        assert r.status == 204  # no bot token: the interaction's token is the credential
    async with http.post(callback.format(interaction["token"]), json=reply) as r:
        assert r.status == 400 and (await r.json())["code"] == 40060  # answered once only
    fake.interaction_deadline = 0.0  # past Discord's 3 s, the first response is refused
    late = fake.interaction_create(HOME, ALICE, "dzone")
    async with http.post(f"{fake.api_base}/interactions/{late['id']}/{late['token']}/callback", json=reply) as r:
        assert r.status == 404 and (await r.json())["code"] == 10062
    assert [r["data"]["content"] for r in fake.interaction_replies] == ["hi"]


def test_dbackd_check_says_which_servers_answer_the_command_and_show_activities(fake):
    from dbackd.config.summary import summary

    text = summary(config(fake, server="    slash_command: true\n    activities: true", top=TOP))
    line = next(line for line in text.splitlines() if "home" in line)
    assert "answers the slash command" in line and "activities shown" in line, text
    assert "answers the slash command" not in summary(config(fake, top=TOP))
