"""The heartbeat: one timer for every socket, pinging through the hub and closing the silent.

A service whose one owned task calls `hub.heartbeat()` every `limits.heartbeat` seconds
(read each time, so a reload changes it). One timer for all sockets instead of
aiohttp's one per socket saves about 1 KiB per connection. It decides nothing itself.
"""
from __future__ import annotations

import asyncio

from dbackd.fanout.hub import Hub
from dbackd.core.tasks import TaskSet


class Heartbeat:
    def __init__(self, hub: Hub):
        self.hub = hub
        self._tasks = TaskSet("heartbeat")

    async def start(self) -> None:
        self._tasks.spawn(self._run())

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = self.hub.limits.heartbeat
            await asyncio.sleep(interval or 1.0)
            if interval:
                self.hub.heartbeat(loop.time(), interval)
