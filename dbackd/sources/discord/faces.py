"""Members' avatars for the built-in page: fetched by the daemon from Discord's CDN, kept on disk.

The page asks the daemon (never Discord: its policy stays `img-src 'self'`, and viewers'
addresses never reach Discord) for `<mount>/faces/<guild>/<uid>.png`; this finds the
member's avatar path in the Discord source's mirror, answers from the disk cache while an
entry is younger than its TTL, and otherwise fetches it, at most `fetches_per_second` (a
request that would wait more than SLOT_WAIT_MAX for its turn, or whose fetch fails, gets no
face: the page draws a plain figure and asks again later). One
fetch per avatar at a time; the cache is trimmed, oldest first, to its size cap after each
write. Disk reads and writes run in a thread, off the loop. It decides nothing about who
may be seen: the caller asks only for members shown on a public server.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Optional

import aiohttp
import structlog

from dbackd.core.rates import Bucket
from dbackd.core.tasks import Flights
from dbackd.sources.discord.settings import FaceSettings

log = structlog.get_logger("dbackd.discord")

MAX_FACE_BYTES = 512 * 1024  # a 64 px avatar is a few KiB; anything far larger is not one
FETCH_TIMEOUT = 5.0
WAITING_MAX = 64  # requests waiting for a slot; past it a face is simply not drawn yet
SLOT_WAIT_MAX = 2.0  # seconds a request may wait for its turn; longer, and the page asks again later


class Faces:
    """The avatars cache; `lookup(guild, uid)` gives a member's CDN path (None: no face)."""

    def __init__(self, settings: Callable[[], Optional[FaceSettings]], lookup: Callable[[str, str], Optional[str]],
                 clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._lookup = lookup
        self._clock = clock
        self._bucket: Optional[Bucket] = None
        self._inflight = Flights()  # by CDN path: one fetch however many pages ask meanwhile
        self._waiting = 0
        self._session: Optional[aiohttp.ClientSession] = None
        self.fetched = 0
        self.failed = 0

    async def close(self) -> None:
        await self._inflight.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def face(self, guild: str, uid: str) -> Optional[bytes]:
        """The PNG of a member's avatar, or None (faces off, no avatar, fetching too fast, failed)."""
        settings = self._settings()
        path = self._lookup(guild, uid) if settings is not None and settings.enabled else None
        if settings is None or path is None:
            return None
        file = settings.cache_dir / (hashlib.sha256(path.encode()).hexdigest() + ".png")
        cached = await asyncio.to_thread(_read_fresh, file, settings.ttl)
        if cached is not None:
            return cached
        running = self._inflight.get(path) or self._inflight.start(path, self._fetch_and_store(settings, path, file))
        return await asyncio.shield(running)

    async def _fetch_and_store(self, settings: FaceSettings, path: str, file: Path) -> Optional[bytes]:
        body = await self._fetch(settings, path)
        if body is not None:
            await asyncio.to_thread(_store, file, body, settings.cache_bytes)  # logs, never raises, what fails
        return body

    async def _fetch(self, settings: FaceSettings, path: str) -> Optional[bytes]:
        if not await self._slot(settings):
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT))
        try:
            async with self._session.get(settings.cdn_base + path) as response:
                body = await response.content.read(MAX_FACE_BYTES + 1)
                ok = response.status == 200 and response.content_type == "image/png" and len(body) <= MAX_FACE_BYTES
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.failed += 1
            log.info("discord.face_failed", error=type(exc).__name__)
            return None
        if not ok:
            self.failed += 1
            log.info("discord.face_failed", status=response.status)
            return None
        self.fetched += 1
        return body

    async def _slot(self, settings: FaceSettings) -> bool:
        """Wait for a fetch slot of the rate, unless too many wait already."""
        if self._waiting >= WAITING_MAX:
            return False
        rate = max(settings.fetches_per_second, 0.01)
        burst = max(1.0, rate)
        if self._bucket is None:
            self._bucket = Bucket(burst, self._clock())
        self._waiting += 1
        try:
            while True:
                wait = self._bucket.take(self._clock(), rate, burst)
                if wait == 0.0:
                    return True
                if wait > SLOT_WAIT_MAX:
                    return False
                await asyncio.sleep(wait)
        finally:
            self._waiting -= 1


def _read_fresh(file: Path, ttl: float) -> Optional[bytes]:
    try:
        if time.time() - file.stat().st_mtime > ttl:
            return None
        return file.read_bytes()
    except OSError:
        return None


def _store(file: Path, body: bytes, cap: int) -> None:
    """Write one face, then trim the directory to `cap` bytes, oldest first."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        part = file.with_suffix(".part")
        part.write_bytes(body)
        os.replace(part, file)
        entries = []
        for f in file.parent.glob("*.png"):
            try:
                st = f.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, f))
        total = sum(size for _, size, _ in entries)
        for _, size, f in sorted(entries, key=lambda e: e[0]):
            if total <= cap:
                break
            try:
                f.unlink()
                total -= size
            except OSError:
                pass
    except OSError as exc:
        log.warning("discord.face_cache_failed", error=type(exc).__name__)
