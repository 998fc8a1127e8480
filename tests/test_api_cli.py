"""`dbackd say` and `dbackd presence` against a real daemon's HTTP API."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from dbackd.cli import main

from .conftest import RECV_TIMEOUT

TOKEN = "cli-token-0123456789abcdef"
CONFIG = f"""\
api: {{tokens: ["{TOKEN}"]}}
servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users: [{{uid: "11", username: alice}}]
"""


@pytest.fixture
async def live(start_daemon, open_client, monkeypatch):
    monkeypatch.setenv("DBACKD_API_TOKEN", TOKEN)
    d = await start_daemon(text=CONFIG)
    c = await open_client(d)
    assert (await c.connect("home"))["type"] == "server-join"
    return d, c, f"http://127.0.0.1:{d.port}"


async def cli(*args: str) -> int:
    # The CLI runs its own event loop: give it a thread, as a separate process would have.
    return await asyncio.wait_for(asyncio.to_thread(main, list(args)), RECV_TIMEOUT)


async def test_say(live, capsys):
    d, c, url = live
    assert await cli("say", "home", "11", "hello there", "--channel", "7", "--url", url) == 0
    assert await c.recv() == {"type": "message", "server": "1",
                              "data": {"uid": "11", "message": "hello there", "channel": "7"}}
    assert capsys.readouterr().err == ""


async def test_presence(live):
    d, c, url = live
    assert await cli("presence", "home", "11", "idle", "--url", url) == 0
    assert (await c.recv())["data"] == {"uid": "11", "status": "idle"}
    assert await cli("presence", "1", "13", "dnd", "--username", "dave", "--color", "#123456", "--url", url) == 0
    assert (await c.recv())["data"] == {"uid": "13", "status": "dnd", "username": "dave", "roleColor": "#123456"}
    assert await cli("presence", "home", "13", "offline", "--delete", "--url", url) == 0
    assert (await c.recv())["data"] == {"uid": "13", "status": "offline", "delete": True}


@pytest.mark.parametrize("args, message", [
    (("presence", "home", "11", "away"), 'dbackd presence: 400: status: "away" is not one of'),
    (("presence", "home", "11", "idle", "--color", "red"), "dbackd presence: 400: roleColor: must be a colour"),
    (("presence", "nowhere", "11", "idle"), "dbackd presence: 404: no server 'nowhere'"),
    (("say", "home", "99", "hi"), "dbackd say: 404: user 99 is not in server home"),
    (("presence", "home", "11", "offline", "--delete"), "dbackd presence: 409: user 11 is declared"),
])
async def test_refusals_print_the_daemons_reason(live, capsys, args, message):
    d, c, url = live
    assert await cli(*args, "--url", url) == 1
    assert capsys.readouterr().err.startswith(message)
    await c.assert_quiet()


async def test_token_sources(live, capsys, tmp_path, monkeypatch):
    d, c, url = live
    monkeypatch.delenv("DBACKD_API_TOKEN")
    assert await cli("say", "home", "11", "hi", "--url", url) == 2
    assert "no API token: set DBACKD_API_TOKEN or give --token-file" in capsys.readouterr().err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert await cli("say", "home", "11", "from a file", "--token-file", str(token_file), "--url", url) == 0
    assert (await c.recv())["data"]["message"] == "from a file"
    token_file.write_text("wrong-token-0123456789")
    assert await cli("say", "home", "11", "hi", "--token-file", str(token_file), "--url", url) == 1
    assert "403: this token is not allowed" in capsys.readouterr().err
    assert await cli("say", "home", "11", "hi", "--token-file", str(tmp_path / "missing"), "--url", url) == 2
    await c.assert_quiet()


async def test_unreachable_daemon(live, capsys, unused_tcp_port):
    assert await cli("say", "home", "11", "hi", "--url", f"http://127.0.0.1:{unused_tcp_port}") == 1
    assert "dbackd say: cannot reach" in capsys.readouterr().err


async def test_as_a_real_process(live):
    d, c, url = live
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbackd", "presence", "home", "11", "dnd", "--url", url,
        env={**os.environ, "DBACKD_API_TOKEN": TOKEN}, stderr=subprocess.PIPE)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert (await c.recv())["data"] == {"uid": "11", "status": "dnd"}
