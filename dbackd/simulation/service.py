"""The simulation as a daemon service: one owned task that moves the engine with a clock.

It sleeps until the engine's next due step (or until a reload wakes it), then advances
the engine to the clock's time. Large catch-ups (a fake clock jumping hours, a stalled
loop) run in batches with a yield between them, so the event loop is never held for
long. The service holds no rules and no state of its own beyond the engine.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

import structlog

from ..config import Config
from ..world import World
from .clock import Clock, SystemClock
from .engine import Engine

log = structlog.get_logger("dbackd.simulation")

BATCH = 2000  # steps between two yields to the event loop


class SimulationService:
    def __init__(self, world: World, clock: Optional[Clock] = None, seed: Any = None):
        self.world = world
        self.clock: Clock = clock or SystemClock()
        self.seed = seed
        self.engine: Optional[Engine] = None
        self._origin = 0.0
        self._task: Optional[asyncio.Task] = None
        self._wake = asyncio.Event()
        self._processed = 0.0  # engine time the loop has reached
        self._progress = asyncio.Event()

    async def start(self) -> None:
        self._origin = self.clock.now()
        self.engine = Engine(self.world, seed=self.seed, epoch=self.clock.wall())
        self._task = asyncio.create_task(self._run(), name="dbackd.simulation")
        seeds = {r.id: r.seed for r in self.engine.runners.values()}
        same = set(seeds.values())
        log.info("simulation.started", servers=len(seeds),
                 **({"seed": same.pop()} if len(same) == 1 else {"seeds": seeds}))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.engine is not None:
            log.info("simulation.stopped", steps=self.engine.steps, failed_steps=self.engine.failures)
            self.engine.close()
            self.engine = None

    def on_config(self, config: Config) -> None:
        """After the world applied a new config: continue under the new rules from now."""
        if self.engine is None:
            return
        self._advance(self.elapsed())  # steps already due happen under the rules they were due under
        self.engine.on_config(config)
        self._wake.set()

    def elapsed(self) -> float:
        """The clock's time as engine time."""
        return self.clock.now() - self._origin

    async def caught_up(self) -> None:
        """Wait until the engine has run every step due by the clock's current time."""
        target = self.elapsed()
        while self._processed < target:
            if self._task is None or self._task.done():
                raise RuntimeError("the simulation is not running")
            await self._progress.wait()

    def _advance(self, target: float) -> bool:
        """One batch of steps; True once the engine has reached `target`."""
        assert self.engine is not None
        try:
            return self.engine.advance_to(target, max_steps=BATCH)
        except Exception:  # a world subscriber failed on an event; the world has applied it
            log.exception("simulation.apply_failed")
            return False

    async def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        while True:
            self._wake.clear()
            target = self.elapsed()
            if not self._advance(target):
                await asyncio.sleep(0)  # let sockets breathe between batches
                continue
            self._processed = target
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
            due = engine.next_due()
            await self.clock.sleep_until(None if due is None else self._origin + due, self._wake)
