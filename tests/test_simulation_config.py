"""Simulation rules in the config: inheritance, presets, generated users, corpus files, errors."""
from __future__ import annotations

import re

import pytest

from dbackd.config import STATUSES, ConfigError, load_file, load_text, schema
from dbackd.config.model import Choice, Rate
from dbackd.config.simulation import CLASSIC_CHANNEL, CLASSIC_LINES

from .conftest import ROOT


def load(text: str, base=ROOT):
    return load_text(text, "t.yaml", base, {})


def problems(text: str, base=ROOT) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, base)
    return [str(p) for p in info.value.problems]


TWO = """\
simulation:
  seed: 5
  presence:
    interval: 2s
    transitions:
      online: {idle: 1, dnd: 1}
      idle: {online: 1}
  messages:
    channels: ["100", "200"]
    chattiness: {"11": 3}
servers:
  - snowflake: "1"
    id: a
    name: A
    users: [{uid: "11", username: x}]
  - snowflake: "2"
    id: b
    name: B
    users: [{uid: "21", username: y}]
    simulation:
      presence:
        timing: fixed
        transitions:
          online: {offline: 1}
      messages:
        channels: ["300"]
        chattiness: {"21": 0}
"""


def test_servers_inherit_the_top_level_block_and_override_it_key_by_key():
    a, b = load(TWO).servers
    assert a.simulation.seed == b.simulation.seed == 5
    assert a.simulation.presence.rate == Rate(2.0, "exponential", "server")
    assert b.simulation.presence.rate == Rate(2.0, "fixed", "server")  # interval inherited, timing overridden
    # A transition row replaces the inherited row whole; other rows are inherited.
    assert dict(b.simulation.presence.transitions) == {
        "online": Choice(("offline",), (1.0,)), "idle": Choice(("online",), (1.0,))}
    assert dict(a.simulation.presence.transitions)["online"] == Choice(("idle", "dnd"), (1.0, 1.0))
    # Lists are replaced whole; per-uid mappings merge.
    assert a.simulation.messages.channels.values == ("100", "200")
    assert b.simulation.messages.channels.values == ("300",)
    assert dict(b.simulation.messages.chattiness) == {"11": 3.0, "21": 0.0}
    # Keys nobody set come from the schema's defaults.
    default = schema()["$defs"]["simulation"]["properties"]["messages"]["properties"]
    assert a.simulation.messages.corpus == tuple(default["corpus"]["default"])
    assert a.simulation.messages.statuses == ("online", "idle")


def test_no_block_means_no_simulation_and_enabled_false_turns_it_off():
    config = load('servers: [{snowflake: "1", id: a, name: A}]')
    assert config.servers[0].simulation is None
    config = load("""
simulation: {seed: 1}
servers:
  - {snowflake: "1", id: a, name: A}
  - {snowflake: "2", id: b, name: B, simulation: {enabled: false}}
  - {snowflake: "3", id: c, name: C, simulation: {presence: {interval: 0}}}
""")
    a, b, c = config.servers
    assert a.simulation is not None and b.simulation is None
    assert c.simulation.presence.rate.interval == 0
    config = load("""
simulation: {enabled: false}
servers:
  - {snowflake: "1", id: a, name: A}
  - {snowflake: "2", id: b, name: B, simulation: {enabled: true}}
""")
    assert [s.simulation is not None for s in config.servers] == [False, True]


def test_classic_preset_is_the_original_rhythm():
    sim = load('simulation: {preset: classic}\nservers: [{snowflake: "1", id: a, name: A}]').servers[0].simulation
    assert sim.presence.rate == Rate(4.0, "fixed", "server")
    assert sim.messages.rate == Rate(5.0, "fixed", "server")
    for status in STATUSES:  # any status, its own included, equally likely
        assert sim.presence.row(status) == Choice(STATUSES, (1.0,) * 4)
    assert sim.messages.corpus == tuple(CLASSIC_LINES) == (
        "hello", "how are you?", "this is a test message", "D-Zone rocks!", "what's up?")
    assert sim.messages.channels == Choice((CLASSIC_CHANNEL,), (1.0,)) and CLASSIC_CHANNEL == "527964146659229701"
    assert sim.messages.statuses == STATUSES  # the original let anyone speak
    assert sim.activity is None and sim.churn is None


def test_preset_layers_sit_just_before_their_blocks_keys():
    config = load("""
simulation:
  preset: classic
  seed: 3
  messages: {interval: 9}
servers:
  - {snowflake: "1", id: a, name: A}
  - {snowflake: "2", id: b, name: B, simulation: {preset: classic}}
  - {snowflake: "3", id: c, name: C, simulation: {preset: none}}
""")
    a, b, c = (s.simulation for s in config.servers)
    assert a.messages.rate.interval == 9  # the block's key wins over its preset
    assert b.messages.rate.interval == 5  # the server's preset wins over what it inherits
    assert b.seed == c.seed == 3  # presets leave the seed alone
    assert c.presence.rate == Rate(4.0, "exponential", "server")  # none: the built-in defaults
    assert c.messages.statuses == ("online", "idle")


def test_null_drops_an_inherited_block():
    config = load("""
simulation:
  churn: {max: 3}
  activity: {hours: {0: 1, 12: 2}}
servers:
  - {snowflake: "1", id: a, name: A}
  - {snowflake: "2", id: b, name: B, simulation: {churn: null, activity: null}}
""")
    a, b = (s.simulation for s in config.servers)
    assert a.churn.max == 3 and a.churn.names == "guest-{n}" and a.activity.points == ((0.0, 1.0), (43200.0, 2.0))
    assert b.churn is None and b.activity is None


def test_generated_users_are_stable_for_a_seed_and_follow_the_declared_ones():
    text = """
simulation: {seed: %s}
servers:
  - snowflake: "1"
    id: a
    name: A
    users: [{uid: "10", username: declared}]
    simulation: {generate: {count: 50, names: "bot-{n}", colors: ["#AABBCC"]}}
  - snowflake: "2"
    id: b
    name: B
    simulation: {generate: {count: 3, names: [ann, bob]}}
"""
    first, again, other = load(text % 1), load(text % 1), load(text % 2)
    users = first.servers[0].users
    assert len(users) == 51 and users[0].username == "declared"
    assert [u.username for u in users[1:4]] == ["bot-1", "bot-2", "bot-3"]
    assert {u.role_color for u in users[1:]} == {"#aabbcc"}
    assert len({u.uid for u in users}) == 51 and all(re.fullmatch(r"[0-9]{18}", u.uid) for u in users[1:])
    assert users == again.servers[0].users
    assert [u.uid for u in users] != [u.uid for u in other.servers[0].users]
    assert [u.username for u in first.servers[1].users] == ["ann", "bob", "ann-2"]
    assert first.servers[0].simulation.generated == 50
    # Starting statuses follow the default weights {online: 6, idle: 2, dnd: 1, offline: 1}, roughly.
    many = load(text.replace("count: 50", "count: 4000") % 1).servers[0].users[1:]
    share = sum(u.status == "online" for u in many) / len(many)
    assert 0.55 < share < 0.65


def test_corpus_file_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "lines.txt").write_text("first line\n\n  second line  \n")
    (tmp_path / "empty.txt").write_text("\n\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text('simulation: {messages: {corpus: "file:lines.txt"}}\nservers: [{snowflake: "1", id: a, name: A}]\n')
    assert load_file(cfg).servers[0].simulation.messages.corpus == ("first line", "second line")
    cfg.write_text('servers:\n  - snowflake: "1"\n    id: a\n    name: A\n'
                   '    simulation:\n      messages:\n        corpus: "file:missing.txt"\n')
    with pytest.raises(ConfigError) as info:
        load_file(cfg)
    assert str(info.value) == f"{cfg}:7:17: servers[0].simulation.messages.corpus: corpus file not found: {tmp_path / 'missing.txt'}"
    cfg.write_text('simulation: {messages: {corpus: "file:empty.txt"}}\nservers: [{snowflake: "1", id: a, name: A}]\n')
    with pytest.raises(ConfigError, match=r"c.yaml:1:33: simulation.messages.corpus: corpus file .*empty.txt has no lines"):
        load_file(cfg)


HEAD = 'servers:\n  - snowflake: "1"\n    id: a\n    name: A\n    simulation:\n'
BROKEN = [
    ("unknown key", "      presense: {interval: 2}\n",
     "t.yaml:6:7: servers[0].simulation.presense: unknown key `presense` (did you mean `presence`?)"),
    ("status row", "      presence: {transitions: {away: {online: 1}}}\n",
     't.yaml:6:32: servers[0].simulation.presence.transitions.away: "away" is not one of "online", "idle", "dnd", "offline"'),
    ("status target", "      presence: {transitions: {online: {afk: 1}}}\n",
     't.yaml:6:41: servers[0].simulation.presence.transitions.online.afk: "afk" is not one of'),
    ("negative weight", "      presence: {transitions: {online: {idle: -1}}}\n",
     "t.yaml:6:47: servers[0].simulation.presence.transitions.online.idle: -1 is less than the minimum of 0"),
    ("interval", "      presence: {interval: soon}\n",
     "t.yaml:6:28: servers[0].simulation.presence.interval: must be a duration"),
    ("too fast", "      messages: {interval: 1ms}\n",
     "t.yaml:6:28: servers[0].simulation.messages.interval: '1ms' is too fast"),
    ("corpus type", "      messages: {corpus: 5}\n",
     't.yaml:6:26: servers[0].simulation.messages.corpus: must be a list of lines, or "file:PATH"'),
    ("channel", "      messages: {channels: [general]}\n",
     "t.yaml:6:28: servers[0].simulation.messages.channels: must be a list of channel ids"),
    ("speaking status", "      messages: {statuses: [online, away]}\n",
     't.yaml:6:37: servers[0].simulation.messages.statuses[1]: "away" is not one of'),
    ("time zone", "      activity: {timezone: Mars/Olympus, hours: {0: 1}}\n",
     "t.yaml:6:28: servers[0].simulation.activity.timezone: unknown time zone 'Mars/Olympus'"),
    ("hour", "      activity: {hours: {25: 1}}\n",
     't.yaml:6:26: servers[0].simulation.activity.hours.25: must be a time of day, "H" or "H:MM"'),
    ("silent curve", "      activity: {hours: {0: 0, 12: 0}}\n",
     "t.yaml:6:25: servers[0].simulation.activity.hours: every multiplier is 0"),
    ("same hour twice", '      activity: {hours: {9: 1, "09:00": 2}}\n',
     "t.yaml:6:32: servers[0].simulation.activity.hours.09:00: '09:00' is the same time as '9'"),
    ("preset", "      preset: modern\n",
     't.yaml:6:15: servers[0].simulation.preset: "modern" is not one of "classic", "none"'),
    ("name pattern", "      churn: {names: guest}\n",
     "t.yaml:6:22: servers[0].simulation.churn.names: must be a name pattern containing {n}"),
    ("palette", "      churn: {colors: [red]}\n",
     "t.yaml:6:24: servers[0].simulation.churn.colors[0]: must be a colour written #rrggbb"),
    ("override uid", "      presence: {users: {bob: {weight: 2}}}\n",
     "t.yaml:6:26: servers[0].simulation.presence.users.bob: must be a Discord id"),
    ("generate count", '      generate: {names: "x-{n}"}\n',
     "t.yaml:6:17: servers[0].simulation.generate: missing required key 'count'"),
    ("seed", "      seed: 1.5\n", "t.yaml:6:13: servers[0].simulation.seed: must be of type integer or string, not number"),
]


@pytest.mark.parametrize("name, text, expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_bad_simulation_blocks_are_reported_where_they_are_written(name, text, expected):
    found = problems(HEAD + text)
    assert any(line.startswith(expected) for line in found), found


def test_top_level_block_problems_point_into_it():
    found = problems('simulation:\n  churn:\n    max: -1\nservers: [{snowflake: "1", id: a, name: A}]\n')
    assert found == ["t.yaml:3:10: simulation.churn.max: -1 is less than the minimum of 0"]


def test_notes_name_overrides_for_users_who_are_not_members(capsys):
    config = load('simulation: {presence: {users: {"99": {weight: 0}}}}\n'
                  'servers: [{snowflake: "1", id: a, name: A, users: [{uid: "1", username: u}]}]\n')
    assert "server a: simulation names uid 99, who is not a member" in config.notes


def test_example_uses_the_classic_preset_everywhere():
    config = load_file(ROOT / "examples" / "dback.yaml", env={})
    assert [(s.id, len(s.users)) for s in config.servers] == [("dworld", 4), ("docs", 1), ("oauth", 1), ("repos", 21)]
    for server in config.servers:
        assert server.simulation.presence.rate == Rate(4.0, "fixed", "server")
        assert server.simulation.messages.rate == Rate(5.0, "fixed", "server")


def test_docs_describe_every_simulation_key():
    section = (ROOT / "docs" / "simulation.md").read_text()

    def names(node):
        for name, sub in node.get("properties", {}).items():
            yield name
            yield from names(sub)
        if isinstance(node.get("additionalProperties"), dict):
            yield from names(node["additionalProperties"])

    missing = sorted({n for n in names(schema()["$defs"]["simulation"]) if f"`{n}`" not in section})
    assert not missing, f"docs/simulation.md does not mention {missing}"
