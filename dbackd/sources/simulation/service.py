"""The simulation as a daemon service: one owned task that moves the engine with a clock.

A source of world changes. It sleeps until the engine's next due step (or until a new
config wakes it: the engine follows `ConfigReplaced` itself), then advances the engine
to the clock's time. Large catch-ups (a fake clock jumping hours, a stalled loop) run in
batches with a yield between them, so the event loop is never held for long. The
service holds no rules and no state of its own beyond the engine.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterator, Optional

import structlog

from dbackd.core.events import ConfigReplaced, Event
from dbackd.core.tasks import TaskSet
from dbackd.core.world import World
from dbackd.sources.simulation.clock import Clock, SystemClock
from dbackd.sources.simulation.engine import Engine

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric  # loaded by the first scrape, not before

log = structlog.get_logger("dbackd.simulation")

BATCH = 2000  # steps between two yields to the event loop


class SimulationService:
    name = "simulation"  # a source (sources/base.py); its rules are each server's `simulation` key

    def __init__(self, world: World, clock: Optional[Clock] = None):
        self.world = world
        self.clock: Clock = clock or SystemClock()
        self.engine: Optional[Engine] = None
        self._origin = 0.0
        self._tasks = TaskSet("simulation")
        self._wake = asyncio.Event()
        self._processed = 0.0  # engine time the loop has reached
        self._progress = asyncio.Event()

    async def start(self) -> None:
        self._origin = self.clock.now()
        self.engine = Engine(self.world, epoch=self.clock.wall())
        self.world.subscribe(self._on_event)
        self._tasks.spawn(self._run())
        seeds = {r.id: r.seed for r in self.engine.runners.values()}
        same = set(seeds.values())
        log.info("simulation.started", servers=len(seeds),
                 **({"seed": same.pop()} if len(same) == 1 else {"seeds": seeds}))

    async def stop(self) -> None:
        await self._tasks.cancel()
        if self.engine is not None:
            self.world.unsubscribe(self._on_event)
            log.info("simulation.stopped", steps=self.engine.steps, failed_steps=self.engine.failures)
            self.engine.close()
            self.engine = None

    @property
    def running(self) -> bool:
        return self.engine is not None and len(self._tasks) > 0

    def health(self) -> Optional[dict[str, Any]]:
        return None  # nothing to report beyond the world itself

    def collect(self) -> Iterator[Metric]:
        return iter(())

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConfigReplaced):
            self._wake.set()  # the engine has taken the new rules: their first steps may be due sooner

    def elapsed(self) -> float:
        """The clock's time as engine time."""
        return self.clock.now() - self._origin

    async def caught_up(self) -> None:
        """Wait until the engine has run every step due by the clock's current time."""
        target = self.elapsed()
        while self._processed < target:
            if not self.running:
                raise RuntimeError("the simulation is not running")
            await self._progress.wait()

    async def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        while True:
            self._wake.clear()
            target = self.elapsed()
            if not engine.advance_to(target, max_steps=BATCH):
                await asyncio.sleep(0)  # let sockets breathe between batches
                continue
            self._processed = target
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
            due = engine.next_due()
            await self.clock.sleep_until(None if due is None else self._origin + due, self._wake)
