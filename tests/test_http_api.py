"""The HTTP API: every endpoint with good and bad input, against a real daemon and real sockets."""
from __future__ import annotations

import json

import aiohttp
import pytest
import structlog
from openapi_spec_validator import validate as validate_openapi

from dbackd.sources import api, apischema
from dbackd.config import ConfigError, load_text
from dbackd.daemon import Daemon

from .conftest import EXAMPLE, ROOT

TOKEN_A = "tok-a-0123456789abcdef"
TOKEN_B = "tok-b-fedcba9876543210"

CONFIG = """\
api:
  tokens: ["${TEST_API_TOKEN_A}", "${TEST_API_TOKEN_B}"]
  max_body_bytes: 2048
  rate: {per_second: 1000, burst: 1000}
servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users:
      - {uid: "11", username: alice, status: online, roleColor: "#111111"}
      - {uid: "12", username: bob, status: idle}
  - {snowflake: "2", id: priv, name: Private, passworded: true, password: secretpw, users: [{uid: "21", username: carol}]}
"""


@pytest.fixture(autouse=True)
def tokens(monkeypatch):
    monkeypatch.setenv("TEST_API_TOKEN_A", TOKEN_A)
    monkeypatch.setenv("TEST_API_TOKEN_B", TOKEN_B)


class Api:
    """Requests to a daemon's API; each answer as (status, JSON body or None, headers)."""

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon):
        self.http = http
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{daemon.port}"

    async def __call__(self, method: str, path: str, body=None, token=TOKEN_A, headers=None, data=None):
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        kwargs = {"json": body} if body is not None else {}
        if data is not None:
            kwargs = {"data": data}
        async with self.http.request(method, self.base + path, headers=h, **kwargs) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None), r.headers


@pytest.fixture
async def live(start_daemon, http):
    d = await start_daemon(text=CONFIG)
    return d, Api(http, d)


async def joined(open_client, d, server="home"):
    c = await open_client(d)
    assert (await c.connect(server))["type"] == "server-join"
    return c


# -- on, off, who may ---------------------------------------------------------------

async def test_api_is_off_without_tokens(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    call = Api(http, d)
    for method, path in [("GET", "/api/servers"), ("POST", "/api/servers/dworld/presence"),
                         ("GET", "/api/openapi.json"), ("GET", "/api/servers/dworld/users")]:
        status, body, _ = await call(method, path, {"uid": "1", "status": "online"} if method == "POST" else None)
        assert status == 404 and body == {"error": api.API_OFF}
    status, body, _ = await call("GET", "/api/version", token=None)
    assert status == 200 and body["version"]


async def test_missing_or_malformed_authorization_is_401(live):
    d, call = live
    for headers in [{}, {"Authorization": f"Basic {TOKEN_A}"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  "}]:
        status, body, h = await call("GET", "/api/servers", token=None, headers=headers)
        assert status == 401, headers
        assert "Authorization: Bearer" in body["error"]
        assert h["WWW-Authenticate"].startswith("Bearer")


async def test_unknown_token_is_403_and_never_logged(live):
    d, call = live
    wrong = "not-the-token-0123456789"
    with structlog.testing.capture_logs() as logs:
        status, body, _ = await call("POST", "/api/servers/home/presence", {"uid": "11", "status": "dnd"}, token=wrong)
    assert status == 403 and "not one of api.tokens" in body["error"]
    assert wrong not in repr(logs) and TOKEN_A not in repr(logs)
    assert d.world.servers["1"].users["11"].status == "online"
    for token in (TOKEN_A, TOKEN_B, TOKEN_A.upper()):
        assert (await call("GET", "/api/servers", token=token))[0] == (403 if token == TOKEN_A.upper() else 200)


async def test_version_stays_public_and_get_only(live):
    d, call = live
    assert (await call("GET", "/api/version", token=None))[0] == 200
    status, body, h = await call("POST", "/api/version", {}, token=None)
    assert status == 405 and h["Allow"] == "GET, HEAD"


async def test_wrong_method_is_405_with_allow(live):
    d, call = live
    status, body, h = await call("GET", "/api/servers/home/presence")
    assert status == 405 and h["Allow"] == "POST" and "GET is not allowed" in body["error"]
    status, _, h = await call("POST", "/api/servers/home/users/11", {"username": "x"})
    assert status == 405 and h["Allow"] == "DELETE, PUT"
    status, _, h = await call("DELETE", "/api/servers")
    assert status == 405 and h["Allow"] == "GET, HEAD"


async def test_unknown_endpoint_is_404(live):
    d, call = live
    for path in ["/api/nothing", "/api/servers/home", "/api/servers/home/users/11/extra", "/api/servers//users"]:
        status, body, _ = await call("GET", path)
        assert status == 404 and "no such endpoint" in body["error"], path


# -- reading ------------------------------------------------------------------------

async def test_list_servers(live, open_client):
    d, call = live
    await joined(open_client, d)
    status, body, _ = await call("GET", "/api/servers")
    assert status == 200 and apischema.explain("serverList", body) == []
    assert body["servers"] == [
        {"snowflake": "1", "id": "home", "name": "Home", "default": True, "passworded": False, "users": 2, "clients": 1},
        {"snowflake": "2", "id": "priv", "name": "Private", "default": False, "passworded": True, "users": 1, "clients": 0},
    ]
    assert "secretpw" not in json.dumps(body)


async def test_list_users(live):
    d, call = live
    d.world.set_presence("home", "13", "dnd", username="runtime")
    for ref in ("home", "1", "default"):
        status, body, _ = await call("GET", f"/api/servers/{ref}/users")
        assert status == 200 and apischema.explain("userList", body) == []
        assert body["server"] == "1"
        assert body["users"] == [
            {"uid": "11", "username": "alice", "status": "online", "roleColor": "#111111", "declared": True},
            {"uid": "12", "username": "bob", "status": "idle", "roleColor": "#ffffff", "declared": True},
            {"uid": "13", "username": "runtime", "status": "dnd", "roleColor": "#ffffff", "declared": False},
        ]
    status, body, _ = await call("GET", "/api/servers/nope/users")
    assert status == 404 and "no server 'nope'" in body["error"]


# -- presence -------------------------------------------------------------------------

async def test_presence_reaches_two_live_clients_and_a_later_join(live, open_client):
    d, call = live
    a, b = await joined(open_client, d), await joined(open_client, d)
    elsewhere = await open_client(d)  # connected, joined to no server
    status, body, _ = await call("POST", "/api/servers/home/presence", {"uid": "11", "status": "dnd"})
    assert (status, body) == (200, {"applied": 1})
    for c in (a, b):
        assert await c.recv() == {"type": "presence", "server": "1", "data": {"uid": "11", "status": "dnd"}}
    late = await open_client(d)
    users = (await late.connect("home"))["data"]["users"]
    assert users["11"] == {"uid": "11", "username": "alice", "status": "dnd", "roleColor": "#111111"}
    # By snowflake, adding a runtime user with a colour (normalised to lower case).
    status, _, _ = await call("POST", "/api/servers/1/presence",
                              {"uid": "13", "status": "online", "username": "dave", "roleColor": "#ABCDEF"})
    assert status == 200
    for c in (a, b, late):
        assert (await c.recv())["data"] == {"uid": "13", "status": "online", "username": "dave", "roleColor": "#abcdef"}
    await elsewhere.assert_quiet()


async def test_presence_batch_is_applied_in_order(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    batch = {"presences": [
        {"uid": "13", "status": "online", "username": "dave"},
        {"uid": "13", "status": "idle"},
        {"uid": "12", "status": "dnd"},
        {"uid": "13", "status": "offline", "delete": True},
    ]}
    status, body, _ = await call("POST", "/api/servers/home/presence", batch)
    assert (status, body) == (200, {"applied": 4})
    got = [(await c.recv())["data"] for _ in range(4)]
    assert got == [
        {"uid": "13", "status": "online", "username": "dave", "roleColor": "#ffffff"},
        {"uid": "13", "status": "idle"},
        {"uid": "12", "status": "dnd"},
        {"uid": "13", "status": "offline", "delete": True},
    ]
    await c.assert_quiet()


@pytest.mark.parametrize("batch, status, message", [
    ([{"uid": "11", "status": "idle"}, {"uid": "12", "status": "idle"}, {"uid": "11", "status": "away"}],
     400, 'presences[2].status: "away" is not one of "online", "idle", "dnd", "offline"'),
    ([{"uid": "11", "status": "idle"}, {"uid": "99", "status": "idle"}],
     404, "presences[1]: user 99 is not in server home (give a username to add it)"),
    ([{"uid": "13", "status": "idle", "username": "x"}, {"uid": "13", "status": "idle", "delete": True},
      {"uid": "13", "status": "idle", "delete": True}],
     404, "presences[2]: user 13 is not in server home"),
    ([{"uid": "11", "status": "idle"}, {"uid": "12", "status": "offline", "delete": True}],
     409, "presences[1]: user 12 is declared"),
])
async def test_a_bad_batch_applies_nothing(live, open_client, batch, status, message):
    d, call = live
    c = await joined(open_client, d)
    got, body, _ = await call("POST", "/api/servers/home/presence", {"presences": batch})
    assert got == status and body["error"].startswith(message), body
    await c.assert_quiet()
    assert {u: s.status for u, s in d.world.servers["1"].users.items()} == {"11": "online", "12": "idle"}


@pytest.mark.parametrize("body, status, message", [
    ({"uid": "11", "status": "away"}, 400, 'status: "away" is not one of "online", "idle", "dnd", "offline"'),
    ({"uid": "11", "status": "idle", "roleColor": "red"}, 400, "roleColor: must be a colour written #rrggbb"),
    ({"uid": "11", "status": "idle", "roleColor": "#12345"}, 400, "roleColor: must be a colour written #rrggbb"),
    ({"uid": "x1", "status": "idle"}, 400, "uid: must be a Discord id: a string of digits"),
    ({"uid": 11, "status": "idle"}, 400, "uid: must be a Discord id"),
    ({"status": "idle"}, 400, "missing required key 'uid'"),
    ({"uid": "11", "status": "idle", "colour": "#ffffff"}, 400, "colour: unknown key `colour`"),
    ({"uid": "11", "status": "idle", "username": ""}, 400, "username: '' should be non-empty"),
    ({"presences": []}, 400, "presences: [] should be non-empty"),
    ([{"uid": "11", "status": "idle"}], 400, "must be of type object, not list"),
    ({"uid": "99", "status": "idle"}, 404, "user 99 is not in server home (give a username to add it)"),
    ({"uid": "99", "status": "idle", "delete": True}, 404, "user 99 is not in server home"),
    ({"uid": "11", "status": "offline", "delete": True}, 409, "user 11 is declared for server home"),
])
async def test_bad_presence(live, open_client, body, status, message):
    d, call = live
    c = await joined(open_client, d)
    got, answer, _ = await call("POST", "/api/servers/home/presence", body)
    assert got == status and answer["error"].startswith(message), answer
    await c.assert_quiet()


async def test_presence_to_unknown_server_is_404(live):
    d, call = live
    status, body, _ = await call("POST", "/api/servers/nowhere/presence", {"uid": "11", "status": "idle"})
    assert status == 404 and body["error"].startswith("no server 'nowhere'")


async def test_bad_json_and_content_type(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    status, body, _ = await call("POST", "/api/servers/home/presence", data=b'{"uid": "11", "status": ',
                                 headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"].startswith("the body is not valid JSON")
    status, body, _ = await call("POST", "/api/servers/home/presence", data=b'{"uid": "11", "status": "idle"}',
                                 headers={"Content-Type": "text/plain"})
    assert status == 415 and "Content-Type: application/json (got text/plain)" in body["error"]
    status, body, _ = await call("POST", "/api/servers/home/presence", data=b'{"uid": "11", "status": "idle"}')
    assert status == 415
    status, _, _ = await call("POST", "/api/servers/home/presence", data=b'{"uid": "11", "status": "idle"}',
                              headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200
    assert (await c.recv())["data"] == {"uid": "11", "status": "idle"}
    await c.assert_quiet()


async def test_oversized_body_is_413(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    big = {"presences": [{"uid": "11", "status": "idle", "username": "x" * 100}] * 30}  # > 2048 bytes
    status, body, _ = await call("POST", "/api/servers/home/presence", big)
    assert status == 413 and "api.max_body_bytes (2048 bytes)" in body["error"]

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(40):
            yield b" " * 100

    status, body, _ = await call("POST", "/api/servers/home/presence", data=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert status == 413
    await c.assert_quiet()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rate_limit_per_token_with_retry_after(start_daemon, http):
    d = await start_daemon(text=CONFIG.replace("per_second: 1000, burst: 1000", "per_second: 0.5, burst: 2"))
    clock = FakeClock()
    d.http_api.limiter.clock = clock
    call = Api(http, d)
    assert (await call("GET", "/api/servers"))[0] == 200
    assert (await call("POST", "/api/servers/home/presence", {"uid": "11", "status": "idle"}))[0] == 200
    status, body, headers = await call("POST", "/api/servers/home/presence", {"uid": "11", "status": "dnd"})
    assert status == 429 and headers["Retry-After"] == "2" and "retry after 2 s" in body["error"]
    assert d.world.servers["1"].users["11"].status == "idle"  # the refused request changed nothing
    assert (await call("GET", "/api/servers", token=TOKEN_B))[0] == 200  # another token, another bucket
    clock.now += 1.0
    assert (await call("GET", "/api/servers"))[2]["Retry-After"] == "1"
    clock.now += 2.0
    assert (await call("POST", "/api/servers/home/presence", {"uid": "11", "status": "dnd"}))[0] == 200


# -- messages -------------------------------------------------------------------------

async def test_messages(live, open_client):
    d, call = live
    a, b = await joined(open_client, d), await joined(open_client, d)
    status, body, _ = await call("POST", "/api/servers/home/messages", {"uid": "11", "message": "hi", "channel": "5"})
    assert (status, body) == (200, {"applied": 1})
    for c in (a, b):
        assert await c.recv() == {"type": "message", "server": "1", "data": {"uid": "11", "message": "hi", "channel": "5"}}
    for bad, code, message in [
        ({"uid": "99", "message": "hi", "channel": "5"}, 404, "user 99 is not in server home"),
        ({"uid": "11", "message": "hi"}, 400, "missing required key 'channel'"),
        ({"uid": "11", "message": "", "channel": "5"}, 400, "message: '' should be non-empty"),
    ]:
        status, body, _ = await call("POST", "/api/servers/home/messages", bad)
        assert status == code and body["error"].startswith(message), body
    assert (await call("POST", "/api/servers/gone/messages", {"uid": "11", "message": "hi", "channel": "5"}))[0] == 404
    await a.assert_quiet()


# -- runtime users --------------------------------------------------------------------

async def test_put_creates_then_updates_a_runtime_user(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    status, body, _ = await call("PUT", "/api/servers/home/users/13", {"username": "dave", "roleColor": "#ABCDEF"})
    assert status == 201 and body == {"uid": "13", "username": "dave", "status": "online", "roleColor": "#abcdef",
                                      "declared": False}
    assert (await c.recv())["data"] == {"uid": "13", "status": "online", "username": "dave", "roleColor": "#abcdef"}
    status, body, _ = await call("PUT", "/api/servers/home/users/13", {"username": "david", "status": "dnd"})
    assert status == 200 and body["username"] == "david" and body["status"] == "dnd" and body["roleColor"] == "#abcdef"
    assert (await c.recv_renamed())["data"] == {"uid": "13", "status": "dnd", "username": "david", "roleColor": "#abcdef"}
    late = await open_client(d)
    assert (await late.connect("home"))["data"]["users"]["13"]["username"] == "david"


async def test_put_bad_input(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    for path, body, code, message in [
        ("/api/servers/home/users/abc", {"username": "x"}, 400, "uid in the path: must be a Discord id"),
        ("/api/servers/home/users/13", {"status": "idle"}, 400, "missing required key 'username'"),
        ("/api/servers/home/users/13", {"username": "x", "status": "asleep"}, 400, 'status: "asleep" is not one of'),
        ("/api/servers/home/users/13", {"username": "x", "roleColor": "blue"}, 400, "roleColor: must be a colour"),
        ("/api/servers/nope/users/13", {"username": "x"}, 404, "no server 'nope'"),
    ]:
        status, answer, _ = await call("PUT", path, body)
        assert status == code and answer["error"].startswith(message), answer
    await c.assert_quiet()


async def test_delete_user(live, open_client):
    d, call = live
    c = await joined(open_client, d)
    assert (await call("PUT", "/api/servers/home/users/13", {"username": "dave", "status": "idle"}))[0] == 201
    await c.recv()
    status, body, _ = await call("DELETE", "/api/servers/home/users/13")
    assert status == 204 and body is None
    assert (await c.recv())["data"] == {"uid": "13", "status": "idle", "delete": True}
    status, body, _ = await call("DELETE", "/api/servers/home/users/13")
    assert status == 404 and body["error"] == "user 13 is not in server home"
    status, body, _ = await call("DELETE", "/api/servers/home/users/11")
    assert status == 409 and "set its status to offline" in body["error"]
    await c.assert_quiet()
    assert "11" in d.world.servers["1"].users


# -- description and config -------------------------------------------------------------

async def test_openapi_description_is_valid_and_public(live):
    d, call = live
    status, doc, _ = await call("GET", "/api/openapi.json", token=None)
    assert status == 200
    validate_openapi(doc)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/api/servers", "/api/servers/{server}/users", "/api/servers/{server}/presence",
                                 "/api/servers/{server}/messages", "/api/servers/{server}/users/{uid}"}
    schemas = doc["components"]["schemas"]
    # The status and colour rules are the config's own definitions, not copies.
    config_defs = json.loads((ROOT / "schemas" / "dback.schema.json").read_text())["$defs"]
    assert schemas["status"]["enum"] == config_defs["status"]["enum"]
    assert schemas["color"]["pattern"] == config_defs["color"]["pattern"]
    assert schemas["presence"]["properties"]["status"]["$ref"] == "#/components/schemas/status"


def test_api_schema_reuses_the_config_definitions():
    text = (ROOT / "schemas" / "api.schema.json").read_text()
    assert '"online"' not in text and "[0-9a-fA-F]" not in text  # referenced, never copied


BODIES = [
    {"uid": "1", "status": "online"}, {"uid": "1", "status": "idle", "username": "a", "roleColor": "#aBcDeF", "delete": False},
    {"uid": "1", "status": "gone"}, {"uid": "", "status": "online"}, {"uid": "1" * 21, "status": "online"},
    {"uid": "1", "status": "online", "roleColor": "#abcdeg"}, {"uid": "1", "status": "online", "delete": "yes"},
    {"presences": [{"uid": "1", "status": "online"}]}, {"presences": [{"uid": "1"}]}, {"presences": "x"},
    {"presences": [{"uid": "1", "status": "online"}], "extra": 1}, None, 3, "x", [], {},
    {"uid": "1", "status": "online", "username": "x" * 101},
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_fast_check_and_explanation_agree(body):
    explained = apischema.explain("presenceRequest", body)
    try:
        apischema.check("presenceRequest", body)
        fast_ok = True
    except apischema.InvalidRequest:
        fast_ok = False
    assert fast_ok == (explained == [])


@pytest.mark.parametrize("tokens, message", [
    ('["short"]', "api.tokens[0]: must be a random secret of at least 16 printable characters"),
    ('["with spaces in the token"]', "api.tokens[0]: must be a random secret"),
    ('["aaaaaaaaaaaaaaaaaaaaaaaa"]', "api.tokens[0]: too weak: only 1 different characters"),
    ('["${UNSET_TEST_TOKEN}"]', "environment variable UNSET_TEST_TOKEN is not set"),
])
def test_weak_tokens_are_config_errors(tokens, message):
    text = f"api: {{tokens: {tokens}}}\nservers: [{{snowflake: \"1\", id: a, name: A}}]\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml", ROOT, {})
    shown = str(info.value)
    assert message in shown
    assert "short" not in shown.replace("t.yaml", "") and "aaaaaaaa" not in shown  # the token is never echoed


def test_token_written_in_the_file_gets_a_note():
    text = 'api: {tokens: ["0123456789abcdef0123"]}\nservers: [{snowflake: "1", id: a, name: A}]\n'
    assert any("api.tokens[0] is written in the file" in n for n in load_text(text, "t.yaml", ROOT, {}).notes)
    via_env = load_text(text.replace('"0123456789abcdef0123"', '"${T}"'), "t.yaml", ROOT, {"T": "0123456789abcdef0123"})
    assert via_env.api.tokens == ("0123456789abcdef0123",)
    assert not [n for n in via_env.notes if "api.tokens" in n]
    assert "0123456789abcdef0123" not in repr(via_env)


async def test_token_changes_follow_reload(tmp_path, http, monkeypatch):
    path = tmp_path / "dback.yaml"
    path.write_text(CONFIG)
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)
    await d.start()
    try:
        call = Api(http, d)
        assert (await call("GET", "/api/servers", token=TOKEN_B))[0] == 200
        monkeypatch.setenv("TEST_API_TOKEN_B", "tok-c-new-new-new-0123456")
        with structlog.testing.capture_logs() as logs:
            assert await d.reload() is True
        assert (await call("GET", "/api/servers", token=TOKEN_B))[0] == 403
        assert (await call("GET", "/api/servers", token="tok-c-new-new-new-0123456"))[0] == 200
        assert (await call("GET", "/api/servers", token=TOKEN_A))[0] == 200
        applied = [e for e in logs if e["event"] == "reload.applied"]
        assert applied[0]["changes"] == ["~ api settings changed: tokens and limits apply from the next request"]
        path.write_text(CONFIG.replace('  tokens: ["${TEST_API_TOKEN_A}", "${TEST_API_TOKEN_B}"]\n', ""))
        assert await d.reload() is True
        assert (await call("GET", "/api/servers"))[1] == {"error": api.API_OFF}
    finally:
        await d.stop()


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/docs"])
def test_static_mounts_cannot_hide_under_the_api(path):
    text = f'static: [{{path: "{path}", builtin: true}}]\nservers: [{{snowflake: "1", id: a, name: A}}]\n'
    with pytest.raises(ConfigError, match="static\\[0\\].path: /api/ is the HTTP API's"):
        load_text(text, "t.yaml", ROOT, {})
    load_text(text.replace(path, "/apiary"), "t.yaml", ROOT, {})
