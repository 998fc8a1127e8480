"""`workers: N`: N dbackd processes serving one port, supervised by one parent.

The parent serves nothing itself. It binds nothing either: each worker binds the same
address with SO_REUSEPORT, so the kernel spreads connections over them, and they share
the world through the cluster's Redis (the `cluster` block is required). The parent
starts the workers, starts again one that dies (with backoff), passes SIGHUP (reload) on
to every worker, stops them all on SIGTERM, and is the one process that talks to
systemd: READY=1 once every worker serves, STOPPING=1 when stopping. A worker tells the
parent it serves by one line on a pipe (`DBACKD_READY_FD`), and holds the read end of a
second pipe (`DBACKD_LIFELINE_FD`) whose write end only the parent has: when it reads end
of file the parent is gone (even killed with SIGKILL), and the worker stops instead of
serving on unsupervised. It decides nothing about what the workers serve.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Callable, Optional, Sequence

import structlog

from dbackd.core.backoff import Backoff
from dbackd.ops.notify import Notifier, monotonic_usec, socket_address

log = structlog.get_logger("dbackd.workers")

READY_FD = "DBACKD_READY_FD"
LIFELINE_FD = "DBACKD_LIFELINE_FD"
STOP_TIMEOUT = 15.0  # seconds the workers get to stop (they close their sockets) before they are killed
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


def free_port(host: str) -> int:
    """A port that is free now, for workers told to listen on port 0 (they must share one)."""
    with socket.create_server((host or "127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


class Worker:
    """One child process and what the parent knows of it."""

    def __init__(self, index: int, argv: list[str]):
        self.index = index
        self.argv = argv
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.ready = asyncio.Event()
        self.restarts = 0
        self.lifeline: Optional[int] = None  # the write end; closed only when this process ends

    async def spawn(self) -> None:
        read_end, write_end = os.pipe()
        life_read, life_write = os.pipe()
        env = {**os.environ, READY_FD: str(write_end), LIFELINE_FD: str(life_read)}
        env.pop("NOTIFY_SOCKET", None)  # only the parent speaks to systemd
        self.ready.clear()
        try:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, pass_fds=(write_end, life_read), env=env)
        finally:
            os.close(write_end)
            os.close(life_read)
        if self.lifeline is not None:
            os.close(self.lifeline)  # the previous process's, which has ended
        self.lifeline = life_write
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(read_end, "rb"))

        async def wait_ready() -> None:
            try:
                if (await reader.readline()).strip() == b"ready":
                    self.ready.set()
            finally:
                transport.close()

        loop.create_task(wait_ready())


class Supervisor:
    def __init__(self, count: int, base_argv: Sequence[str], host: str, port: int):
        self.count = count
        self.host, self.port = host, port
        self.notifier = Notifier(socket_address(os.environ.get("NOTIFY_SOCKET")))
        self.workers = [Worker(i, [*base_argv, "--worker-index", str(i), "--port", str(port)]) for i in range(count)]
        self._stopping = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for worker in self.workers:
            await worker.spawn()
        watchers = [asyncio.ensure_future(self._watch(w)) for w in self.workers]
        ready = asyncio.ensure_future(self._announce_ready())
        await stop.wait()
        self._stopping = True
        ready.cancel()
        self.notifier.send("STOPPING=1", "STATUS=stopping the workers")
        await self._stop_all()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, ready, return_exceptions=True)
        log.info("workers.stopped", workers=self.count)
        return 0

    async def _announce_ready(self) -> None:
        await asyncio.gather(*(w.ready.wait() for w in self.workers))
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("workers.started", workers=self.count, url=f"http://{host}:{self.port}/",
                 pids=[w.proc.pid for w in self.workers if w.proc])
        self.notifier.send("READY=1", f"STATUS=serving with {self.count} workers")

    async def _watch(self, worker: Worker) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self._stopping:
                return
            worker.restarts += 1
            log.error("workers.worker_died", worker=worker.index, code=code, restart_in=round(backoff.delay, 1))
            await asyncio.sleep(backoff.next())
            await worker.spawn()
            try:
                await asyncio.wait_for(worker.ready.wait(), 60)
                backoff.reset()
            except asyncio.TimeoutError:
                pass

    def reload(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading the workers")
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGHUP)
        self.notifier.send("READY=1", f"STATUS=serving with {self.count} workers")

    async def _stop_all(self) -> None:
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        if live:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live], timeout=STOP_TIMEOUT)
            for proc in live:
                if proc.returncode is None:
                    log.warning("workers.killed", pid=proc.pid)
                    proc.kill()
                    await proc.wait()


def tell_parent_ready() -> None:
    """In a worker: one line to the parent once the daemon serves."""
    fd = os.environ.get(READY_FD)
    if fd:
        try:
            os.write(int(fd), b"ready\n")
            os.close(int(fd))
        except OSError:
            pass


def watch_parent(on_gone: Callable[[], None]) -> None:
    """In a worker: call `on_gone` on the loop once the parent has ended (its lifeline pipe is at EOF)."""
    fd = os.environ.get(LIFELINE_FD)
    if not fd:
        return
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            if os.read(int(fd), 64):
                return  # the parent never writes; nothing to do but keep waiting
        except OSError:
            pass
        loop.remove_reader(int(fd))
        log.warning("workers.parent_gone")
        on_gone()

    loop.add_reader(int(fd), readable)


def worker_argv(argv: Sequence[str]) -> list[str]:
    """This command line for a worker: the same options, without --workers (the worker's own options follow)."""
    out: list[str] = [sys.executable, "-m", "dbackd"]
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        out.append(arg)
    return out
