"""The command line, including the real `dbackd` process end to end."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import aiohttp

from dbackd import __version__
from dbackd.cli import main

from .conftest import EXAMPLE, RECV_TIMEOUT, ROOT, serving


def test_check_ok(capsys):
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "servers  4" in out
    assert "dworld" in out and "21 users" in out


def test_check_embedded_default(capsys):
    assert main(["check"]) == 0
    assert "<embedded default>: OK" in capsys.readouterr().out


def test_check_broken(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('servers:\n  - {snowflake: "1", id: a, name: A, colour: red}\n')
    assert main(["check", "-c", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:38: servers[0].colour: unknown key `colour`" in err
    assert "1 problem found" in err


def test_check_missing_file(capsys):
    assert main(["check", "-c", "/nonexistent.yaml"]) == 1
    assert "/nonexistent.yaml:1:1: no such file" in capsys.readouterr().err


def test_run_refuses_broken_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: []\n")
    assert main(["-c", str(bad)]) == 2
    assert "should be non-empty" in capsys.readouterr().err


def test_schema_command(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((ROOT / "schemas" / "dback.schema.json").read_text())


def test_version_module_entry():
    out = subprocess.run([sys.executable, "-m", "dbackd", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"dbackd {__version__}"


async def test_real_process_serves_the_example_and_stops_on_sigterm():
    async with serving(EXAMPLE) as (proc, url):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "ws") as ws:
                servers = json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)
                assert servers["type"] == "server-list" and len(servers["data"]) == 4
                await ws.send_json({"type": "connect", "data": {"server": "dworld"}})
                join = json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)
                assert join["type"] == "server-join" and len(join["data"]["users"]) == 4
                proc.send_signal(signal.SIGTERM)
                closing = await ws.receive(timeout=RECV_TIMEOUT)
                while closing.type == aiohttp.WSMsgType.TEXT:  # the classic simulation may speak first
                    assert json.loads(closing.data)["type"] in ("presence", "message")
                    closing = await ws.receive(timeout=RECV_TIMEOUT)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        rest = (await proc.stderr.read()).decode()
        events = [json.loads(l)["event"] for l in rest.splitlines() if l.startswith("{")]
        assert "socket.joined" in events and events[-1] == "daemon.stopped"


def test_logs_redact_secrets():
    import io

    import structlog

    from dbackd.ops import logs

    stream = io.StringIO()
    logs.configure("info", "json", stream)
    structlog.get_logger("t").info("auth", discord_token="abc.def", password="hunter2", user="nelly")
    line = json.loads(stream.getvalue())
    assert line["discord_token"] == "[redacted]" and line["password"] == "[redacted]" and line["user"] == "nelly"
    assert "hunter2" not in stream.getvalue() and "abc.def" not in stream.getvalue()


async def test_sighup_reloads_a_real_process(tmp_path):
    config = tmp_path / "dback.yaml"
    config.write_text('servers: [{snowflake: "1", id: a, name: A, default: true, users: [{uid: "2", username: b}]}]\n')
    async with serving(config, "--no-watch") as (proc, url):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "ws") as ws:
                await ws.receive(timeout=RECV_TIMEOUT)
                await ws.send_json({"type": "connect", "data": {"server": "a"}})
                await ws.receive(timeout=RECV_TIMEOUT)
                config.write_text(config.read_text().replace("username: b}", "username: b, status: dnd}"))
                proc.send_signal(signal.SIGHUP)
                presence = json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)
                assert presence == {"type": "presence", "server": "1", "data": {"uid": "2", "status": "dnd"}}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_tail_prints_frames(start_daemon, capsys):
    from dbackd.clients import tail_frames

    d = await start_daemon(EXAMPLE)
    task = asyncio.ensure_future(tail_frames(f"ws://127.0.0.1:{d.port}/ws", "docs", None))

    async def joined() -> None:
        while not d.hub.members.get("482241773318701056"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(joined(), RECV_TIMEOUT)
    await d.stop()  # closes the socket: tail ends
    assert await asyncio.wait_for(task, RECV_TIMEOUT) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [m["type"] for m in lines] == ["server-list", "server-join"]
    assert lines[1]["data"]["serverName"] == "Docs (WIP)"
