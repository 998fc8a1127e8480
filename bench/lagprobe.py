"""A loop-lag probe: how long the event loop went without running anything else.

A callback asks to run every `interval` seconds; each time it runs, the delay past its
due time is how long the loop was held by other work (a stall). Reports the longest
stall and the p99. On a shared machine a stall may be the process waiting for a CPU
rather than the loop being held by its own work: `cpu_max_ms` is the most CPU time the
loop's thread used between two ticks, the part of a stall that was the program's own.
Import it from a benchmark; it measures and changes nothing.
"""
from __future__ import annotations

import asyncio
import time
from typing import Optional


class LagProbe:
    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.lags: list[float] = []
        self.cpu: list[float] = []
        self._handle: Optional[asyncio.TimerHandle] = None
        self._due = 0.0
        self._cpu = 0.0

    def start(self) -> "LagProbe":
        self.lags.clear()
        self.cpu.clear()
        loop = asyncio.get_running_loop()
        self._due = time.perf_counter() + self.interval
        self._cpu = time.thread_time()
        self._handle = loop.call_later(self.interval, self._tick)
        return self

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.lags.append(max(0.0, now - self._due))
        self.cpu.append(cpu - self._cpu)
        self._cpu = cpu
        self._due = now + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> dict:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        lags = sorted(self.lags)
        if not lags:
            return {"max_ms": 0.0, "p99_ms": 0.0, "cpu_max_ms": 0.0, "samples": 0}
        return {"max_ms": round(lags[-1] * 1000, 1), "p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1),
                "cpu_max_ms": round(max(self.cpu) * 1000, 1), "samples": len(lags)}
