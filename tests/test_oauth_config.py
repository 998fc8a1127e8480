"""The oauth and access config: secrets only from the environment, per-server settings, notes, clientId."""
from __future__ import annotations

import pytest

from dbackd.cli import main
from dbackd.config import ConfigError, OAuth, load_data, load_file

from .conftest import EXAMPLE, ROOT
from .test_config import load, problems

SERVERS = """
servers:
  - {snowflake: "1", id: pub, name: Public, default: true}
  - snowflake: "2"
    id: priv
    name: Private
    passworded: true
    access: {users: ["80351110224678912"]}
"""


@pytest.mark.parametrize("key", ["client_secret", "bot_token"])
def test_a_secret_written_in_the_file_is_refused(key):
    found = problems(f"oauth:\n  {key}: abc123\n" + SERVERS)
    var = {"client_secret": "DISCORD_CLIENT_SECRET", "bot_token": "DISCORD_BOT_TOKEN"}[key]
    assert found == [f"t.yaml:2:{len(key) + 5}: oauth.{key}: a secret must not be written in the file: "
                     f"write `{key}: ${{{var}}}` and set {var} in the environment"]
    assert "abc123" not in found[0]


def test_a_secret_in_a_server_block_is_refused_too():
    text = SERVERS + "    oauth: {bot_token: literal-token}\n"
    assert any(p.startswith("t.yaml:9:24: servers[1].oauth.bot_token: a secret must not be written")
               for p in problems(text))


def test_secrets_from_the_environment_are_taken():
    text = "oauth:\n  client_secret: ${SECRET}\n  bot_token: ${BOT}\n" + SERVERS
    config = load(text, {"SECRET": "s3cret", "BOT": "b0t"})
    oauth = config.servers[1].oauth
    assert (oauth.client_secret, oauth.bot_token) == ("s3cret", "b0t")
    assert "s3cret" not in repr(config) and "b0t" not in repr(config)


def test_a_secret_from_a_default_written_in_the_file_is_refused():
    found = problems("oauth:\n  bot_token: ${BOT:-fallback-token}\n" + SERVERS)
    assert found == ["t.yaml:2:14: oauth.bot_token: the secret came from the default after `:-`, which is "
                     "written in the file: drop the default and set the variable"]
    assert load("oauth:\n  bot_token: ${BOT:-fallback-token}\n" + SERVERS, {"BOT": "real"}).servers[1].oauth.bot_token == "real"


def test_config_given_as_python_data_may_carry_secrets():
    config = load_data({"oauth": {"bot_token": "b0t", "client_secret": "s"},
                        "servers": [{"snowflake": "2", "id": "g", "name": "G", "passworded": True,
                                     "access": {"guild_members": True}}]})
    assert config.servers[0].oauth.bot_token == "b0t" and config.servers[0].access.guild_members


def test_defaults_and_per_server_settings():
    text = """
oauth: {client_id: "506432803173433344", timeout: 2s}
servers:
  - {snowflake: "1", id: a, name: A}
  - {snowflake: "2", id: b, name: B, oauth: {client_id: "506432803173433345", api_base: "http://127.0.0.1:9/api/"}}
  - snowflake: "3"
    id: c
    name: C
    oauth: {provider: mock, tokens: {t1: {id: "5", username: five}}}
"""
    a, b, c = load(text).servers
    assert a.oauth == OAuth(client_id="506432803173433344", timeout=2.0)
    assert (a.oauth.provider, a.oauth.api_base, a.oauth.cache_ttl) == ("discord", "https://discord.com/api/v10", 300.0)
    assert b.oauth.client_id == "506432803173433345" and b.oauth.timeout == 2.0
    assert b.oauth.api_base == "http://127.0.0.1:9/api"  # no trailing slash
    assert c.oauth.provider == "mock" and c.oauth.client_id == "506432803173433344"
    assert [(t, u.id, u.username) for t, u in c.oauth.tokens] == [("t1", "5", "five")]
    assert not a.access.any and a.access.users == ()


@pytest.mark.parametrize("rule", ["guild_members: true", 'roles: ["9"]'])
def test_guild_rules_need_a_bot_token(rule):
    text = f'servers:\n  - {{snowflake: "2", id: g, name: G, passworded: true, access: {{{rule}}}}}\n'
    key = rule.split(":")[0]
    found = problems(text)
    assert len(found) == 1 and f"servers[0].access.{key}: needs a bot token to look up guild members" in found[0]
    assert load("oauth: {bot_token: \"${BOT}\"}\n" + text, {"BOT": "b"}).servers[0].access.needs_member


def test_the_mock_provider_cannot_check_guilds():
    text = 'oauth: {provider: mock}\nservers:\n  - {snowflake: "2", id: g, name: G, passworded: true, access: {roles: ["9"]}}\n'
    assert "the mock provider cannot check guild membership" in problems(text)[0]


@pytest.mark.parametrize("bad, message", [
    ("oauth: {timeout: 0}", "oauth.timeout: must be more than 0"),
    ("oauth: {provider: google}", 'oauth.provider: "google" is not one of "discord", "mock"'),
    ("oauth: {api_base: discord.com}", "oauth.api_base: must be an http:// or https:// URL"),
    ("oauth: {client_id: 5060}", "oauth.client_id: must be a Discord id"),
    ("oauth: {tokens: {t: {id: '1'}}}", "oauth.tokens.<token #1>: missing required key 'username'"),
    ("oauth: {bot_tokn: x}", "unknown key `bot_tokn` (did you mean `bot_token`?)"),
])
def test_bad_oauth_settings(bad, message):
    assert any(message in p for p in problems(bad + "\n" + SERVERS)), problems(bad + "\n" + SERVERS)


def test_bad_access_rules():
    found = problems(SERVERS.replace('access: {users: ["80351110224678912"]}', "access: {users: [nelly], anyone: true}"))
    assert any("servers[1].access.users[0]: must be a Discord id" in p for p in found)
    assert any("unknown key `anyone`" in p for p in found)


@pytest.mark.parametrize("server, note", [
    ("passworded: true", "server s: passworded, and no password or access rule lets anyone in"),
    ("passworded: true, password: pw", "server s: no access rule, so nobody gets in by Discord login"),
    ("access: {any_discord_user: true}", "server s: `access` is ignored because `passworded` is false"),
    ("passworded: true, access: {any_discord_user: true}", "server s: no `oauth.client_id`, so clients are not told"),
    ("passworded: true, access: {any_discord_user: true}, oauth: {client_id: '1', api_base: 'http://discord.example/api'}",
     "server s: `oauth.api_base` is not https"),
    ("passworded: true, access: {any_discord_user: true}, oauth: {provider: mock}",
     "server s: uses the mock OAuth provider without `tokens`"),
])
def test_check_notes(server, note):
    config = load(f'servers:\n  - {{snowflake: "1", id: s, name: S, default: true, {server}}}\n')
    assert any(n.startswith(note) for n in config.notes), config.notes


def test_a_well_set_server_has_no_notes():
    config = load("oauth: {client_id: '1', api_base: 'http://127.0.0.1:8/api'}\n"
                  'servers:\n  - {snowflake: "1", id: s, name: S, default: true, passworded: true, '
                  "access: {any_discord_user: true}}\n")
    assert config.notes == ()


def test_check_describes_who_may_enter(capsys, tmp_path):
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "private, login: 1 listed user (mock)" in out
    assert "note: server oauth: uses the mock OAuth provider" in out
    bare = tmp_path / "bare.yaml"
    bare.write_text('servers:\n  - {snowflake: "1", id: s, name: S, default: true, passworded: true}\n')
    assert main(["check", "-c", str(bare)]) == 0
    assert "note: server s: passworded, and no password or access rule lets anyone in" in capsys.readouterr().out


def test_the_real_discord_example(monkeypatch):
    config = load_file(ROOT / "examples" / "oauth.yaml", env={"DISCORD_CLIENT_SECRET": "s", "DISCORD_BOT_TOKEN": "b"})
    rules = {s.id: s.access for s in config.servers}
    assert rules["team"].users and rules["guild"].guild_members and rules["mods"].roles
    assert rules["community"].any_discord_user and not rules["lobby"].any
    assert {s.oauth.client_id for s in config.servers} == {"506432803173433344", "506432803173433345"}
    assert config.notes == ()
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN is not set"):
        load_file(ROOT / "examples" / "oauth.yaml", env={"DISCORD_CLIENT_SECRET": "s"})


async def test_server_join_carries_the_servers_client_id(start_daemon, open_client):
    text = """
oauth: {client_id: "506432803173433344"}
servers:
  - {snowflake: "1", id: a, name: A, default: true}
  - {snowflake: "2", id: b, name: B, oauth: {client_id: "506432803173433345"}}
"""
    d = await start_daemon(load(text))
    client = await open_client(d)
    assert (await client.connect("a"))["data"]["clientId"] == "506432803173433344"
    assert (await client.connect("b"))["data"]["clientId"] == "506432803173433345"
    plain = await start_daemon(load('servers: [{snowflake: "1", id: a, name: A, default: true}]'))
    assert "clientId" not in (await (await open_client(plain)).connect("a"))["data"]

