"""sd_notify: tell systemd how the daemon is doing, without a library.

A service manager that runs dbackd with `Type=notify` passes $NOTIFY_SOCKET, an
AF_UNIX datagram socket (a path, or an abstract name written with a leading '@').
The NotifyService sends `READY=1` once the daemon listens, `STATUS=` with servers and
connections (refreshed while it runs), `WATCHDOG=1` at half of $WATCHDOG_USEC,
`RELOADING=1` + `MONOTONIC_USEC=` and then `READY=1` around a config reload, and
`STOPPING=1` when shutdown begins. Every send is one non-blocking datagram: a full or
missing socket drops the message and is logged, never waited for. Without
$NOTIFY_SOCKET it sends nothing. It never changes the daemon's state.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Mapping, Optional, Union

import structlog

from dbackd.fanout.hub import Hub
from dbackd.core.lifecycle import Listener, Moments
from dbackd.core.tasks import TaskSet
from dbackd.core.world import World

log = structlog.get_logger("dbackd.notify")

STATUS_INTERVAL = 5.0  # seconds between STATUS= refreshes (sent only when the text changed)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: Optional[str]) -> Union[str, bytes, None]:
    """$NOTIFY_SOCKET as an address for sendto: a path, or b"\\0name" for '@name'; None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: Optional[int] = None) -> Optional[float]:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when the watchdog is not ours."""
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid if pid is not None else os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


class Notifier:
    """Sends notify datagrams to one address; does nothing when there is none."""

    def __init__(self, address: Union[str, bytes, None]):
        self.address = address
        self._sock: Optional[socket.socket] = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one datagram; True if it left, False if dropped."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:  # BlockingIOError included: a full queue drops the message
            if not self._failing:  # once per run of failures, so a dead socket cannot flood the log
                log.warning("notify.failed", error=str(exc), fields=[f.split("=", 1)[0] for f in fields])
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class NotifyService(Listener):
    """The process's voice to systemd: a service the command line adds to the daemon it runs."""

    def __init__(self, world: World, hub: Hub, moments: Moments, env: Optional[Mapping[str, str]] = None,
                 status_interval: float = STATUS_INTERVAL):
        env = os.environ if env is None else env
        self.world = world
        self.hub = hub
        self.moments = moments
        self.notifier = Notifier(socket_address(env.get("NOTIFY_SOCKET")))
        if env.get("NOTIFY_SOCKET") and not self.notifier.enabled:
            log.warning("notify.unsupported_socket", socket=env.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(env) if self.notifier.enabled else None
        self.status_interval = status_interval
        self._tasks = TaskSet("notify")
        self._last_status: Optional[str] = None
        self._reload_failed = False
        self._busy = False  # reloading or stopping: the periodic STATUS must not cover that up

    # -- service -------------------------------------------------------------------
    async def start(self) -> None:
        self.moments.listen(self)
        if not self.notifier.enabled:
            return
        self._tasks.spawn(self._refresh_status(), name="notify-status")
        if self.watchdog is not None:
            self._tasks.spawn(self._ping_watchdog(), name="notify-watchdog")
        log.debug("notify.enabled", watchdog_seconds=self.watchdog)

    @property
    def running(self) -> int:
        """How many of its tasks run (a status refresher, a watchdog pinger)."""
        return len(self._tasks)

    async def stop(self) -> None:
        await self._tasks.cancel()
        self.moments.unlisten(self)
        self.notifier.close()

    # -- moments -------------------------------------------------------------------
    def on_ready(self) -> None:
        self._send_with_status("READY=1")

    def on_stopping(self) -> None:
        self._busy = True
        self.notifier.send("STOPPING=1", "STATUS=stopping: closing every socket")

    def on_reload_started(self) -> None:
        self._busy = True
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading the config")

    def on_reload_finished(self, ok: bool, error: Optional[str]) -> None:
        # The error text stays in the log: STATUS is short and shown to anyone who runs systemctl status.
        self._busy = False
        self._reload_failed = not ok
        self._send_with_status("READY=1")

    # -- status ----------------------------------------------------------------------
    def status(self) -> str:
        servers = len(self.world.servers)
        connections = len(self.hub.connections)
        text = (f"serving {servers} server{'s' if servers != 1 else ''}, "
                f"{connections} connection{'s' if connections != 1 else ''}")
        if self._reload_failed:
            text += "; the last reload failed, the previous config stays (see the log)"
        return text

    def _send_with_status(self, *fields: str) -> None:
        status = self.status()
        if self.notifier.send(*fields, f"STATUS={status}"):
            self._last_status = status

    async def _refresh_status(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            if self._busy:
                continue
            status = self.status()
            if status != self._last_status and self.notifier.send(f"STATUS={status}"):
                self._last_status = status

    async def _ping_watchdog(self) -> None:
        # A ping proves the event loop runs: a blocked loop misses it and systemd restarts us.
        assert self.watchdog is not None
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog)
