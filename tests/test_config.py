"""The loader: examples validate, broken files give FILE:LINE:COLUMN messages, env interpolation."""
from __future__ import annotations

import dataclasses
import json

import pytest
from jsonschema import Draft202012Validator

from dbackd.config import ConfigError, Limits, embedded_text, load_data, load_file, load_text, schema
from dbackd.config.model import build_limits

from .conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EXAMPLE_ENV = {"DISCORD_CLIENT_SECRET": "example-secret", "DISCORD_BOT_TOKEN": "example-bot-token"}

GOOD = """\
servers:
  - snowflake: "1"
    id: a
    name: A
    default: true
    users:
      - {uid: "10", username: u, status: idle, roleColor: "#AABBCC"}
"""


def load(text: str, env=None):
    return load_text(text, "t.yaml", ROOT, env or {})


def problems(text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path):
    config = load_file(path, env=EXAMPLE_ENV)
    assert config.servers


def test_example_declares_the_original_mock_world():
    config = load_file(ROOT / "examples" / "dback.yaml", env={})
    assert [(s.id, len(s.users)) for s in config.servers] == [("dworld", 4), ("docs", 1), ("oauth", 1), ("repos", 21)]
    assert sum(len(s.users) for s in config.servers) == 27
    assert [s.id for s in config.servers if s.default] == ["dworld"]
    assert [s.id for s in config.servers if s.passworded] == ["oauth"]


def test_embedded_default_is_exactly_the_example():
    assert embedded_text() == (ROOT / "examples" / "dback.yaml").read_text()


def test_schema_is_valid_2020_12():
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"].endswith("2020-12/schema")


def test_defaults_come_from_the_schema():
    config = load(GOOD)
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 3000)
    assert config.static[0].path == "/" and config.static[0].dir is None
    assert config.logging.level == "info"
    user = config.servers[0].users[0]
    assert (user.status, user.role_color) == ("idle", "#aabbcc")
    bare = load('servers: [{snowflake: "1", id: a, name: A, users: [{uid: "2", username: b}]}]')
    assert (bare.servers[0].users[0].status, bare.servers[0].users[0].role_color) == ("online", "#ffffff")


def test_every_limits_key_of_the_schema_reaches_the_model():
    keys = schema()["properties"]["limits"]["properties"]
    given = {}
    for key, spec in keys.items():  # a value unlike the default, in the form the schema takes
        given[key] = spec["default"] + 7 if spec.get("type") in ("integer", "number") else f"{spec['default'] + 7}s"
    limits = load(GOOD + "limits: " + json.dumps(given) + "\n").limits
    assert {key: getattr(limits, key) for key in keys} == {key: float(str(v).rstrip("s")) for key, v in given.items()}


def test_a_new_limits_field_is_read_without_another_list():
    extended = dataclasses.make_dataclass("Extended", [("new_count", int, 1), ("new_wait", float, 1.0)],
                                          bases=(Limits,), frozen=True)
    block = {"new_count": 5, "new_wait": "2m", "frames_per_second": 3}
    read = build_limits(block, extended)
    assert (read.new_count, read.new_wait, read.frames_per_second) == (5, 120.0, 3.0)
    with pytest.raises(TypeError, match="unheard_of"):
        build_limits({"unheard_of": 1})


def test_model_is_immutable():
    config = load(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.servers[0].name = "B"  # type: ignore[misc]
    assert isinstance(config.servers, tuple) and isinstance(config.servers[0].users, tuple)


BROKEN = [
    ("bad yaml", "servers:\n  - {id: a\n", "t.yaml:3:1: invalid YAML"),
    ("tab indentation", "servers:\n\t- id: a\n", "t.yaml:2:1: invalid YAML"),
    ("unknown key with hint", GOOD.replace("roleColor", "rolecolor"),
     "t.yaml:7:48: servers[0].users[0].rolecolor: unknown key `rolecolor` (did you mean `roleColor`?)"),
    ("unknown top-level key", "listn: {port: 1}\n" + GOOD, "t.yaml:1:1: listn: unknown key `listn` (did you mean `listen`?)"),
    ("wrong type", "listen: {port: eighty}\n" + GOOD, "t.yaml:1:16: listen.port: must be of type integer, not string"),
    ("port out of range", "listen: {port: 70000}\n" + GOOD, "t.yaml:1:16: listen.port: 70000 is greater than the maximum of 65535"),
    ("unquoted snowflake", GOOD.replace('snowflake: "1"', "snowflake: 1"),
     "t.yaml:2:16: servers[0].snowflake: must be a Discord id: a string of digits (quote it in YAML)"),
    ("duplicate id", GOOD + '  - {snowflake: "2", id: a, name: B}\n',
     "t.yaml:8:26: servers[1].id: duplicate server id 'a' (first used at line 3)"),
    ("duplicate snowflake", GOOD + '  - {snowflake: "1", id: b, name: B}\n',
     "t.yaml:8:17: servers[1].snowflake: duplicate server snowflake '1' (first used at line 2)"),
    ("duplicate uid", GOOD + '      - {uid: "10", username: v}\n',
     "t.yaml:8:15: servers[0].users[1].uid: duplicate user uid '10' (first used at line 7)"),
    ("two defaults", GOOD + '  - {snowflake: "2", id: b, name: B, default: true}\n',
     "t.yaml:8:47: servers[1].default: only one server may be the default (already servers[0], line 5)"),
    ("bad colour", GOOD.replace("#AABBCC", "red"),
     'servers[0].users[0].roleColor: must be a colour written #rrggbb'),
    ("bad status", GOOD.replace("idle", "away"),
     't.yaml:7:42: servers[0].users[0].status: "away" is not one of "online", "idle", "dnd", "offline"'),
    ("missing env var", GOOD.replace("name: A", "name: ${GUILD_NAME}"),
     "t.yaml:4:11: servers[0].name: environment variable GUILD_NAME is not set"),
    ("missing required", 'servers: [{id: a, name: A}]\n', "t.yaml:1:11: servers[0]: missing required key 'snowflake'"),
    ("duplicate yaml key", GOOD.replace("    name: A\n", "    name: A\n    name: B\n"),
     "t.yaml:5:5: servers[0].name: duplicate key"),
    ("reserved id", GOOD.replace("id: a", "id: default"), 't.yaml:3:9: servers[0].id: "default" is reserved'),
    ("static without dir or builtin", "static: [{path: /}]\n" + GOOD, "t.yaml:1:10: static[0]: give exactly one of `dir` or `builtin`"),
    ("static dir missing", "static: [{path: /, dir: ./no-such-dir}]\n" + GOOD, "t.yaml:1:25: static[0].dir: not a directory"),
    ("empty file", "", "t.yaml:1:1: the file is empty"),
    ("not a mapping", "- a\n- b\n", "t.yaml:1:1: the document must be a mapping"),
]


@pytest.mark.parametrize("name, text, expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_configs(name, text, expected):
    found = problems(text)
    assert any(line.startswith(expected) or expected in line for line in found), found


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("idle", "away").replace("#AABBCC", "red") + '  - {snowflake: "2", id: a, name: B, default: true}\n'
    found = problems(text)
    assert len(found) == 4, found
    assert [int(f.split(":")[1]) for f in found] == [7, 7, 8, 8]


def test_env_interpolation_typed_and_defaulted():
    text = 'listen:\n  host: "${HOST:-0.0.0.0}"\n  port: ${PORT}\n' + GOOD.replace("name: A", "name: ${NAME:-Fallback} $${literal}")
    config = load(text, {"PORT": "8123"})
    assert config.listen.port == 8123 and config.listen.host == "0.0.0.0"
    assert config.servers[0].name == "Fallback ${literal}"
    config = load(text, {"PORT": "1", "HOST": "::1", "NAME": "From env"})
    assert (config.listen.host, config.servers[0].name) == ("::1", "From env ${literal}")


def test_quoted_env_value_stays_a_string():
    found = problems('listen: {port: "${PORT}"}\n' + GOOD, {"PORT": "8123"})
    assert found == ["t.yaml:1:16: listen.port: must be of type integer, not string"]


def test_load_from_dict_reports_paths():
    assert load_data({"servers": [{"snowflake": "1", "id": "a", "name": "A"}]}).servers[0].id == "a"
    with pytest.raises(ConfigError) as info:
        load_data({"servers": [{"snowflake": "1", "id": "a", "name": "A", "users": [{"uid": "x", "username": "y"}]}]})
    assert "servers[0].users[0].uid" in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_file("/nonexistent/dback.yaml")


def test_schema_documents_every_property():
    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                assert "description" in sub or "$ref" in sub, f"{where}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
    walk(schema(), "schema")
    json.dumps(schema())


def test_yaml_aliases_are_refused_at_their_place():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nservers: [*c]\n"
    with pytest.raises(ConfigError) as info:
        load_text(bomb, "t.yaml", ROOT)
    assert str(info.value) == "t.yaml:2:8: invalid YAML: aliases (*a) are not supported: write the value out"


def test_socket_origins_are_origins_and_only_for_the_builtin_page(tmp_path):
    found = problems("""
servers: [{snowflake: "1", id: a, name: A}]
static:
  - {path: /, builtin: true, sockets: ["wss://dzone.example.com/ws"]}
  - {path: /files, dir: "%s", sockets: ["wss://dzone.example.com"]}
""" % tmp_path)
    assert any("static[0].sockets[0]" in p and "without a path" in p for p in found), found
    assert any("static[1].sockets" in p and "only the built-in page" in p for p in found), found


@pytest.mark.parametrize("where, value, definition", [
    ('snowflake: "1"', 'snowflake: "1\\n"', "uid"),
    ('uid: "10"', 'uid: "2\\n"', "uid"),
    ('roleColor: "#AABBCC"', 'roleColor: "#ffffff\\n"', None),
])
def test_a_trailing_newline_is_refused_by_check_as_by_the_api(where, value, definition):
    """JSON Schema's `$` ends the string; in Python's re it also matches before a final newline."""
    from dbackd.sources import apischema

    found = problems(GOOD.replace(where, value))
    assert found and all("must be" in line for line in found), found
    if definition is not None:
        with pytest.raises(apischema.InvalidRequest):
            apischema.check(definition, value.split('"')[1].replace("\\n", "\n"))


def test_a_static_mount_of_the_root_or_holding_the_config_is_refused(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "dback.yaml").write_text("static: [{path: /, dir: /}]\n" + GOOD)
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "dback.yaml")
    assert [p.message for p in info.value.problems] == ["the root directory / must not be served: give the "
                                                        "directory of the files to serve"]
    (tmp_path / "dback.yaml").write_text("static: [{path: /, dir: .}]\n" + GOOD)
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "dback.yaml")
    assert [p.message for p in info.value.problems] == [f"{tmp_path} holds the config file "
                                                        f"{tmp_path / 'dback.yaml'}: it would be served; "
                                                        "serve a directory of its own"]
    (tmp_path / "dback.yaml").write_text("static: [{path: /, dir: www}]\n" + GOOD)
    assert load_file(tmp_path / "dback.yaml").static[0].dir == tmp_path / "www"


def test_frame_ancestors_are_origins_and_only_for_the_builtin_page(tmp_path):
    found = problems("""
servers: [{snowflake: "1", id: a, name: A}]
static:
  - {path: /, builtin: true, frame_ancestors: ["https://community.example.com/forum"]}
  - {path: /files, dir: "%s", frame_ancestors: ["https://community.example.com"]}
""" % tmp_path)
    assert any("static[0].frame_ancestors[0]" in p and "without a path" in p for p in found), found
    assert any("static[1].frame_ancestors" in p and "only the built-in page" in p for p in found), found
