"""Asking Discord for a guild's whole member list (Request Guild Members, op 8) until the answer is complete.

discord.py asks once and waits `max(5, members / 10,000)` s; chunks still on their way
after that, and a `RATE_LIMITED` answer (Discord allows one request for all of a guild's
members per 30 s), leave it with part of the guild and no word of it. Here a request is
done only when every chunk of its answer is in: it is asked again once its chunks stop
coming, after the `retry_after` Discord gives, and requests on one connection are spaced
so they stay within the gateway's 120 commands a minute. It counts and schedules; what a
chunk holds is discord.py's business, and what a complete one means, gateway.py's.
"""
from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable, Optional

import structlog

log = structlog.get_logger("dbackd.discord")

# Discord's gateway takes 120 commands a minute on a connection; 100 of them may be member
# requests, the rest are left for heartbeats, identifying and resuming.
REQUEST_INTERVAL = 0.6  # seconds between two member requests on one connection
STALL = 15.0  # seconds without a chunk after which a request is taken as lost and asked again
RETRY_MAX = 60.0  # the longest wait between two requests for one guild
RETRY_MARGIN = 0.25  # seconds added to a RATE_LIMITED's retry_after: it is counted from Discord's clock

Send = Callable[[int, int, str], Awaitable[bool]]  # (guild id, shard id, nonce): sends op 8; False if it could not


class Request:
    """One op 8 for one guild and what has come of it."""

    def __init__(self, nonce: str):
        self.nonce = nonce
        self.indexes: set[int] = set()
        self.count: Optional[int] = None
        self.retry_after: Optional[float] = None
        self.changed = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.count is not None and len(self.indexes) >= self.count


class Pacer:
    """Spaces the requests sent on one connection."""

    def __init__(self, interval: float):
        self._interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = loop.time() + self._interval


class Chunker:
    """Every guild being chunked, by id; `chunk` returns once a request for it is answered in full."""

    def __init__(self, send: Send, *, interval: float = REQUEST_INTERVAL, stall: float = STALL):
        self._send = send
        self._interval = interval
        self._stall = stall
        self._pacers: dict[int, Pacer] = {}
        self._in_flight: dict[int, Request] = {}  # by guild id: the request in flight

    async def chunk(self, guild_id: int, shard_id: int, on_request: Callable[[str], None]) -> None:
        """Ask until one answer is complete. `on_request(nonce)` runs before each request is sent."""
        pacer = self._pacers.setdefault(shard_id, Pacer(self._interval))
        backoff = 1.0  # seconds before asking again after a lost answer, doubling
        try:
            while True:
                await pacer.turn()
                request = self._in_flight[guild_id] = Request(os.urandom(16).hex())
                on_request(request.nonce)
                sent = await self._send(guild_id, shard_id, request.nonce)
                outcome = await self._answer(request) if sent else "unsent"
                if outcome == "complete":
                    return
                if outcome == "rate_limited":
                    assert request.retry_after is not None
                    log.info("discord.chunks_rate_limited", guild=str(guild_id), retry_after=request.retry_after)
                    await asyncio.sleep(request.retry_after + RETRY_MARGIN)
                else:  # stalled, or the connection was going
                    log.warning("discord.chunks_stalled", guild=str(guild_id), got=len(request.indexes),
                                of=request.count, sent=sent, action="asking again")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
        finally:
            self._in_flight.pop(guild_id, None)

    async def _answer(self, request: Request) -> str:
        while True:
            request.changed.clear()
            if request.complete:
                return "complete"
            if request.retry_after is not None:
                return "rate_limited"
            try:
                await asyncio.wait_for(request.changed.wait(), self._stall)
            except asyncio.TimeoutError:
                return "stalled"

    def on_chunk(self, guild_id: int, nonce: Optional[str], index: int, count: int) -> None:
        request = self._in_flight.get(guild_id)
        if request is not None and request.nonce == nonce:
            request.indexes.add(index)
            request.count = count
            request.changed.set()

    def on_rate_limited(self, guild_id: int, nonce: Optional[str], retry_after: float) -> None:
        request = self._in_flight.get(guild_id)
        if request is not None and request.nonce == nonce:
            request.retry_after = max(0.0, retry_after)
            request.changed.set()
