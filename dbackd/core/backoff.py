"""Retrying with backoff: each wait doubles up to a ceiling, with jitter so that many retrying
parties (workers, nodes, shards) spread out instead of trying again at the same moment.

Only the arithmetic: it reads no clock and sleeps nothing; the caller waits.
"""
from __future__ import annotations

import random

JITTER = 0.2  # each wait is the delay ±20 %


class Backoff:
    """The waits of one retry loop: `first`, then twice as long each time, at most `ceiling`."""

    __slots__ = ("first", "ceiling", "delay")

    def __init__(self, first: float, ceiling: float, delay: float | None = None):
        self.first = first
        self.ceiling = ceiling
        self.delay = first if delay is None else delay  # the next wait, before its jitter

    def next(self) -> float:
        """The wait before the next attempt; the one after it is twice as long (up to the ceiling)."""
        wait = self.delay * random.uniform(1 - JITTER, 1 + JITTER)
        self.delay = min(self.delay * 2, self.ceiling)
        return wait

    def reset(self) -> None:
        """It worked: the next failure is retried quickly again."""
        self.delay = self.first
