"""The host program's hooks before a socket's server list and before a join: awaited first, failures contained."""
from __future__ import annotations

import asyncio

import pytest
import structlog

from dbackd.daemon import Daemon

from .conftest import RECV_TIMEOUT, Client

CONFIG = {
    "listen": {"host": "127.0.0.1", "port": 0},
    "servers": [{"snowflake": "1", "id": "home", "name": "Home", "default": True,
                 "users": [{"uid": "11", "username": "alice"}]}],
}


@pytest.fixture
async def daemon():
    d = Daemon(CONFIG, watch=False)
    yield d
    await d.stop()


async def opened(http, d: Daemon) -> Client:
    return Client(await http.ws_connect(f"http://127.0.0.1:{d.port}/ws"))


async def test_the_server_list_waits_for_the_hook_and_shows_what_it_changed(daemon, http):
    d = daemon
    answer: dict = {}

    @d.on_get_server_data
    async def servers() -> dict:
        return answer

    @d.before_server_list
    async def fresh() -> None:
        await d.refresh()

    await d.start()
    answer["2"] = {"id": "late", "name": "Late"}  # the providers' answer changes; nothing refreshes it...
    c = await opened(http, d)
    listed = (await c.recv_type("server-list"))["data"]  # ...but the hook does, before the list is sent
    assert listed["2"] == {"id": "late", "name": "Late", "passworded": False}


async def test_the_join_waits_for_the_hook_which_is_given_what_the_client_asked(daemon, http):
    d = daemon
    asked = []

    @d.before_join
    async def fresh(server: str) -> None:
        asked.append(server)
        if len(asked) == 1:  # it lands before the join is answered
            await d.broadcast_presence("home", "12", "idle", username="bob")

    await d.start()
    c = await opened(http, d)
    await c.recv_type("server-list")
    join = await c.connect(" home ")
    assert join["type"] == "server-join" and join["data"]["users"]["12"]["status"] == "idle"
    assert (await c.connect(None))["type"] == "server-join"
    assert asked == ["home", "default"]  # as the protocol normalises it


async def test_a_server_the_join_hook_brings_in_can_be_joined(daemon, http):
    d = daemon
    answer: dict = {}

    @d.on_get_server_data
    async def servers() -> dict:
        return answer

    @d.before_join
    async def fresh(server: str) -> None:
        await d.refresh()

    await d.start()
    c = await opened(http, d)
    assert "2" not in (await c.recv_type("server-list"))["data"]
    answer["2"] = {"id": "late", "name": "Late"}
    join = await c.connect("late")  # no second server-list to an open socket: the join straight away
    assert join["type"] == "server-join" and join["data"]["serverName"] == "Late"


@pytest.mark.parametrize("behaviour", ["raises", "hangs"])
async def test_a_failing_hook_is_logged_and_the_socket_goes_on(daemon, http, behaviour):
    d = daemon
    gate = asyncio.Event()

    async def hook(*args) -> None:
        if behaviour == "raises":
            raise RuntimeError("boom")
        await gate.wait()  # never set: past its timeout

    d.before_server_list(hook, timeout=0.1)
    d.before_join(hook, timeout=0.1)
    await d.start()
    with structlog.testing.capture_logs() as logs:
        c = await opened(http, d)
        assert (await c.recv_type("server-list"))["data"]["1"]["id"] == "home"
        assert (await c.connect("home"))["type"] == "server-join"
    expected = "callback.failed" if behaviour == "raises" else "callback.timeout"
    assert [e["callback"] for e in logs if e["event"] == expected] == ["before_server_list", "before_join"]


async def test_a_slow_hook_holds_up_only_its_own_socket(daemon, http):
    d = daemon
    gate, entered = asyncio.Event(), asyncio.Event()
    slow_once = [True]

    @d.before_server_list(timeout=30)
    async def hook() -> None:
        if slow_once.pop() if slow_once else False:
            entered.set()
            await gate.wait()

    await d.start()
    first = asyncio.ensure_future(opened(http, d))
    await asyncio.wait_for(entered.wait(), RECV_TIMEOUT)
    other = await opened(http, d)  # served while the first socket's hook waits
    assert (await other.recv_type("server-list"))["data"]
    gate.set()
    slow = await first
    assert (await slow.recv_type("server-list"))["data"]


async def test_stop_ends_a_hook_that_is_still_waiting(daemon, http):
    d = daemon
    entered = asyncio.Event()

    @d.before_server_list(timeout=60)
    async def hook() -> None:
        entered.set()
        await asyncio.Event().wait()

    await d.start()
    waiting = asyncio.ensure_future(opened(http, d))
    await asyncio.wait_for(entered.wait(), RECV_TIMEOUT)
    await asyncio.wait_for(d.stop(), RECV_TIMEOUT)  # the hook is cancelled, the socket closed
    assert d.callbacks.running == 0
    c = await waiting
    await asyncio.wait_for(c.ws.receive(), RECV_TIMEOUT)


def test_hooks_register_like_the_other_callbacks(daemon):
    async def fn(*args):
        return None

    assert daemon.before_server_list(fn) is fn
    assert daemon.before_join(timeout=3)(fn) is fn
    assert daemon.callbacks.registered["before_server_list"].timeout == 10.0
    assert daemon.callbacks.registered["before_join"].timeout == 3.0
    with pytest.raises(TypeError, match="async function"):
        daemon.before_join(lambda server: None)
