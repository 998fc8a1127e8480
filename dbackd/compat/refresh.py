"""Shared refreshes of a daemon's data providers: many askers, one refresh.

d-back asked its providers at every socket open and every join; the compatibility
layer does the same by refreshing the daemon's declaration then. When a thousand
sockets open at once they must not make a thousand refreshes: whoever asks says how
old a refresh may be (by when it started), and gets the one running or just done if it
is recent enough, else a new one, one at a time. The refresh runs in a task of its own
that askers only wait for, so an asker that gives up (its socket went away, its hook
timed out) never cancels it for the others. The task is owned by the caller's TaskSet
and cancelled with it. Nothing here knows what a refresh does.
"""
from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable, Optional

import structlog

from dbackd.core.tasks import TaskSet

log = structlog.get_logger("dbackd.compat")


class Refresher:
    def __init__(self, refresh: Callable[[], Awaitable[bool]], tasks: TaskSet):
        self._refresh = refresh
        self._tasks = tasks
        self._task: Optional[asyncio.Task] = None  # the running refresh, or the last one
        self._started = -math.inf  # loop time at which it started
        self.count = 0  # refreshes started

    async def since(self, moment: float) -> bool:
        """Wait for a refresh that started at `moment` (loop time) or later, starting one if
        there is none; its result (False: the providers' answer was refused)."""
        while True:
            task = self._task
            if task is not None and self._started >= moment:
                await asyncio.wait({task})  # waiting never cancels it: an asker that gives up only stops waiting
                return not task.cancelled() and task.result()
            if task is not None and not task.done():
                # Too old for this asker: let it end, then one newer refresh serves everyone waiting.
                await asyncio.wait({task})
                continue
            self._started = asyncio.get_running_loop().time()
            self.count += 1
            self._task = self._tasks.spawn(self._run(), name="dbackd.compat.refresh")

    async def recent(self, window: float) -> bool:
        """A refresh that started at most `window` seconds ago."""
        return await self.since(asyncio.get_running_loop().time() - window)

    async def _run(self) -> bool:
        try:
            return await self._refresh()
        except Exception as exc:  # the providers' own failures are handled by the refresh; this is anything else
            log.error("compat.refresh_failed", error=repr(exc), exc_info=exc)
            return False
