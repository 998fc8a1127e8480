"""Shared fixtures: a real daemon on a loopback port and real WebSocket clients."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import aiohttp
import pytest
import structlog

from dbackd.ops import logs

from dbackd.config import load_file, load_text
from dbackd.daemon import Daemon
from dbackd.sources.simulation import ManualClock

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dback.yaml"
RECV_TIMEOUT = 5.0  # an upper bound for a frame that must come; never a wait for luck


class Client:
    """A WebSocket client that speaks in protocol messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    async def recv(self) -> dict:
        msg = await asyncio.wait_for(self.ws.receive(), RECV_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
        return json.loads(msg.data)

    async def recv_type(self, kind: str) -> dict:
        message = await self.recv()
        assert message["type"] == kind, message
        return message

    async def recv_renamed(self) -> dict:
        """A rename as the d-zone frontend needs it: the actor removed, then added with every field.
        Returns the second message."""
        gone, back = await self.recv(), await self.recv()
        assert gone["type"] == back["type"] == "presence", (gone, back)
        assert gone["data"]["delete"] is True and gone["data"]["uid"] == back["data"]["uid"], (gone, back)
        assert set(back["data"]) == {"uid", "status", "username", "roleColor"}, back
        return back

    async def send(self, message: Any) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def connect(self, server: Any = "default", **extra: Any) -> dict:
        await self.send({"type": "connect", "data": {"server": server, **extra}})
        return await self.recv()

    async def assert_quiet(self) -> None:
        """Assert nothing else was sent: the server answers frames in order, so a probe's
        reply arrives after anything it sent before it."""
        await self.send({"type": "probe"})
        message = await self.recv()
        assert message == {"type": "error", "data": {"message": "Unknown event type"}}, message


async def read_until(proc, event: str) -> dict:
    """Read a dbackd process's JSON log lines until `event` appears."""
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert line, f"the process ended before logging {event}"
        record = json.loads(line)
        if record["event"] == event:
            return record


@contextlib.asynccontextmanager
async def serving(config: Any, *args: str, env: Optional[dict] = None):
    """A real `dbackd -c CONFIG --port 0` process: yields (process, its http:// URL once listening)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbackd", "-c", str(config), "--port", "0", "--log-format", "json", *args,
        stderr=asyncio.subprocess.PIPE, env=None if env is None else {**os.environ, **env},
    )
    try:
        yield proc, (await read_until(proc, "daemon.started"))["url"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def start_daemon():
    """start_daemon(config_or_path=None, text=None, clock=None) -> a started Daemon on a free loopback port.

    The simulation runs on a ManualClock (the given one, or a fresh one): time stands still
    unless the test moves it, so simulated events never race a test's own expectations.
    """
    daemons: list[Daemon] = []

    async def start(config: Any = EXAMPLE, text: Optional[str] = None, clock: Optional[ManualClock] = None) -> Daemon:
        if text is not None:
            loaded = load_text(text, "test.yaml", ROOT)
        elif isinstance(config, (str, Path)):
            loaded = load_file(config)
        else:
            loaded = config
        d = Daemon(loaded, host="127.0.0.1", port=0, watch=text is None and isinstance(config, (str, Path)),
                   clock=clock or ManualClock())
        await d.start()
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        await d.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def open_client(http):
    """open_client(daemon, path="/ws") -> Client with its server-list already read."""
    clients: list[Client] = []

    async def open_(daemon: Daemon, path: str = "/ws", read_list: bool = True) -> Client:
        ws = await http.ws_connect(f"http://127.0.0.1:{daemon.port}{path}")
        client = Client(ws)
        clients.append(client)
        if read_list:
            await client.recv_type("server-list")
        return client

    yield open_
    for c in clients:
        await c.ws.close()


@pytest.fixture
def captured_logs():
    """Every log line the daemon writes during the test, as JSON text."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("debug", "json", stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def events(stream: io.StringIO, name: str = "oauth.verified") -> list[dict]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]
