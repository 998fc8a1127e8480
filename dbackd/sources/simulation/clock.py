"""Time for the simulation service: the system clock, or a manual one that tests move by hand.

A clock answers `now()` (monotonic seconds), `wall()` (Unix time now, for the activity
curve) and `sleep_until(deadline, wake)`, which returns at the deadline or as soon as
`wake` is set. The engine never reads a clock; only the service does.
"""
from __future__ import annotations

import asyncio
import time
from typing import Optional, Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep_until(self, deadline: Optional[float], wake: asyncio.Event) -> None: ...


class SystemClock:
    """Real time: monotonic for scheduling (immune to clock changes), Unix time for the curve."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: Optional[float], wake: asyncio.Event) -> None:
        if deadline is None:
            await wake.wait()
            return
        delay = deadline - self.now()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except asyncio.TimeoutError:
            pass


class ManualClock:
    """Time that moves only when told to: `advance(seconds)` wakes every sleeper."""

    def __init__(self, wall: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self._now = 0.0
        self._wall0 = wall
        self._wakers: set[asyncio.Event] = set()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall0 + self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds
        for wake in list(self._wakers):
            wake.set()

    async def sleep_until(self, deadline: Optional[float], wake: asyncio.Event) -> None:
        self._wakers.add(wake)
        try:
            while (deadline is None or self._now < deadline) and not wake.is_set():
                await wake.wait()
        finally:
            self._wakers.discard(wake)
