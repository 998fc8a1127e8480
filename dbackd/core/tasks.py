"""Owned asyncio tasks: started by a part, cancelled and awaited by the same part when it stops.

The one place for "cancel these tasks and wait a bounded time for them". A task that
ignores cancellation is left behind after the timeout (and reported), never waited
for forever. Nothing here knows what the tasks do.
"""
from __future__ import annotations

import asyncio
from typing import Coroutine, Iterable, Optional

import structlog

log = structlog.get_logger("dbackd.tasks")

STOP_TIMEOUT = 5.0  # seconds a part's tasks get to end after they were cancelled


async def cancel_and_wait(tasks: Iterable[asyncio.Future], timeout: Optional[float] = STOP_TIMEOUT) -> int:
    """Cancel every task, then wait up to `timeout` for them to end; returns how many are still running."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return 0
    _, stuck = await asyncio.wait(pending, timeout=timeout)
    return len(stuck)


class TaskSet:
    """The background tasks of one part: `spawn` them, `cancel` them all when the part stops."""

    def __init__(self, owner: str):
        self.owner = owner
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine, name: Optional[str] = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name or f"dbackd.{self.owner}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel(self, timeout: Optional[float] = STOP_TIMEOUT) -> None:
        stuck = await cancel_and_wait(list(self._tasks), timeout)
        if stuck:
            log.warning("tasks.still_running", owner=self.owner, count=stuck)
