"""Owned asyncio tasks: started by a part, cancelled and awaited by the same part when it stops.

The one place for "cancel these tasks and wait a bounded time for them", and for work
shared by callers who ask for the same thing at once (`Flights`). A task that
ignores cancellation is left behind after the timeout (and reported), never waited
for forever. Nothing here knows what the tasks do.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Coroutine, Hashable, Iterable, Optional

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


class Flights:
    """Single-flight work by key: a caller asking for a key whose work is running shares that task.

    Callers await the task through `asyncio.shield`, so one that gives up (its socket closed,
    its own deadline) leaves the work to the others. It holds only what is running: caching an
    answer is the caller's business, and a task started here must not raise (nobody may await it).
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task] = {}

    def __len__(self) -> int:
        return len(self._running)

    def get(self, key: Hashable) -> Optional[asyncio.Task]:
        return self._running.get(key)

    def start(self, key: Hashable, work: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self._running[key] = task
        task.add_done_callback(lambda t: self._running.pop(key, None) if self._running.get(key) is t else None)
        return task

    async def cancel(self) -> None:
        await cancel_and_wait(list(self._running.values()), None)
