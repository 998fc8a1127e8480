"""Producers run once: the live sources (sources/catalogue.py), on exactly one node.

Alone, this process is that node. In a cluster it is the node that holds the lease, a
Redis key set with a time to live and renewed three times per lease; when the leader
is gone, another node takes it within about one lease. A node that cannot renew (Redis
unreachable) stops its producers once the lease would have run out, so two nodes never
produce at once; the backplane fences what a producer publishes by the lease as well.
A new leader first catches up with the cluster's state, then starts the producers from
it. Nothing here changes the world; the producers do.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Optional

import structlog

from dbackd.core.lifecycle import Service
from dbackd.core.tasks import TaskSet
from dbackd.cluster.producing import PRODUCING

if TYPE_CHECKING:
    from dbackd.cluster.backplane import Backplane

log = structlog.get_logger("dbackd.cluster")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leadership:
    def __init__(self, producers: list[Service], backplane: Optional["Backplane"] = None):
        self.producers = producers
        self.backplane = backplane
        self.leading = False
        self.changes = 0  # times this node took or lost the lead
        self._tasks = TaskSet("leadership")
        self._renewed = 0.0

    async def start(self) -> None:
        if self.backplane is None:
            await self._lead()
        else:
            self._tasks.spawn(self._hold(), name="dbackd-lease")

    async def stop(self) -> None:
        await self._tasks.cancel()
        await self._follow("stopping")
        bp = self.backplane
        if bp is not None and bp.redis is not None and bp.up:
            from redis.exceptions import RedisError  # only a cluster has Redis

            try:
                await asyncio.wait_for(bp.redis.eval(_RELEASE, 1, bp.key("leader"), bp.node), bp.settings.timeout)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass  # it runs out by itself

    async def _lead(self) -> None:
        token = PRODUCING.set(True)  # the producers' tasks, made in start(), carry it
        try:
            for producer in self.producers:
                await producer.start()
        finally:
            PRODUCING.reset(token)
        self.leading = True

    async def _follow(self, reason: str) -> None:
        if not self.leading:
            return
        self.leading = False
        if self.backplane is not None:
            self.backplane.is_leader = False
        for producer in reversed(self.producers):
            try:
                await producer.stop()
            except Exception as exc:  # the others still stop
                log.error("cluster.producer_stop_failed", producer=type(producer).__name__, error=repr(exc))
        if self.backplane is not None:
            self.changes += 1
            log.info("cluster.follower", node=self.backplane.node, reason=reason)

    async def _hold(self) -> None:
        from redis.exceptions import RedisError  # only a cluster has Redis

        bp = self.backplane
        assert bp is not None
        lease = bp.settings.lease
        lease_ms = str(int(lease * 1000))
        while True:
            try:
                if bp.up and bp.redis is not None:
                    key = bp.key("leader")
                    if self.leading:
                        if await asyncio.wait_for(bp.redis.eval(_RENEW, 1, key, bp.node, lease_ms), bp.settings.timeout):
                            self._renewed = time.monotonic()
                        else:
                            await self._follow("the lease went to another node")
                    elif await asyncio.wait_for(bp.redis.set(key, bp.node, nx=True, px=int(lease * 1000)),
                                                bp.settings.timeout):
                        self._renewed = time.monotonic()
                        await self._won()
                elif self.leading and time.monotonic() - self._renewed > lease:
                    await self._follow("the lease could not be renewed")
            except (RedisError, OSError, asyncio.TimeoutError):
                if self.leading and time.monotonic() - self._renewed > lease:
                    await self._follow("the lease could not be renewed")
            await asyncio.sleep(lease / 3)

    async def _won(self) -> None:
        bp = self.backplane
        assert bp is not None
        await bp.current()
        bp.is_leader = True
        await bp.initialise()
        await self._lead()
        self.changes += 1
        log.info("cluster.leader", node=bp.node)
