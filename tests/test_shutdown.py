"""Graceful shutdown: a real `dbackd` process under SIGTERM, and services that misbehave on stop."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp

from dbackd import daemon as daemon_module
from dbackd.config import load_file, with_overrides
from dbackd.core.lifecycle import Listener

from .conftest import EXAMPLE, RECV_TIMEOUT, read_until, serving
from .test_notify import FakeNotifySocket

CLIENTS = 100


async def test_sigterm_closes_100_clients_with_1001_and_exits_0():
    notify = FakeNotifySocket()
    try:
        async with serving(EXAMPLE, env={"NOTIFY_SOCKET": notify.env_value}) as (proc, base):
            assert (await notify.recv())["READY"] == "1"
            url = base + "ws"
            async with aiohttp.ClientSession() as http:
                sockets = await asyncio.gather(*(http.ws_connect(url) for _ in range(CLIENTS)))
                for i, ws in enumerate(sockets):
                    assert json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)["type"] == "server-list"
                    if i % 2 == 0:  # half of them joined, half only looking at the list
                        await ws.send_json({"type": "connect", "data": {"server": "dworld"}})
                        assert json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)["type"] == "server-join"

                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                closes = await asyncio.gather(*(ws.receive(timeout=RECV_TIMEOUT) for ws in sockets))
                for msg in closes:
                    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                    assert (msg.data, msg.extra) == (1001, "server shutting down")
                assert await asyncio.wait_for(proc.wait(), 10) == 0
                elapsed = time.monotonic() - t0
                for ws in sockets:
                    await ws.close()
            assert elapsed < 5.0, f"took {elapsed:.1f}s to stop"
            assert (await notify.recv())["STOPPING"] == "1"
            lines = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines() if line.startswith("{")]
            stopped = lines[-1]
            assert stopped["event"] == "daemon.stopped"
            assert stopped["closed_connections"] == CLIENTS
            assert stopped["frames_sent"] == CLIENTS + CLIENTS // 2
            assert stopped["uptime_seconds"] > 0
            assert sum(1 for line in lines if line["event"] == "daemon.stopped") == 1
            assert not [line for line in lines if line["level"] in ("warning", "error")], lines
    finally:
        notify.close()


class Recorder:
    def __init__(self, log: list, name: str, fail: bool = False, hang: bool = False):
        self.log, self.name, self.fail, self.hang = log, name, fail, hang

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise RuntimeError("broken")


async def test_a_failing_or_hanging_service_does_not_stop_the_shutdown(open_client, monkeypatch):
    log: list[str] = []
    d = daemon_module.Daemon(with_overrides(load_file(EXAMPLE), host="127.0.0.1", port=0))
    monkeypatch.setattr(d.services, "stop_timeout", 0.05)
    for service in (Recorder(log, "a"), Recorder(log, "hangs", hang=True), Recorder(log, "fails", fail=True)):
        d.add_service(service)
    await d.start()
    client = await open_client(d)
    await d.stop()
    assert log == ["start a", "start hangs", "start fails", "stop fails", "stop hangs", "stop a"]
    closing = await client.ws.receive(timeout=RECV_TIMEOUT)
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    await d.stop()  # a second stop is harmless


async def test_listeners_hear_the_moments_in_order():
    heard: list[str] = []

    class Ear(Listener):
        def on_ready(self): heard.append("ready")
        def on_stopping(self): heard.append("stopping")
        def on_reload_started(self): heard.append("reload")
        def on_reload_finished(self, ok, error): heard.append(f"reloaded ok={ok} error={error}")

    class Broken(Listener):
        def on_reload_started(self): raise ValueError("listener bug")

    d = daemon_module.Daemon(with_overrides(load_file(EXAMPLE), host="127.0.0.1", port=0))
    d.listen(Broken())
    d.listen(Ear())
    await d.start()
    d.moments.reload_started()
    d.moments.reload_finished(False, "bad")
    await d.stop()
    assert heard == ["ready", "reload", "reloaded ok=False error=bad", "stopping"]


async def test_sigint_stops_as_sigterm_does():
    async with serving(EXAMPLE) as (proc, url):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "ws") as ws:
                await ws.receive(timeout=RECV_TIMEOUT)
                proc.send_signal(signal.SIGINT)
                closing = await ws.receive(timeout=RECV_TIMEOUT)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert json.loads((await proc.stderr.read()).decode().splitlines()[-1])["event"] == "daemon.stopped"


async def test_a_taken_port_exits_1_with_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd", "--port", str(taken.getsockname()[1]), "--log-format", "json",
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line.startswith("{")]
    assert events == ["daemon.listen_failed"]


async def test_a_fifo_in_place_of_the_config_neither_stops_reloads_nor_shutdown(tmp_path):
    path = tmp_path / "dback.yaml"
    path.write_text(EXAMPLE.read_text())
    async with serving(path) as (proc, _):
        os.unlink(path)
        os.mkfifo(path)
        proc.send_signal(signal.SIGHUP)
        failed = await read_until(proc, "reload.failed")  # refused at once, not a reader waiting for good
        assert "not a regular file (a FIFO)" in failed["errors"][0]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_a_socket_that_opens_while_the_sockets_are_being_closed_gets_1001_too(start_daemon):
    d = await start_daemon()
    async with aiohttp.ClientSession() as http:
        early = await http.ws_connect(f"http://127.0.0.1:{d.port}/ws")
        await early.receive(timeout=RECV_TIMEOUT)  # server-list
        closing = asyncio.ensure_future(d.hub.close_all(1001, "server shutting down"))
        await asyncio.sleep(0)  # shutdown has begun closing the sockets it knows
        late = await http.ws_connect(f"http://127.0.0.1:{d.port}/ws")  # its upgrade was under way
        for ws in (early, late):
            msg = await ws.receive(timeout=RECV_TIMEOUT)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        await closing
