"""How often something may happen: token buckets, and counts that are written once per window.

The one place for rate arithmetic: the HTTP API's per-token limit, a socket's frames and
joins, a client address's login checks and the log lines of repeated bad input all use
these. Pure arithmetic on times the caller passes in (so tests pass a fake clock); it
decides nothing about what is limited or what happens past a limit.
"""
from __future__ import annotations

import time
from typing import Callable, Hashable, Optional


class Bucket:
    """One token bucket: `burst` at once, refilled at `per_second`. Starts full."""

    __slots__ = ("tokens", "when")

    def __init__(self, burst: float, now: float):
        self.tokens = float(burst)
        self.when = now

    def take(self, now: float, per_second: float, burst: float) -> float:
        """Take one; 0.0 if there was one, else the seconds until there is (nothing is taken)."""
        tokens = min(float(burst), self.tokens + (now - self.when) * per_second)
        self.when = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / per_second


class RateLimiter:
    """A token bucket per key (the HTTP API's, per token digest)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._buckets: dict[Hashable, Bucket] = {}

    def take(self, key: Hashable, per_second: float, burst: int) -> float:
        """Take one request's worth; 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(burst, now)
        return bucket.take(now, per_second, burst)

    def keep_only(self, keys: set) -> None:
        """Forget the buckets of keys that are gone (tokens removed from the config)."""
        for key in [k for k in self._buckets if k not in keys]:
            del self._buckets[key]


class Tally:
    """Counts a repeated happening and says when to write it: the first of each window,
    with how many there were since the last line written."""

    __slots__ = ("window", "count", "since")

    def __init__(self, window: float):
        self.window = window
        self.count = 0  # happenings not yet written
        self.since: Optional[float] = None  # when the window of the last written line began

    def note(self, now: float) -> int:
        """Count one; the number to write now (this one and those held back), or 0 to stay quiet."""
        self.count += 1
        if self.since is not None and now - self.since < self.window:
            return 0
        self.since = now
        count, self.count = self.count, 0
        return count

    def pending(self) -> int:
        """Happenings counted but not written (for a last line when the thing ends)."""
        count, self.count = self.count, 0
        return count


class Tallies:
    """A Tally per key (a client address and what happened), for at most `size` keys: the one
    least recently noted is forgotten first, so a stream of new addresses cannot grow it."""

    __slots__ = ("window", "size", "_tallies")

    def __init__(self, window: float, size: int = 4096):
        self.window = window
        self.size = size
        self._tallies: dict[Hashable, Tally] = {}

    def note(self, key: Hashable, now: float) -> int:
        """Count one for `key`; the number to write now, or 0 to stay quiet (see Tally.note)."""
        tally = self._tallies.pop(key, None)
        if tally is None:
            tally = Tally(self.window)
            if len(self._tallies) >= self.size:
                del self._tallies[next(iter(self._tallies))]
        self._tallies[key] = tally  # the most recent last
        return tally.note(now)
