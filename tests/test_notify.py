"""sd_notify over a fake notify socket: a real AF_UNIX datagram socket the test reads."""
from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest

from dbackd.config import load_file, with_overrides
from dbackd.daemon import Daemon
from dbackd.ops.notify import Notifier, NotifyService, monotonic_usec, socket_address, watchdog_interval

from .conftest import EXAMPLE, RECV_TIMEOUT


class FakeNotifySocket:
    """What systemd listens on: a datagram socket; each message comes back as a dict."""

    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        if abstract:
            name = f"dbackd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            # A short directory of its own: socket paths are limited to about 100 bytes.
            self.dir = tempfile.mkdtemp(prefix="dbackd-notify-")
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env_value = path

    async def recv(self) -> dict[str, str]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 4096), RECV_TIMEOUT)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    async def recv_until(self, predicate) -> dict[str, str]:
        """The first message that matches; others (periodic STATUS) are skipped."""
        while True:
            message = await self.recv()
            if predicate(message):
                return message

    def pending(self) -> Optional[bytes]:
        try:
            return self.sock.recv(4096)
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.sock.close()
        if hasattr(self, "dir"):
            for p in Path(self.dir).iterdir():
                p.unlink()
            os.rmdir(self.dir)


@pytest.fixture
def notify_socket():
    fake = FakeNotifySocket()
    yield fake
    fake.close()


async def started(env: dict, status_interval: float = 3600.0) -> tuple[Daemon, NotifyService]:
    daemon = Daemon(with_overrides(load_file(EXAMPLE), host="127.0.0.1", port=0))
    service = NotifyService(daemon.world, daemon.hub, daemon.moments, env=env, status_interval=status_interval)
    daemon.add_service(service)
    await daemon.start()
    return daemon, service


async def test_messages_in_order_across_start_reload_and_stop(notify_socket):
    daemon, _ = await started({"NOTIFY_SOCKET": notify_socket.env_value})
    try:
        assert await notify_socket.recv() == {"READY": "1", "STATUS": "serving 4 servers, 0 connections"}

        before = monotonic_usec()
        daemon.moments.reload_started()
        reloading = await notify_socket.recv()
        after = monotonic_usec()
        assert reloading["RELOADING"] == "1" and reloading["STATUS"] == "reloading the config"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        daemon.moments.reload_finished(True)
        assert await notify_socket.recv() == {"READY": "1", "STATUS": "serving 4 servers, 0 connections"}

        daemon.moments.reload_started()
        assert (await notify_socket.recv())["RELOADING"] == "1"
        daemon.moments.reload_finished(False, "servers[0].id: duplicate server id 'a'")
        failed = await notify_socket.recv()
        assert failed["READY"] == "1"
        assert failed["STATUS"].startswith("serving 4 servers, 0 connections; the last reload failed")
        assert "duplicate" not in failed["STATUS"]  # details stay in the log
    finally:
        await daemon.stop()
    assert await notify_socket.recv() == {"STOPPING": "1", "STATUS": "stopping: closing every socket"}
    assert notify_socket.pending() is None


async def test_status_follows_connections(notify_socket, open_client):
    daemon, _ = await started({"NOTIFY_SOCKET": notify_socket.env_value}, status_interval=0.02)
    try:
        assert (await notify_socket.recv())["READY"] == "1"
        client = await open_client(daemon)
        await notify_socket.recv_until(lambda m: m.get("STATUS") == "serving 4 servers, 1 connection")
        await client.ws.close()
        message = await notify_socket.recv_until(lambda m: "STATUS" in m)
        assert message == {"STATUS": "serving 4 servers, 0 connections"}
    finally:
        await daemon.stop()


async def test_watchdog_pings_at_half_the_interval(notify_socket):
    daemon, service = await started({"NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "100000",
                                     "WATCHDOG_PID": str(os.getpid())})
    assert service.watchdog == 0.05
    try:
        await notify_socket.recv_until(lambda m: "READY" in m)
        first = await notify_socket.recv_until(lambda m: "WATCHDOG" in m)
        t0 = time.monotonic()
        await notify_socket.recv_until(lambda m: "WATCHDOG" in m)
        assert first == {"WATCHDOG": "1"}
        assert time.monotonic() - t0 >= 0.04  # paced by the interval, not a busy loop
    finally:
        await daemon.stop()


def test_watchdog_interval_rules():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None  # another process's
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_socket_addresses():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@name") == b"\0name"
    assert socket_address(None) is None and socket_address("") is None
    assert socket_address("relative/path") is None


async def test_abstract_socket():
    fake = FakeNotifySocket(abstract=True)
    try:
        notifier = Notifier(socket_address(fake.env_value))
        assert notifier.send("READY=1", "STATUS=hi")
        assert await fake.recv() == {"READY": "1", "STATUS": "hi"}
        notifier.close()
    finally:
        fake.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier(socket_address(None))
    assert not notifier.enabled and notifier.send("READY=1") is False


async def test_no_notify_socket_means_no_tasks():
    daemon, service = await started({})
    try:
        assert service.running == 0 and service.watchdog is None
    finally:
        await daemon.stop()


def test_a_full_or_missing_socket_drops_without_blocking(notify_socket):
    notifier = Notifier(socket_address(notify_socket.env_value))
    t0 = time.monotonic()
    results = [notifier.send(f"STATUS={i}") for i in range(5000)]  # nobody reads: the queue fills
    assert results[0] is True and False in results
    assert time.monotonic() - t0 < 2.0
    gone = Notifier(socket_address(notify_socket.env_value + "-missing"))
    assert gone.send("READY=1") is False
    notifier.close()
    gone.close()


async def test_a_real_reload_is_announced(notify_socket, tmp_path):
    config = tmp_path / "dback.yaml"
    config.write_text('servers: [{snowflake: "1", id: a, name: A}]\n')
    daemon = Daemon(config, host="127.0.0.1", port=0, watch=False)
    daemon.add_service(NotifyService(daemon.world, daemon.hub, daemon.moments,
                                     env={"NOTIFY_SOCKET": notify_socket.env_value}, status_interval=3600))
    await daemon.start()
    try:
        assert (await notify_socket.recv())["READY"] == "1"
        config.write_text('servers: [{snowflake: "1", id: a, name: A}, {snowflake: "2", id: b, name: B}]\n')
        assert await daemon.reload() is True
        assert (await notify_socket.recv())["RELOADING"] == "1"
        assert await notify_socket.recv() == {"READY": "1", "STATUS": "serving 2 servers, 0 connections"}
        config.write_text("servers: oops\n")
        assert await daemon.reload() is False
        assert (await notify_socket.recv())["RELOADING"] == "1"
        assert "the last reload failed" in (await notify_socket.recv())["STATUS"]
    finally:
        await daemon.stop()
