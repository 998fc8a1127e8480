"""Long runs of work in slices: a yield to the event loop every so many items.

A reload, a big guild's snapshot or a refilter applies thousands of events; in one go they
would hold every socket, join and ping up for as long. Iterate with `sliced()` instead:
the loop gets a turn after every `per_slice` items, and other sources may apply their own
events in between (which is why the caller reads live state at each step).
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable, TypeVar

EVENTS_PER_SLICE = 500  # world events applied between two yields to the event loop

T = TypeVar("T")


async def sliced(items: Iterable[T], per_slice: int = EVENTS_PER_SLICE) -> AsyncIterator[T]:
    """Each item in turn, a yield to the loop after every `per_slice` of them (once each is done with)."""
    for i, item in enumerate(items, 1):
        yield item
        if i % per_slice == 0:
            await asyncio.sleep(0)
