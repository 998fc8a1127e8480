"""The Python API: a Daemon inside a host program's loop, its broadcasts, reads and callbacks."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest
import structlog

import dbackd
from dbackd import DeclaredUser, InvalidRequest, UnknownServer, UnknownUser
from dbackd.fanout import protocol
from dbackd.daemon import Daemon

from .conftest import RECV_TIMEOUT, ROOT, Client

CONFIG = {
    "listen": {"host": "127.0.0.1", "port": 0},
    "servers": [
        {"snowflake": "1", "id": "home", "name": "Home", "default": True,
         "users": [{"uid": "11", "username": "alice", "roleColor": "#111111"}, {"uid": "12", "username": "bob"}]},
        {"snowflake": "2", "id": "priv", "name": "Private", "passworded": True,
         "users": [{"uid": "21", "username": "carol"}]},
    ],
}


@pytest.fixture
async def daemon():
    """A Daemon built from a dict, not yet started (so callbacks can be registered first)."""
    d = Daemon(CONFIG, watch=False)
    yield d
    await d.stop()


async def client(http, d: Daemon, server=None) -> Client:
    c = Client(await http.ws_connect(f"http://127.0.0.1:{d.port}/ws"))
    await c.recv_type("server-list")
    if server is not None:
        assert (await c.connect(server))["type"] == "server-join"
    return c


def live_tasks() -> set:
    return {t for t in asyncio.all_tasks() if not t.done()} - {asyncio.current_task()}


# -- the host program's loop ------------------------------------------------------------

async def test_in_a_host_loop_start_broadcast_stop_without_leaking_tasks():
    before = live_tasks()
    d = dbackd.Daemon(CONFIG, watch=False)
    await d.start()
    async with aiohttp.ClientSession() as http:
        a, b = await client(http, d, "home"), await client(http, d, "home")
        await d.broadcast_presence("1", "11", "dnd")
        await d.broadcast_presence("home", 13, "online", username="dave", role_color="#ABCDEF")
        await d.broadcast_message("home", "13", "hello", "5")
        await d.broadcast_client_id_update("1", "400000000000000001")
        expected = [
            {"type": "presence", "server": "1", "data": {"uid": "11", "status": "dnd"}},
            {"type": "presence", "server": "1", "data": {"uid": "13", "status": "online", "username": "dave",
                                                        "roleColor": "#abcdef"}},
            {"type": "message", "server": "1", "data": {"uid": "13", "message": "hello", "channel": "5"}},
            {"type": "update-clientid", "server": "1", "data": {"clientId": "400000000000000001"}},
        ]
        for c in (a, b):
            assert [await c.recv() for _ in expected] == expected
        late = await client(http, d)
        join = (await late.connect("home"))["data"]
        assert join["users"]["11"]["status"] == "dnd" and join["users"]["13"]["username"] == "dave"
        assert join["clientId"] == "400000000000000001"
        await d.stop()
        closing = await a.ws.receive(timeout=RECV_TIMEOUT)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    await asyncio.sleep(0)
    assert live_tasks() == before


async def test_as_an_async_context_manager_on_a_file():
    async with Daemon(ROOT / "examples" / "minimal.yaml", port=0, watch=False) as d:
        assert [s["id"] for s in d.servers()] == ["home"]
    assert not d.serving


async def test_bad_input_raises_and_sends_nothing(daemon, http):
    d = daemon
    await d.start()
    c = await client(http, d, "home")
    cases = [
        (d.broadcast_presence("home", "11", "away"), InvalidRequest, 'status: "away" is not one of'),
        (d.broadcast_presence("home", "11", "idle", role_color="red"), InvalidRequest, "roleColor: must be a colour"),
        (d.broadcast_presence("home", "eleven", "idle"), InvalidRequest, "uid: must be a Discord id"),
        (d.broadcast_presence("home", "11", "idle", username=""), InvalidRequest, "username: '' should be non-empty"),
        (d.broadcast_presence("nowhere", "11", "idle"), UnknownServer, "no server 'nowhere'"),
        (d.broadcast_presence("home", "99", "idle"), UnknownUser, "user 99 is not in server home (give a username"),
        (d.broadcast_presence("home", "99", "idle", delete=True), UnknownUser, "user 99 is not in server home"),
        (d.broadcast_presence("home", "11", "offline", delete=True), DeclaredUser, "user 11 is declared"),
        (d.broadcast_message("home", "99", "hi", "5"), UnknownUser, "user 99 is not in server home"),
        (d.broadcast_message("home", "11", "", "5"), InvalidRequest, "message: '' should be non-empty"),
        (d.broadcast_message("nowhere", "11", "hi", "5"), UnknownServer, "no server"),
        (d.broadcast_client_id_update("home", "abc"), InvalidRequest, "must be a Discord id"),
        (d.broadcast_client_id_update("nowhere", "123"), UnknownServer, "no server"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as info:
            await call
        assert str(info.value).strip("'\"").startswith(message), info.value
        assert isinstance(info.value, (ValueError, LookupError))
    await c.assert_quiet()
    assert d.users("home")[0]["status"] == "online"


async def test_snapshots_are_copies(daemon):
    d = daemon
    assert d.health()["config"] == "<python data>"
    servers, users = d.servers(), d.users("home")
    assert servers[0] == {"snowflake": "1", "id": "home", "name": "Home", "default": True, "passworded": False,
                          "users": 2, "clients": 0}
    assert users[0] == {"uid": "11", "username": "alice", "status": "online", "roleColor": "#111111", "declared": True}
    servers[0]["name"] = "changed"
    users[0]["status"] = "dnd"
    users.clear()
    assert d.servers()[0]["name"] == "Home" and d.users("1")[0]["status"] == "online"
    with pytest.raises(UnknownServer):
        d.users("nowhere")


def test_import_dbackd_stays_light():
    code = "import sys, dbackd; print('aiohttp' in sys.modules, 'jsonschema' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- data providers ---------------------------------------------------------------------

async def test_user_provider_at_start_and_on_refresh(daemon, http):
    d = daemon
    answer = {"home": {"31": {"username": "bot-one", "status": "idle"}, "11": {"username": "Alice!"}}}

    @d.on_get_user_data
    async def users(server: str) -> dict:
        return answer.get({"1": "home", "2": "priv"}[server], {})

    await d.start()
    c = await client(http, d)
    joined = (await c.connect("home"))["data"]["users"]
    assert joined["31"] == {"uid": "31", "username": "bot-one", "status": "idle", "roleColor": "#ffffff"}
    assert joined["11"]["username"] == "Alice!"  # a uid the config declares takes the provider's fields
    assert {u["uid"]: u["declared"] for u in d.users("home")} == {"11": True, "12": True, "31": True}
    answer["home"] = {"32": {"username": "bot-two"}}
    assert await d.refresh() is True
    got = [(await c.recv())["data"] for _ in range(4)]
    # Back to the config's declaration (the provider's user had the default colour).
    assert {"uid": "11", "status": "online", "username": "alice", "roleColor": "#111111"} in got  # renamed: re-added
    assert {"uid": "31", "status": "idle", "delete": True} in got
    assert {"uid": "32", "status": "online", "username": "bot-two", "roleColor": "#ffffff"} in got
    await c.assert_quiet()


async def test_bad_provider_data_is_rejected_and_changes_nothing(daemon, http):
    d = daemon
    answer: dict = {"31": {"username": "bot-one"}}

    @d.on_get_user_data
    async def users(server: str) -> dict:
        return answer if server == "1" else {}

    await d.start()
    c = await client(http, d, "home")
    before = d.users("home")
    for bad, problem in [
        ({"31": {"username": "bot-one", "status": "away"}}, 'server home, user 31: status: "away" is not one of'),
        ({"x1": {"username": "bot"}}, "server home, user x1: uid: must be a Discord id"),
        ({"31": {"username": "bot", "colour": "red"}}, "server home, user 31: colour: unknown key `colour`"),
        (["not", "users"], None),
    ]:
        answer = bad
        with structlog.testing.capture_logs() as logs:
            assert await d.refresh() is False
        events = {e["event"]: e for e in logs}
        assert "provider.rejected" in events
        if problem:
            assert any(err.startswith(problem) for err in events["provider.rejected"]["errors"]), events
        else:
            assert events["callback.bad_answer"]["callback"] == "on_get_user_data"
    assert d.users("home") == before
    await c.assert_quiet()


async def test_server_provider_adds_and_overrides_servers(daemon, http):
    d = daemon
    answer = {"1": {"id": "home", "name": "Home (from the bot)"}, "3": {"id": "bots", "name": "Bots", "default": False}}

    @d.on_get_server_data(timeout=2)
    async def servers() -> dict:
        return answer

    @d.on_get_user_data
    async def users(server: str) -> dict:
        return {"33": {"username": "botty"}} if server == "3" else {}

    await d.start()
    assert [(s["id"], s["name"], s["users"]) for s in d.servers()] == [
        ("home", "Home (from the bot)", 2), ("priv", "Private", 1), ("bots", "Bots", 1)]
    c = await client(http, d)
    assert (await c.connect("bots"))["data"]["users"]["33"]["username"] == "botty"
    answer = {"3": {"id": "home", "name": "Clash"}}  # an id the config already uses
    with structlog.testing.capture_logs() as logs:
        assert await d.refresh() is False
    rejected = next(e for e in logs if e["event"] == "provider.rejected")
    assert any("duplicate server id 'home'" in err for err in rejected["errors"])
    assert [s["id"] for s in d.servers()] == ["home", "priv", "bots"]
    await c.assert_quiet()


async def test_a_provider_that_raises_or_hangs_leaves_the_config(daemon, http):
    d = daemon
    gate = asyncio.Event()

    @d.on_get_user_data(timeout=0.1)
    async def users(server: str) -> dict:
        if server == "1":
            raise RuntimeError("discord is down")
        await gate.wait()  # never set: hangs past its timeout
        return {}

    with structlog.testing.capture_logs() as logs:
        await d.start()  # starts anyway, with the config's declaration
    failed = [e for e in logs if e["event"] == "callback.failed"]
    assert failed and failed[0]["callback"] == "on_get_user_data" and "discord is down" in failed[0]["error"]
    assert isinstance(failed[0]["exc_info"], RuntimeError)
    assert any(e["event"] == "callback.timeout" for e in logs)
    assert any(e["event"] == "provider.rejected" for e in logs)
    assert [u["uid"] for u in d.users("home")] == ["11", "12"]
    c = await client(http, d)
    assert (await c.connect("home"))["type"] == "server-join"


async def test_provider_overlay_survives_a_reload(tmp_path, http):
    path = tmp_path / "dback.yaml"
    path.write_text('servers: [{snowflake: "1", id: home, name: Home, default: true, users: [{uid: "11", username: a}]}]\n')
    d = Daemon(path, host="127.0.0.1", port=0, watch=False)

    @d.on_get_user_data
    async def users(server: str) -> dict:
        return {"31": {"username": "bot"}}

    await d.start()
    try:
        c = await client(http, d, "home")
        path.write_text(path.read_text().replace("name: Home", "name: Home2"))
        assert await d.reload() is True
        assert d.servers()[0]["name"] == "Home2"
        assert [u["uid"] for u in d.users("home")] == ["11", "31"]
        await c.assert_quiet()  # the provided user was not deleted and re-added
        # A file that clashes with what the provider declares is refused like a broken file.
        path.write_text(path.read_text().replace('username: a}', 'username: a}, {uid: "31", username: b, status: x}'))
        assert await d.reload() is False
    finally:
        await d.stop()


# -- the OAuth validator ---------------------------------------------------------------

OAUTH = {"discordToken": "tkn", "discordUser": {"id": "80351110224678912", "username": "nelly"}}


async def test_validator_decides(daemon, http):
    d = daemon
    seen = []

    @d.on_validate_discord_user
    async def validate(token: str, user: dict, server: str) -> bool:
        seen.append((token, user["username"], server))
        return user["username"] == "nelly"

    await d.start()
    c = await client(http, d)
    assert (await c.connect("priv", **OAUTH))["type"] == "server-join"
    other = {"discordToken": "tkn", "discordUser": {"id": "1", "username": "mallory"}}
    assert await c.connect("priv", **other) == protocol.error(protocol.AUTH_FAILED)
    assert seen == [("tkn", "nelly", "2"), ("tkn", "mallory", "2")]


@pytest.mark.parametrize("behaviour", ["raises", "hangs", "not a bool"])
async def test_validator_failure_is_auth_failed_and_harms_nobody_else(daemon, http, behaviour):
    d = daemon
    gate = asyncio.Event()

    @d.on_validate_discord_user(timeout=0.2)
    async def validate(token: str, user: dict, server: str):
        if behaviour == "raises":
            raise ValueError("boom")
        if behaviour == "hangs":
            await gate.wait()
        return "yes"

    await d.start()
    waiting, bystander = await client(http, d), await client(http, d)
    with structlog.testing.capture_logs() as logs:
        await waiting.send({"type": "connect", "data": {"server": "priv", **OAUTH}})
        # While the validator runs, another client is served as usual.
        assert (await bystander.connect("home"))["type"] == "server-join"
        await d.broadcast_presence("home", "11", "idle")
        assert (await bystander.recv())["data"] == {"uid": "11", "status": "idle"}
        assert await waiting.recv() == protocol.error(protocol.AUTH_FAILED)
    event = {"raises": "callback.failed", "hangs": "callback.timeout", "not a bool": "callback.bad_answer"}[behaviour]
    assert [e["callback"] for e in logs if e["event"] == event] == ["on_validate_discord_user"]
    assert "tkn" not in json.dumps([{k: str(v) for k, v in e.items()} for e in logs])
    assert (await waiting.connect("home"))["type"] == "server-join"  # the socket still works


# -- the client-id provider -------------------------------------------------------------

async def test_client_id_provider(daemon, http):
    d = daemon
    ids = {"1": "500000000000000001"}

    @d.on_get_client_id
    async def client_id(server: str):
        return ids.get(server)

    await d.start()
    first = await client(http, d)
    assert (await first.connect("home"))["data"]["clientId"] == "500000000000000001"
    ids["1"] = "500000000000000002"
    second = await client(http, d)
    assert (await second.connect("home"))["data"]["clientId"] == "500000000000000002"
    assert await first.recv() == {"type": "update-clientid", "server": "1", "data": {"clientId": "500000000000000002"}}
    ids.clear()  # None: the join keeps the id the world has, and nobody is told anything
    assert (await second.connect("home"))["data"]["clientId"] == "500000000000000002"
    await first.assert_quiet()


@pytest.mark.parametrize("behaviour", ["raises", "hangs", "bad answer"])
async def test_client_id_provider_failure_keeps_the_join(daemon, http, behaviour):
    d = daemon
    gate = asyncio.Event()

    @d.on_get_client_id(timeout=0.1)
    async def client_id(server: str):
        if behaviour == "raises":
            raise KeyError(server)
        if behaviour == "hangs":
            await gate.wait()
        return "not-digits"

    await d.start()
    await d.broadcast_client_id_update("home", "600000000000000001")
    c = await client(http, d)
    join = await c.connect("home")
    assert join["type"] == "server-join" and join["data"]["clientId"] == "600000000000000001"


# -- the static hook --------------------------------------------------------------------

async def test_static_hook(daemon, http, tmp_path):
    d = daemon
    page = tmp_path / "page.html"
    page.write_text("<p>from a file</p>")
    gate = asyncio.Event()

    @d.on_static_request(timeout=0.2)
    async def static(path: str):
        if path == "/hello.txt":
            return "text/plain; charset=utf-8", "hello from the host"
        if path == "/raw":
            return "application/octet-stream", b"\x00\x01"
        if path == "/file":
            return "text/html", page
        if path == "/broken":
            raise OSError("disk on fire")
        if path == "/slow":
            await gate.wait()
        if path == "/nonsense":
            return 42
        return None

    await d.start()
    base = f"http://127.0.0.1:{d.port}"

    async def get(path: str):
        async with http.get(base + path) as r:
            return r.status, r.headers.get("Content-Type"), await r.read()

    assert await get("/hello.txt") == (200, "text/plain; charset=utf-8", b"hello from the host")
    assert await get("/raw") == (200, "application/octet-stream", b"\x00\x01")
    assert await get("/file") == (200, "text/html", b"<p>from a file</p>")
    status, _, body = await get("/")
    assert status == 200 and b"dbackd" in body  # None falls through to the static files
    assert (await get("/missing.js"))[0] == 404
    with structlog.testing.capture_logs() as logs:
        assert (await get("/broken"))[0] == 500
        assert (await get("/slow"))[0] == 500
        assert (await get("/nonsense"))[0] == 500
    assert [e["event"] for e in logs if e["event"].startswith("callback.")] == [
        "callback.failed", "callback.timeout", "callback.bad_answer"]
    async with http.get(base + "/api/version") as r:  # fixed routes are not the hook's
        assert r.status == 200


# -- registration ------------------------------------------------------------------------

def test_callbacks_must_be_async(daemon):
    def plain(server):
        return {}

    with pytest.raises(TypeError, match="async function"):
        daemon.on_get_user_data(plain)
    async def fine(server):
        return None

    with pytest.raises(ValueError, match="timeout"):
        daemon.on_get_client_id(timeout=0)(fine)


def test_registration_forms(daemon):
    async def fn(*args):
        return None

    assert daemon.on_get_client_id(fn) is fn
    assert daemon.on_static_request(timeout=3)(fn) is fn
    assert daemon.callbacks.registered["on_static_request"].timeout == 3.0
    assert daemon.callbacks.registered["on_get_client_id"].timeout == 2.0


async def test_stop_cancels_callbacks_still_running(daemon, http):
    d = daemon
    started, gate = asyncio.Event(), asyncio.Event()

    @d.on_static_request(timeout=30)
    async def static(path: str):
        started.set()
        await gate.wait()

    before = live_tasks()
    await d.start()
    request = asyncio.ensure_future(http.get(f"http://127.0.0.1:{d.port}/x"))
    await asyncio.wait_for(started.wait(), RECV_TIMEOUT)
    await d.stop()
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    await asyncio.sleep(0)
    assert d.callbacks.running == 0
    assert live_tasks() <= before


# -- the example ---------------------------------------------------------------------------

def test_embed_example_runs():
    script = ROOT / "examples" / "embed.py"
    proc = subprocess.run([sys.executable, str(script), "--duration", "0.4", "--interval", "0.05", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[0] == "provider.applied" and "daemon.started" in names and names[-1] == "daemon.stopped"
    done = next(e for e in events if e["event"] == "embed.done")
    assert done["moves"] >= 2 and set(done["statuses"]) == {"200000000000000001", "200000000000000002",
                                                             "200000000000000003"}


async def test_a_bad_answer_never_logs_a_provided_servers_password(daemon):
    d = daemon
    secret = "SECRET-provided-password-91c"

    @d.on_get_server_data(timeout=2)
    async def servers():
        return [{"snowflake": "9", "id": "x", "name": "X", "passworded": True, "password": secret}, 5]

    @d.on_get_client_id
    async def client_id(server: str):
        return {"password": secret}

    with structlog.testing.capture_logs() as logs:
        await d.start()
        await d.refresh()
    assert any(e["event"] in ("provider.rejected", "callback.bad_answer") for e in logs)
    assert secret not in repr(logs)
