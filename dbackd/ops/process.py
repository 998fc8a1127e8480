"""dbackd as the process: one daemon served until SIGTERM or Ctrl-C, reloaded on SIGHUP, announced to systemd.

The process, not an embedded Daemon, is what a service manager supervises, so only
here is sd_notify spoken. It runs the lifecycle and the signals; the daemon does the rest.
"""
from __future__ import annotations

import asyncio
import signal

import structlog

from dbackd.daemon import Daemon
from dbackd.ops.notify import NotifyService
from dbackd.ops.workers import tell_parent_ready, watch_parent
from dbackd.core.tasks import cancel_and_wait

log = structlog.get_logger("dbackd")

EXIT_OK, EXIT_FAILED = 0, 1
LEFTOVER_TIMEOUT = 2.0  # seconds a task left running after the daemon stopped gets to end


async def serve(daemon: Daemon) -> int:
    """Start the daemon, serve until a stop signal, stop it. Returns the exit code."""
    daemon.add_service(NotifyService(daemon.world, daemon.hub, daemon.moments))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reloader.request)
    watch_parent(stop.set)  # a worker of `workers: N` stops when its parent is gone
    listen = daemon.config.listen
    try:
        await daemon.start()
    except OSError as exc:
        log.error("daemon.listen_failed", host=listen.host, port=listen.port, error=str(exc))
        return EXIT_FAILED
    tell_parent_ready()  # a worker of `workers: N`: its parent tells systemd once all serve
    try:
        await stop.wait()
    finally:
        await daemon.stop()
        await _cancel_leftovers()
    return EXIT_OK


async def _cancel_leftovers() -> None:
    """Cancel any task still running after the daemon stopped, waiting a bounded time.

    asyncio.run would cancel them too, but would wait forever for one that ignores it.
    """
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    if tasks:
        stuck = await cancel_and_wait(tasks, LEFTOVER_TIMEOUT)
        log.warning("daemon.cancelled_tasks", cancelled=len(tasks), stuck=stuck)
